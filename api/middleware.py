"""ASGI middleware: request body size limit (413 before the body is parsed)."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body


class BodySizeLimit:
    """Reject bodies above ``max_bytes`` by Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, "bad_request", "Invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await self._reject_too_large(send)
                    return

        received = 0

        async def limited_receive() -> Message:
            # A chunked body has no Content-Length: count as it streams. FastAPI
            # passes an HTTPException raised while reading the body through to
            # the error handlers, which render the usual JSON error.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"Request body exceeds {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject_too_large(self, send: Send) -> None:
        await self._reject(
            send,
            413,
            "payload_too_large",
            f"Request body exceeds {self.max_bytes} bytes",
            {"limit": self.max_bytes},
        )

    @staticmethod
    async def _reject(send: Send, status: int, code: str, message: str, details: object = None) -> None:
        body = json.dumps(error_body(code, message, details)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
