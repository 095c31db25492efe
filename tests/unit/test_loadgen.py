"""The benchmarks' load client: whole requests out, whole responses read, connections kept."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench import loadgen
from bench.loadgen import LoadClient


class FixedServer:
    """Answers every request with ``status`` and a JSON echo of what it read; counts connections."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.connections = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while head := await _read_head(reader):
            lines = head.split(b"\r\n")
            headers = dict(line.split(b": ", 1) for line in lines[1:] if line)
            body = await reader.readexactly(int(headers.get(b"Content-Length", b"0")))
            self.requests.append((lines[0], headers, body))
            answer = json.dumps({"read": len(body)}).encode()
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (self.status, len(answer), answer)
            )
        writer.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""


async def serving(status: int) -> tuple[FixedServer, asyncio.Server, str]:
    fixed = FixedServer(status)
    server = await asyncio.start_server(fixed.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return fixed, server, f"http://127.0.0.1:{port}"


async def test_requests_carry_body_and_headers_and_reuse_one_connection() -> None:
    fixed, server, url = await serving(202)
    client = LoadClient(url, {"Authorization": "Bearer k"}, connections=4)
    body: dict[str, Any] = {"text": "é" * 100, "n": 1}
    try:
        statuses = [await client.request("POST", "/api/v1/traces", body) for _ in range(5)]
        assert statuses == [202] * 5
        assert await client.request("GET", "/health") == 202
        # One after the other: the response was read whole, so its connection served the next.
        assert fixed.connections == 1
        line, headers, sent = fixed.requests[0]
        assert line == b"POST /api/v1/traces HTTP/1.1"
        assert headers[b"Authorization"] == b"Bearer k"
        assert headers[b"Content-Type"] == b"application/json"
        assert json.loads(sent) == body
        assert fixed.requests[-1][0] == b"GET /health HTTP/1.1" and fixed.requests[-1][2] == b""
    finally:
        await client.aclose()
        server.close()


async def test_concurrent_requests_open_at_most_the_pool_and_an_idle_one_is_reopened(
    monkeypatch: Any,
) -> None:
    fixed, server, url = await serving(404)
    client = LoadClient(url, {}, connections=3)
    try:
        statuses = await asyncio.gather(*(client.request("GET", "/x") for _ in range(12)))
        assert statuses == [404] * 12
        assert fixed.connections == 3
        monkeypatch.setattr(loadgen, "IDLE_SECONDS", 0.0)
        await asyncio.sleep(0.01)
        assert await client.request("GET", "/x") == 404
        assert fixed.connections == 4
    finally:
        await client.aclose()
        server.close()
