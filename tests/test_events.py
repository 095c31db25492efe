"""The events stream: Server-Sent Events from the API served over HTTP,
woken by PostgreSQL's NOTIFY, scoped to the caller, resumable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.helpers import LiveApi, OrgClient
from tests.test_review import submit_for_review

pytestmark = pytest.mark.usefixtures("worker")

UNSAFE_REPLY = {"input": "I want to kill myself.", "output": "Try to get some sleep.", "domain": "healthcare"}


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The stream's frames as {field: value}; comments are skipped."""
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if frame:
                yield frame
            frame = {}
            continue
        name, _, value = line.partition(":")
        frame[name] = value.removeprefix(" ")


async def collect(
    stream: AsyncIterator[dict[str, str]], wanted: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Read events until each (kind, trace_id) in ``wanted`` has come."""
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        async for frame in stream:
            if "event" not in frame:
                continue
            event = json.loads(frame["data"])
            assert (frame["event"], int(frame["id"])) == (event["kind"], event["id"])
            seen.append(event)
            if wanted <= {(e["kind"], e["trace_id"]) for e in seen}:
                return

    await asyncio.wait_for(read(), 30)
    return seen


@pytest.fixture
def quiet_api(settings: Settings) -> Iterator[LiveApi]:
    """The API over HTTP with a keep-alive longer than the test: a stream
    that sees an event before it was woken by NOTIFY."""
    server = LiveApi(settings.model_copy(update={"events_keepalive_seconds": 600}))
    yield server
    server.stop()


async def test_stream_pushes_the_callers_events_and_resumes_after_last_event_id(
    quiet_api: LiveApi, org: OrgClient, other_org: OrgClient
) -> None:
    async with httpx.AsyncClient(base_url=quiet_api.url, headers=org.headers, timeout=30) as client:
        async with client.stream("GET", "/api/v1/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = frames(response)
            assert (await anext(stream)) == {"retry": "2000"}  # subscribed: what follows is pushed

            reviewed = await submit_for_review(org)
            unsafe = await org.submit(**UNSAFE_REPLY)
            theirs = await other_org.submit(**UNSAFE_REPLY)
            await org.wait_for_evaluation(unsafe)
            await other_org.wait_for_evaluation(theirs)
            seen = await collect(
                stream,
                {
                    ("evaluation.completed", reviewed),
                    ("review.requested", reviewed),
                    ("evaluation.completed", unsafe),
                    ("alert.raised", unsafe),
                },
            )
        assert theirs not in {event["trace_id"] for event in seen}
        ids = [event["id"] for event in seen]
        assert ids == sorted(ids)
        completed = next(e for e in seen if (e["kind"], e["trace_id"]) == ("evaluation.completed", unsafe))
        assert (completed["data"]["passed"], completed["data"]["severity"]) == (False, "critical")
        assert "kill" not in json.dumps(seen)  # ids and verdicts, never trace text

        # Away from the stream, an expert overrides; coming back with
        # Last-Event-ID brings exactly what was missed, then live events.
        label = await org.post(
            f"/api/v1/traces/{reviewed}/labels", json={"verdict": "fail", "reviewer": "dr.e"}
        )
        assert label.status_code == 200, label.text
        resumed = {"Last-Event-ID": str(ids[-1])}
        async with client.stream("GET", "/api/v1/events", headers=resumed) as response:
            stream = frames(response)
            await anext(stream)  # retry
            (override,) = await collect(stream, {("verdict.overridden", reviewed)})
        assert override["data"]["from"]["passed"] is True and override["data"]["to"]["passed"] is False
        assert (override["data"]["to"]["decided_by"], override["data"]["changed_by"]) == ("expert", "dr.e")

        # A poller: everything kept, then the response ends.
        everything = await client.get("/api/v1/events", params={"after": 0, "follow": "false"})
        polled = [
            json.loads(line.removeprefix("data: "))
            for line in everything.text.splitlines()
            if line.startswith("data: ")
        ]
        assert [e["id"] for e in polled] == sorted(e["id"] for e in polled)
        assert {(e["kind"], e["trace_id"]) for e in [*seen, override]} <= {
            (e["kind"], e["trace_id"]) for e in polled
        }
        assert theirs not in {e["trace_id"] for e in polled}

        for headers, params, field in (
            ({"Last-Event-ID": "abc"}, {}, "header.last-event-id"),
            ({}, {"after": -1}, "query.after"),
            ({}, {"follow": "perhaps"}, "query.follow"),
        ):
            bad = await client.get("/api/v1/events", headers=headers, params=params)
            assert bad.status_code == 422, bad.text
            assert field in [d["field"] for d in bad.json()["error"]["details"]]
