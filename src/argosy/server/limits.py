"""Request limits: body size (413) and a per-principal rate (429), before any route runs.

**Size.** A body declared (``Content-Length``) or streamed beyond the limit is refused with a
``413`` problem: ``max_json_bytes`` (10 MiB) for JSON, SCIM and form bodies,
``max_request_bytes`` (1 GiB) for everything else (blob uploads). A streamed body is counted
as it arrives, so a chunked upload cannot get around the limit.

**Rate.** A token bucket per principal, in this process's memory: ``rate_limit_per_minute``
requests fill the bucket, which refills continuously; an empty bucket answers ``429`` with
``Retry-After``. The principal is told apart by its credential (a hash of the
``Authorization`` header or the session cookie), else by the client address. Health probes
are never limited. With several server instances each keeps its own buckets.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from argosy.server.problems import problem_response
from argosy.units import format_bytes

JSON_TYPES = ("application/json", "application/scim+json", "application/x-www-form-urlencoded",
              "multipart/form-data", "application/merge-patch+json")  # fmt: skip
EXEMPT = frozenset({"/healthz", "/readyz", "/livez"})
MAX_BUCKETS = 10_000


def _size(n: int) -> str:
    return format_bytes(n)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class SizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_json_bytes

    def limit_for(self, scope: Scope) -> int:
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if ctype in JSON_TYPES or ctype.endswith("+json"):
            return min(self.max_json_bytes, self.max_bytes)
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            response = problem_response(
                413, f"the request body is {_size(int(declared))}, more than the {_size(limit)} "
                "this server accepts for it; send less", code="request_too_large",
                instance=str(scope.get("path", "")), headers={"Connection": "close"},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # the app sees a disconnected client; the 413 is answered below
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app answers to the cut body, the client gets the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            response = problem_response(
                413, f"the request body is larger than the {_size(limit)} this server accepts "
                "for it; send less", code="request_too_large", instance=str(scope.get("path", "")),
                headers={"Connection": "close"},
            )  # fmt: skip
            await response(scope, receive, send)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per key: ``per_minute`` capacity, refilled at ``per_minute / 60`` per s."""

    def __init__(self, per_minute: int, clock: object = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if a request under ``key`` may proceed now, else the seconds until it may."""
        now: float = self._clock()  # type: ignore[operator]
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


def principal_key(scope: Scope) -> str:
    """Who is asking, as far as the request says before authentication: its credential's hash,
    else its client address."""
    credential = _header(scope, b"authorization")
    if credential is None:
        cookies = _header(scope, b"cookie") or ""
        credential = next((c.strip() for c in cookies.split(";")
                           if c.strip().startswith("argosy_session=")), None)  # fmt: skip
    if credential:
        return "cred:" + hashlib.sha256(credential.encode()).hexdigest()
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(self, app: ASGIApp, *, per_minute: int) -> None:
        self.app = app
        self.limiter = RateLimiter(per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(principal_key(scope))
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            response = problem_response(
                429, f"too many requests: at most {int(self.limiter.capacity)} a minute; retry "
                f"in {seconds} s", code="rate_limited", instance=str(scope.get("path", "")),
                headers={"Retry-After": str(seconds)},
            )  # fmt: skip
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI, *, max_bytes: int, max_json_bytes: int, per_minute: int) -> None:
    """Add the size limit and (``per_minute`` > 0) the rate limit, outermost: a refused request
    costs no database work."""
    app.add_middleware(SizeLimit, max_bytes=max_bytes, max_json_bytes=max_json_bytes)
    if per_minute > 0:
        app.add_middleware(RateLimit, per_minute=per_minute)
