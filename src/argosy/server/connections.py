"""HTTP/1.1 connections with a deadline for a request's headers.

uvicorn closes a keep-alive connection that stays idle after a response, but it waits forever
for the headers of a request that has begun — or for the first request of a new connection —
so a client sending its headers a byte at a time could hold connections open at no cost.
:func:`protocol` returns uvicorn's h11 protocol with one addition: from the moment a
connection opens, or data of a new request arrives, the request's headers must be complete
within ``seconds``; otherwise the server answers ``408`` and closes the connection. (The
body's deadline is kept by admission, :mod:`argosy.server.admission`.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({
        "type": "about:blank", "title": "Request Timeout", "status": 408,
        "detail": f"the request's headers did not arrive within {seconds:g} s",
        "code": "request_timeout",
    }).encode()  # fmt: skip
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing connections whose request headers take over ``seconds``."""

    class HeaderDeadlineProtocol(H11Protocol):
        header_timeout = seconds
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def data_received(self, data: bytes) -> None:
            waiting = self.conn.their_state is h11.IDLE
            if waiting:
                self._arm()  # a new request has begun: its headers are now due
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in

        def _expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a response is still being sent (pipelined requests): not idle
            self.transport.write(_timeout_response(self.header_timeout))
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # the keep-alive timeout now guards the idle connection; the header deadline
            # starts again with the next request's first bytes (now, if some are buffered)
            self._disarm()
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self._arm()

    return HeaderDeadlineProtocol
