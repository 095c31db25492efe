"""A load generator's HTTP/1.1 client: keep-alive connections, JSON bodies, status codes.

The benchmarks run their clients on the same two cores as the platform, so
what the client spends is taken from the servers it measures and added to
each latency it reports. httpx costs 1.5–1.8 ms of CPU per request here;
this client, which only writes a request and reads a ``Content-Length``
response, 0.4 ms (most of it encoding the JSON body). It is for loopback
benchmarks against our own API, not a general client: no TLS, redirects or
chunked responses.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

# Reopen a connection idle for longer: uvicorn closes its side after 5 s,
# and a request written to a closing connection is lost.
IDLE_SECONDS = 4.0

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter, float] | None


class LoadClient:
    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        fixed = {"Host": f"{self.host}:{self.port}", **headers}
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode()
        # Most recently used first, so that the connections in use stay warm.
        self._pool: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        for _ in range(connections):
            self._pool.put_nowait(None)

    async def request(self, method: str, path: str, body: Any = None) -> int:
        """Send one request on a free connection (waiting for one); the response's status."""
        connection = await self._pool.get()
        try:
            if connection is None or time.monotonic() - connection[2] > IDLE_SECONDS:
                if connection is not None:
                    connection[1].close()
                connection = (*await asyncio.open_connection(self.host, self.port), 0.0)
            reader, writer, _ = connection
            writer.write(self._encode(method, path, body))
            status = await self._read_response(reader)
        except BaseException:
            if connection is not None:
                connection[1].close()
            self._pool.put_nowait(None)
            raise
        self._pool.put_nowait((reader, writer, time.monotonic()))
        return status

    def _encode(self, method: str, path: str, body: Any) -> bytes:
        payload = b"" if body is None else json.dumps(body).encode()
        content_type = b"" if body is None else b"Content-Type: application/json\r\n"
        start = f"{method} {path} HTTP/1.1\r\n".encode()
        return b"%s%s%sContent-Length: %d\r\n\r\n%s" % (
            start,
            self._headers,
            content_type,
            len(payload),
            payload,
        )

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("chunked responses are not supported")
        await reader.readexactly(length)
        return status

    async def aclose(self) -> None:
        while not self._pool.empty():
            connection = self._pool.get_nowait()
            if connection is not None:
                connection[1].close()
