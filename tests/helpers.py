"""Test helpers that act like an API user."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn

from api.app import create_app
from core.settings import Settings

# An evaluation awaiting review has its automated verdict: final until an expert labels it.
FINAL = {"completed", "failed"}
EVALUATED = FINAL | {"awaiting_review"}


def with_own_queues(settings: Settings, name: str, **updates: Any) -> Settings:
    """``settings`` with task queues no other test's workers poll, plus ``updates``."""
    suffix = uuid.uuid4().hex[:8]
    return settings.model_copy(
        update={
            "task_queue": f"aegis-{name}-{suffix}",
            "judge_task_queue": f"aegis-{name}-judge-{suffix}",
            "training_task_queue": f"aegis-{name}-training-{suffix}",
            **updates,
        }
    )


def settled_automatically(evaluation: dict[str, Any]) -> bool:
    """Completed, or waiting only because the pack audits a random sample of
    traces (a few percent in the shipped high-risk packs, by trace id)."""
    if evaluation["status"] == "completed":
        return True
    review = evaluation.get("review") or {}
    return evaluation["status"] == "awaiting_review" and review.get("reason") == "audit_sample"


@dataclass
class OrgClient:
    api: httpx.AsyncClient
    organization_id: str
    api_key: str

    @classmethod
    async def create(cls, api: httpx.AsyncClient, name: str) -> OrgClient:
        response = await api.post(
            "/api/v1/organizations", json={"name": name, "email": f"{name}@example.com"}
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return cls(api, body["organization_id"], body["api_key"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.api.get(path, headers=self.headers, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.api.post(path, json=json, headers=self.headers, **kwargs)

    async def put(self, path: str, json: Any) -> httpx.Response:
        return await self.api.put(path, json=json, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.api.delete(path, headers=self.headers)

    async def submit(self, **fields: Any) -> str:
        """Submit a trace and wait until its workflow has been started (by the API's dispatcher)."""
        body = {"model": "gpt-4", "input": "What is 2+2?", "output": "4", "domain": "generic", **fields}
        response = await self.post("/api/v1/traces", json=body)
        assert response.status_code in (200, 202), response.text
        trace_id = str(response.json()["trace_id"])
        deadline = time.monotonic() + 10.0
        while (await self.get(f"/api/v1/traces/{trace_id}")).json()["status"] == "pending_dispatch":
            assert time.monotonic() < deadline, f"trace {trace_id} not dispatched after 10s"
            await asyncio.sleep(0.02)
        return trace_id

    async def wait_for_evaluation(self, trace_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = await self.get(f"/api/v1/evaluations/{trace_id}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in EVALUATED:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"evaluation of {trace_id} not final after {timeout}s: {body['status']}")
            await asyncio.sleep(0.1)


# What a RecordingServer answers: status, headers, body.
Answer = tuple[int, dict[str, str], bytes]


class RecordingServer:
    """An HTTP server on loopback that records every POST (path, headers, raw
    body, arrival time) and answers it with ``answer(path, body)``."""

    def __init__(self, answer: Callable[[str, bytes], Answer]) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.monotonic()}
                )
                status, headers, payload = answer(self.path, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class LiveApi:
    """``aegis api`` as a real HTTP server: uvicorn in a thread with its own loop
    and its own database and Temporal connections, as a deployment runs it."""

    def __init__(self, settings: Settings) -> None:
        sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings=settings), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
