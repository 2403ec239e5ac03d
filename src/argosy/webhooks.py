"""Signed webhooks, both ways: what Argosy sends (a model promoted, for an external prediction
platform) and what it accepts (a webhook trigger).

A request is signed with a shared secret over its timestamp and body::

    X-Argosy-Timestamp: 1764892800
    X-Argosy-Delivery:  01J...                 (unique per delivery: a replay is refused)
    X-Argosy-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<delivery>.<body>")>

A receiver checks the signature in constant time, refuses a timestamp more than
:data:`TOLERANCE_S` seconds away from its clock, and acts on a delivery id at most once.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from argosy.errors import UsageError

TOLERANCE_S = 300
SIGNATURE = "X-Argosy-Signature"
TIMESTAMP = "X-Argosy-Timestamp"
DELIVERY = "X-Argosy-Delivery"


def signature(secret: str, timestamp: str, delivery: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.{delivery}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign(secret: str, body: bytes, delivery: str, now: float | None = None) -> dict[str, str]:
    """The headers of a signed delivery of ``body``."""
    stamp = str(int(time.time() if now is None else now))
    return {
        TIMESTAMP: stamp,
        DELIVERY: delivery,
        SIGNATURE: signature(secret, stamp, delivery, body),
        "Content-Type": "application/json",
    }


class SignatureError(UsageError):
    """A webhook whose signature, timestamp or delivery id does not hold."""


def verify(
    secret: str,
    body: bytes,
    headers: dict[str, str],
    now: float | None = None,
    tolerance: float = TOLERANCE_S,
) -> str:
    """The delivery id of a correctly signed, fresh request (``SignatureError`` otherwise).
    ``headers``: lower-case names."""
    stamp = headers.get(TIMESTAMP.lower(), "")
    delivery = headers.get(DELIVERY.lower(), "")
    given = headers.get(SIGNATURE.lower(), "")
    if not stamp.isdigit() or not delivery or not given:
        raise SignatureError(
            f"a webhook needs the headers {TIMESTAMP}, {DELIVERY} and {SIGNATURE}",
            code="webhook_unsigned",
        )
    if len(delivery) > 128:
        raise SignatureError("the delivery id is longer than 128 characters", code="webhook_bad")
    expected = signature(secret, stamp, delivery, body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureError(
            "the webhook's signature does not match its body and the trigger's secret",
            code="webhook_bad_signature",
        )
    moment = time.time() if now is None else now
    if abs(moment - int(stamp)) > tolerance:
        raise SignatureError(
            f"the webhook's timestamp is more than {int(tolerance)} s from the server's clock "
            "(a replay, or a sender's clock that is wrong)",
            code="webhook_stale",
        )
    return delivery
