"""CPU each evaluation activity costs the worker, in one process, without Temporal.

Run from the repository root::

    python -m bench.activity_cpu [--traces 300] [--rounds 2]

Starts an embedded PostgreSQL, stores ``--traces`` healthcare traces of the
labelled set, and calls the activities' own methods on each, as a workflow
would in order (Tier 0, Tier 1, Tier 2 without a model, persist), measuring
this process's CPU time (``time.process_time``) around each call. The
baseline is the cheapest database access an activity can make: a session
reading one row by primary key. Each activity is also reported as a
multiple of it, which is what to compare across machines and changes. The
first traces warm the caches (the shipped pack is compiled on first use) and
are not counted. It runs twice per round, alternating: on the pool every
process uses (a connection the server closed is replaced at checkout,
without a round trip) and on one that also pings each connection at
checkout (SQLAlchemy's pre-ping), and reports both and what the ping costs
per session.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from sqlalchemy import select

from activities.persist import PersistActivities
from activities.tiers import TierActivities
from bench.stack import migrated_postgres
from core.db import create_engine, create_session_factory
from core.packs import PackResolver
from core.settings import Settings
from models.schemas import PersistInput, TierInput
from models.tables import Organization, Trace

LABELLED = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_traces.yaml"
DOMAIN = "healthcare"
WARM_UP = 20
T = TypeVar("T")


class CpuClock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    async def time(self, name: str, call: Awaitable[T], *, counted: bool) -> T:
        started = time.process_time()
        result = await call
        if counted:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.process_time() - started
        return result


async def measure(database_url: str, count: int, *, pre_ping: bool) -> dict[str, Any]:
    engine = create_engine(Settings(database_url=database_url), pre_ping=pre_ping)
    sessions = create_session_factory(engine)
    packs = PackResolver(sessions)
    tiers, persist = TierActivities(sessions, packs), PersistActivities(sessions, packs)
    items = [t for t in yaml.safe_load(LABELLED.read_text())["traces"] if t["domain"] == DOMAIN]
    async with sessions() as session, session.begin():
        organization = Organization(name="bench", email="bench@example.com")
        session.add(organization)
        await session.flush()
        traces = [
            Trace(
                organization_id=organization.id,
                model="gpt-4o-mini",
                input=item.get("input", ""),
                output=item["output"],
                domain=DOMAIN,
                status="queued",
            )
            for item in (items[n % len(items)] for n in range(count + WARM_UP))
        ]
        session.add_all(traces)
    org = organization.id

    async def read_one_row(trace_id: uuid.UUID) -> None:
        async with sessions() as session:
            await session.scalar(select(Trace.id).where(Trace.id == trace_id))

    clock = CpuClock()
    for number, trace in enumerate(traces):
        counted = number >= WARM_UP
        await clock.time("baseline_read_one_row", read_one_row(trace.id), counted=counted)
        task = TierInput(trace_id=trace.id, organization_id=org, domain=DOMAIN)
        tier0 = await clock.time("tier0_sanitise", tiers.tier0(task), counted=counted)
        task = task.model_copy(update={"pack": tier0.pack, "previous": [tier0]})
        tier1 = await clock.time("tier1_rules", tiers.tier1(task), counted=counted)
        task = task.model_copy(update={"previous": [tier0, tier1]})
        tier2 = await clock.time("tier2_classifier_no_model", tiers.tier2(task), counted=counted)
        stored = PersistInput(
            trace_id=trace.id,
            organization_id=org,
            domain=DOMAIN,
            workflow_id=f"bench-{trace.id}",
            run_id="bench",
            pack=tier0.pack,
            outcomes=[tier0, tier1, tier2],
        )
        await clock.time("persist_evaluation", persist.persist(stored), counted=counted)
    await engine.dispose()
    per_call_ms = {name: 1000 * seconds / count for name, seconds in clock.seconds.items()}
    baseline = per_call_ms["baseline_read_one_row"]
    return {
        "cpu_ms_per_call": {name: round(ms, 3) for name, ms in per_call_ms.items()},
        "over_baseline": {name: round(ms / baseline, 2) for name, ms in per_call_ms.items()},
    }


async def compare(database_url: str, count: int, rounds: int) -> dict[str, Any]:
    """The pool the processes use (no round trip before use) and one that
    pings each connection at checkout, alternating, and the CPU the ping
    costs per session."""
    runs: dict[str, list[dict[str, Any]]] = {"pool": [], "pool_with_pre_ping": []}
    for _ in range(rounds):
        runs["pool"].append(await measure(database_url, count, pre_ping=False))
        runs["pool_with_pre_ping"].append(await measure(database_url, count, pre_ping=True))
    result: dict[str, Any] = {"traces": count, "rounds": rounds}
    for name, measured in runs.items():
        result[name] = {
            key: {call: round(sum(m[key][call] for m in measured) / rounds, 3) for call in measured[0][key]}
            for key in ("cpu_ms_per_call", "over_baseline")
        }
    reads = [result[name]["cpu_ms_per_call"]["baseline_read_one_row"] for name in runs]
    result["pre_ping_ms_per_session"] = round(reads[1] - reads[0], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with migrated_postgres() as url:
        print(json.dumps(asyncio.run(compare(url, args.traces, args.rounds))))


if __name__ == "__main__":
    main()
