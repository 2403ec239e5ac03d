"""The rules a request is held to before a route sees it: what body a route accepts, how deep
its JSON may nest, how fast a principal may call, and who the client is behind a proxy.

The middleware that applies them is :mod:`argosy.server.admission`; this module holds the rules
as data and pure functions, so they are tested without a server.

**Bodies** (:class:`BodyPolicy`). Each route's policy follows from the route itself, never from
the request's headers: a route that streams an upload (it depends on ``upload_body``) accepts
``application/octet-stream`` up to ``max_request_bytes``; a route with a JSON body model
accepts JSON (``application/json`` or ``*/*+json``, or no ``Content-Type``) up to
``max_json_bytes``, nested at most ``max_json_depth`` deep; every other route accepts no body
beyond :data:`NO_BODY_BYTES`. A route declares anything else with :func:`accepts` (SCIM's
media types, a smaller limit, or a webhook's ``signed`` body: one authenticated by a signature
over its bytes, read before authentication but never beyond :data:`SIGNED_BODY_BYTES`).

**Rate.** :class:`RateLimiter` keeps a token bucket per key in this process's memory:
``per_minute`` requests fill it, refilled continuously. The key is the authenticated
principal (``p:<kind>:<subject>``), or the client address (``a:<address>``) for anonymous and
failed requests — never a raw header, so spelling a credential differently or sending junk ones
gets no new bucket.

**Client address** (:func:`client_address`): the peer of the connection, unless the peer is
one of ``trusted_proxies``; then the right-most address of ``X-Forwarded-For`` that is not a
trusted proxy itself.
"""

from __future__ import annotations

import ipaddress
import itertools
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from starlette.types import Scope

BodyKind = Literal["none", "json", "form", "upload", "signed"]
NO_BODY_BYTES = 64 * 1024  # what a route without a body may be sent (it is never read)
SIGNED_BODY_BYTES = 64 * 1024  # read before authentication: at most this, whatever the route says
BODY_ATTRIBUTE = "__argosy_body__"
JSON_TYPES = ("", "application/json", "+json")  # "": no Content-Type; "+json": any */*+json
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
UPLOAD_TYPES = ("", "application/octet-stream")
MAX_BUCKETS = 10_000

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BodyPolicy:
    """What body one route accepts: its kind, its size limit and its media types."""

    kind: BodyKind
    max_bytes: int
    media_types: tuple[str, ...] = ()

    def accepts_type(self, content_type: str | None) -> bool:
        """Whether a request ``Content-Type`` (None: absent) is one this route reads."""
        media = (content_type or "").split(";")[0].strip().lower()
        for allowed in self.media_types:
            if media == allowed or (allowed.startswith("+") and media.endswith(allowed)):
                return True
        return False


def accepts(
    kind: BodyKind, *, max_bytes: int | None = None, media_types: Sequence[str] | None = None
) -> Callable[[F], F]:
    """Declare the body a route's endpoint accepts (put it under the route decorator)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, BODY_ATTRIBUTE, (kind, max_bytes, tuple(media_types or ())))
        return endpoint

    return mark


def body_policy(
    declared: tuple[BodyKind, int | None, tuple[str, ...]] | None,
    derived: BodyKind,
    *,
    max_request_bytes: int,
    max_json_bytes: int,
) -> BodyPolicy:
    """The policy of a route: what it declared (:func:`accepts`), else what its signature says
    (``derived``), with the server's limits filled in."""
    kind, max_bytes, media = declared or (derived, None, ())
    defaults: dict[str, tuple[int, tuple[str, ...]]] = {
        "none": (NO_BODY_BYTES, ()),
        "json": (min(max_json_bytes, max_request_bytes), JSON_TYPES),
        "form": (min(max_json_bytes, max_request_bytes), FORM_TYPES),
        "upload": (max_request_bytes, UPLOAD_TYPES),
        "signed": (SIGNED_BODY_BYTES, ()),
    }
    default_bytes, default_media = defaults[kind]
    limit = default_bytes if max_bytes is None else max_bytes
    if kind == "signed":
        limit = min(limit, SIGNED_BODY_BYTES)
    return BodyPolicy(kind, limit, media or default_media)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_over(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests arrays/objects more than ``limit`` deep.

    Linear, without recursion and without a Python loop per character (the strings are cut
    out, the brackets kept and summed by C iterators); brackets inside strings do not count.
    Text that is not JSON is left to the parser."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(_OPEN_CLOSE, _NOT_BRACKETS)
    # an opening bracket is 2 and a closing one 0: after i+1 brackets the depth is sum - (i+1)
    depths = map(operator.sub, itertools.accumulate(brackets), itertools.count(1))
    return max(depths, default=0) > limit


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per key: ``per_minute`` capacity, refilled at ``per_minute / 60`` per s."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if a request under ``key`` may proceed now, else the seconds until it may."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._evict(now)
                bucket = self._buckets[key] = _Bucket(self.capacity, now)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        """Forget buckets that are full again (their owners are idle), else the oldest half."""
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.capacity]  # fmt: skip
        if not full:
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            full = by_age[: len(by_age) // 2]
        for key in full:
            del self._buckets[key]


def rate_key(principal: Any, address: str) -> str:
    """The bucket of a request: its authenticated principal, else its client address."""
    kind = getattr(principal, "kind", "anonymous")
    if principal is None or kind == "anonymous":
        return f"a:{address}"
    return f"p:{kind}:{principal.subject}"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``trusted_proxies`` as networks (an address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) in an ASGI scope."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def client_address(scope: Scope, trusted: Sequence[Network] = ()) -> str:
    """Who sent the request: the connection's peer, or — behind a trusted proxy — the right-most
    ``X-Forwarded-For`` address that is not a trusted proxy."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    forwarded = ",".join(
        bytes(v).decode("latin-1")
        for k, v in scope.get("headers", [])
        if k.lower() == b"x-forwarded-for"
    )
    found = peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage from beyond the trusted hops: stop at the last trusted one
        found = hop
        if not _trusted(hop, trusted):
            break
    return found
