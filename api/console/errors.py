"""Errors on console pages as pages: the API's JSON errors become the console's error page."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console.render import SECURITY_HEADERS, error_page


class ConsoleErrorPages:
    """Pure ASGI middleware: a JSON error answered under /console (a bad query
    value, an unknown page, a value PostgreSQL refused) is sent as the
    console's error page with the same status. Other paths pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/console"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def intercept(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(
                    b"application/json"
                ):
                    start = message
                    return
            elif start is not None:
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    await _send_page(send, start["status"], _message_of(bytes(body)))
                return
            await send(message)

        await self.app(scope, receive, intercept)


def _message_of(body: bytes) -> str:
    try:
        error: Any = json.loads(body)["error"]
        return str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "Something went wrong."


async def _send_page(send: Send, status: int, message: str) -> None:
    page = error_page(message).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(page)).encode()),
                *((name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": page})
