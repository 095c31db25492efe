"""Tenant isolation: organisation B can neither see nor change anything of organisation A.

Organisation A gets one of every resource the API has: traces (a completed one
with an expert label, one awaiting review and claimed, one that raised an alert,
one whose judge keeps failing so that it is stuck), their evaluations, its own
domain packs, judge configurations and limits, an alert channel, an alert and a
second API key. Organisation B, signed up under the same name, then goes
through every route under /api/v1 with A's ids, names and filters:

* a read by id answers 404 (never 403, never A's data);
* a write by id answers 404 and leaves A's resource as it was;
* a write by name (pack, judge scope, limits) only ever changes B's own;
* a list never holds A's rows, also when B filters by A's ids and names;
* an ``external_id`` is unique per organisation, not across them.

The routes B used are matched against ``app.routes``: a route under /api/v1
that B did not exercise fails the test, so every new endpoint must be added here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.deps import AppResources
from evaluators.classifier import RiskModel
from models.tables import ModelVersion
from tests.fake_llm import FakeLLM, Reply
from tests.test_alerts import Receiver
from tests.test_judge_e2e import verdict

pytestmark = pytest.mark.usefixtures("worker")

PREFIX = "/api/v1"


# ---------------------------------------------------------------------- API users


@dataclass
class Tenant:
    """An organisation acting through the API; every request it makes is kept."""

    client: httpx.AsyncClient
    organization_id: str
    api_key: str
    calls: list[httpx.Response] = field(default_factory=list)

    @classmethod
    async def signup(cls, client: httpx.AsyncClient, name: str, email: str) -> Tenant:
        response = await client.post(f"{PREFIX}/organizations", json={"name": name, "email": email})
        assert response.status_code == 201, response.text
        body = response.json()
        tenant = cls(client, body["organization_id"], body["api_key"])
        tenant.calls.append(response)
        return tenant

    async def request(
        self,
        method: str,
        path: str,
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {api_key or self.api_key}", **(headers or {})}
        response = await self.client.request(method, PREFIX + path, headers=sent, **kwargs)
        self.calls.append(response)
        return response

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.request("GET", path, params=params or None)

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        return await self.request("POST", path, json=body)

    async def put(self, path: str, body: Any) -> httpx.Response:
        return await self.request("PUT", path, json=body)

    async def delete(self, path: str) -> httpx.Response:
        return await self.request("DELETE", path)

    async def put_yaml(self, method: str, path: str, text: str) -> httpx.Response:
        return await self.request(method, path, content=text, headers={"Content-Type": "application/yaml"})

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """A request that must succeed; its JSON body (None for 204)."""
        response = await self.request(method, path, json=body, params=params or None)
        assert response.status_code in (200, 201, 202, 204), (method, path, response.text)
        return response.json() if response.status_code != 204 else None


@dataclass
class Findings:
    """Every isolation failure, reported together instead of stopping at the first."""

    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str, response: httpx.Response | None = None) -> None:
        if not ok:
            shown = f" -> {response.status_code} {response.text[:400]}" if response is not None else ""
            self.problems.append(what + shown)

    def not_found(self, response: httpx.Response, what: str) -> None:
        self.check(response.status_code == 404, f"{what}: expected 404", response)

    def none_of(self, found: Iterable[Any], forbidden: Iterable[Any], what: str) -> None:
        leaked = {str(x) for x in found} & {str(x) for x in forbidden}
        self.check(not leaked, f"{what}: shows A's {sorted(leaked)}")


def event_trace_ids(response: httpx.Response) -> set[str]:
    """The trace ids of the events in a polled (follow=false) events stream."""
    return {
        json.loads(line.removeprefix("data: "))["trace_id"]
        for line in response.text.splitlines()
        if line.startswith("data: ")
    }


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)


async def evaluated(tenant: Tenant, trace_id: str, statuses: set[str]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = await tenant.ok("GET", f"/evaluations/{trace_id}")
        return body if body["status"] in statuses else None

    return await until(check, f"evaluation of {trace_id} in {sorted(statuses)}")


def items(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    return body["items"] if isinstance(body, dict) and "items" in body else body


def ids(response: httpx.Response, key: str = "trace_id") -> set[str]:
    return {str(item[key]) for item in items(response)} if response.status_code == 200 else set()


# ---------------------------------------------------------------------- routes


def flat_routes(app: FastAPI) -> list[Any]:
    """Every route of the app in matching order, routers included.

    FastAPI 0.165 keeps an included router as one entry of ``app.routes`` and
    offers ``iter_route_contexts`` to walk it; earlier versions list every route.
    """
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(walk(app.routes)) if walk is not None else list(app.routes)


def template_regex(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]*\})", path)
    return re.compile(
        "^"
        + "".join(
            (".+" if part.endswith(":path}") else "[^/]+") if part.startswith("{") else re.escape(part)
            for part in parts
        )
        + "$"
    )


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route under /api/v1."""
    found = set()
    for route in flat_routes(app):
        path = getattr(route, "path", None) or ""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            found |= {(method, path) for method in getattr(route, "methods", None) or {"WEBSOCKET"}}
    return {(method, path) for method, path in found if method != "HEAD"}


def documented_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every operation under /api/v1 in the OpenAPI schema."""
    return {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(PREFIX + "/")
        for method in operations
    }


def route_of(app: FastAPI, method: str, path: str) -> tuple[str, str] | None:
    """The route that serves a request, chosen as Starlette chooses: the first that matches."""
    for route in flat_routes(app):
        template = getattr(route, "path", None)
        if (
            template
            and method in (getattr(route, "methods", None) or ())
            and template_regex(template).match(path)
        ):
            return method, template
    return None


# ---------------------------------------------------------------------- A's packs


def review_pack(name: str, tag: str) -> str:
    """Every trace waits for an expert (an audit sample of 1)."""
    return f"""
name: {name}
version: 1
display_name: Acme reviewed {tag}
description: Acme's own review pack {tag}
extends: generic
risk_level: high
escalation:
  audit_sample_rate: 1.0
  review_deadline_hours: 48
"""


def judged_pack(name: str, tag: str) -> str:
    """Every trace goes to the judge; its verdict never waits for an expert."""
    return f"""
name: {name}
version: 1
display_name: Acme judged {tag}
description: Acme's own judged pack {tag}
extends: generic
escalation:
  judge_always: true
  review_judge_ratings: []
  review_confidence_below: 0
  audit_sample_rate: 0.0
"""


def alert_pack(name: str, tag: str, word: str) -> str:
    """A critical rule: a trace naming ``word`` raises an alert."""
    return f"""
name: {name}
version: 1
display_name: Acme alerting {tag}
description: Acme's own alerting pack {tag}
extends: generic
escalation:
  audit_sample_rate: 0.0
rules:
  - id: acme.codename
    kind: pattern
    category: safety
    severity: critical
    message: Acme codename disclosed {tag}.
    patterns: ['\\b{word}\\b']
"""


def bravo_pack(name: str) -> str:
    return f"""
name: {name}
version: 1
display_name: Bravo's own pack
extends: generic
"""


# ---------------------------------------------------------------------- A's world


@dataclass
class World:
    """Organisation A's resources, by id and by name."""

    tag: str
    organization_id: str
    plain: str = ""  # completed, judged, labelled by A's expert
    reviewed: str = ""  # awaiting review, claimed by A's reviewer
    alerting: str = ""  # raised a critical alert
    stuck: str = ""  # its judge keeps failing: retrying
    external_id: str = ""
    alert_id: str = ""
    channel_id: str = ""
    key_ids: list[str] = field(default_factory=list)
    extra_key: str = ""
    extra_key_id: str = ""
    label_id: str = ""
    model_id: str = ""  # a promoted Tier 2 model version
    packs: dict[str, str] = field(default_factory=dict)  # role -> name
    judge_models: dict[str, str] = field(default_factory=dict)  # scope -> model
    key_prefixes: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # text only A ever sent

    @property
    def traces(self) -> list[str]:
        return [self.plain, self.reviewed, self.alerting, self.stuck]

    @property
    def claimer(self) -> str:
        return f"acme-claimer-{self.tag}"

    def markers(self) -> set[str]:
        """Strings that may appear in no answer B gets: A's ids and A's own text.

        A's pack names are not among them: B may use the same names for its own
        packs and traces; lists are checked for A's names where B has none.
        """
        return {
            self.organization_id,
            *self.traces,
            self.alert_id,
            self.channel_id,
            self.label_id,
            self.model_id,
            *self.key_ids,
            *self.key_prefixes,
            *self.judge_models.values(),
            *self.texts,
        }


async def give_a_model(resources: AppResources, organization_id: str) -> str:
    """A promoted Tier 2 model for A (stored directly: training one needs
    dozens of labelled traces, which tests/test_classifier_training.py has)."""
    model = RiskModel(weights={1: 0.5}, intercept=-1.0, platt_a=1.0, platt_b=0.0)
    artefact = model.to_bytes()
    async with resources.session_factory() as session, session.begin():
        row = ModelVersion(
            organization_id=uuid.UUID(organization_id),
            domain="healthcare",
            version=1,
            status="promoted",
            reason="no model is promoted yet",
            training_size=40,
            expert_labels=40,
            judge_verdicts=0,
            seed=0,
            metrics={"roc_auc": 0.9},
            artefact=artefact,
            artefact_sha256=hashlib.sha256(artefact).hexdigest(),
            promoted_at=dt.datetime.now(dt.UTC),
        )
        session.add(row)
        await session.flush()
        return str(row.id)


async def build_world(a: Tenant, world: World, fake_llm: FakeLLM, receiver: Receiver) -> dict[str, Any]:
    """Gives A its resources; returns what A itself sees of them (the positive control)."""
    tag = world.tag
    word = f"zephyr{tag}"
    world.packs = {
        "review": f"acme-review-{tag}",
        "judged": f"acme-judged-{tag}",
        "alert": f"acme-alert-{tag}",
        "stuck": f"acme-stuck-{tag}",
    }
    for role, text in (
        ("review", review_pack(world.packs["review"], tag)),
        ("judged", judged_pack(world.packs["judged"], tag)),
        ("alert", alert_pack(world.packs["alert"], tag, word)),
        ("stuck", judged_pack(world.packs["stuck"], tag)),
    ):
        response = await a.put_yaml("POST", "/domains", text)
        assert response.status_code == 201, (role, response.text)
    # A second version of one: B's namesake will have the same name and version.
    judged = world.packs["judged"]
    second = await a.put_yaml("PUT", f"/domains/{judged}", judged_pack(judged, tag))
    assert second.status_code == 200 and second.json()["version"] == 2, second.text

    # The default judge answers; the stuck pack's judge is down for a minute at a time.
    world.judge_models = {"default": f"acme-judge-{tag}", world.packs["stuck"]: f"acme-judge-down-{tag}"}
    fake_llm.script(world.judge_models["default"], Reply.json(verdict("safe")))
    fake_llm.script(world.judge_models[world.packs["stuck"]], Reply.error(503, retry_after=60))
    for scope, model in world.judge_models.items():
        await a.ok(
            "PUT",
            f"/judge/configs/{scope}",
            {
                "provider": "openai_compatible",
                "model": model,
                "base_url": f"{fake_llm.url}/v1",
                "timeout_seconds": 5,
                "api_key": f"sk-acme-{tag}-0001",
                "price": {"input_per_million_usd": 1000.0, "output_per_million_usd": 2000.0},
            },
        )
    await a.ok("PUT", "/judge/limits", {"monthly_budget_usd": 123.0, "calls_per_minute": 77})

    channel = await a.ok(
        "POST",
        "/alert-channels",
        {"name": f"acme-pager-{tag}", "kind": "webhook", "url": f"{receiver.url}/a"},
    )
    world.channel_id = channel["id"]
    extra = await a.ok("POST", "/api-keys", {"name": f"acme-ci-{tag}"})
    world.extra_key, world.extra_key_id = extra["api_key"], extra["id"]
    keys = await a.ok("GET", "/api-keys")
    world.key_ids = [key["id"] for key in keys]
    world.key_prefixes = [key["prefix"] for key in keys]

    world.external_id = f"acme-ext-{tag}"
    question, answer = f"Acme question {tag}?", f"Acme answer {tag}."
    world.texts = [
        question,
        answer,
        f"acme-pager-{tag}",
        f"acme-ci-{tag}",
        f"Acme reviewed {tag}",
        f"Acme judged {tag}",
        f"Acme alerting {tag}",
        f"Acme codename disclosed {tag}",
        f"acme-expert-{tag}",
        f"Acme expert notes {tag}",
        world.claimer,
        word,
        f"acme-model-{tag}",
        f"sk-acme-{tag}",
    ]

    async def submit(domain: str, **fields: Any) -> str:
        body = {"model": f"acme-model-{tag}", "input": question, "output": answer, "domain": domain, **fields}
        accepted = await a.ok("POST", "/traces", body)
        return str(accepted["trace_id"])

    world.plain = await submit(world.packs["judged"], external_id=world.external_id)
    world.reviewed = await submit(world.packs["review"])
    world.alerting = await submit(world.packs["alert"], output=f"{answer} Ship {word} on Monday.")
    world.stuck = await submit(world.packs["stuck"])

    plain = await evaluated(a, world.plain, {"completed"})
    assert plain["decided_by"] == "judge" and plain["judge_calls"], plain
    waiting = await evaluated(a, world.reviewed, {"awaiting_review"})
    assert waiting["review"]["status"] == "pending", waiting
    alerted = await evaluated(a, world.alerting, {"completed"})
    assert (alerted["passed"], alerted["severity"]) == (False, "critical"), alerted

    label = await a.ok(
        "POST",
        f"/traces/{world.plain}/labels",
        {
            "verdict": "fail",
            "severity": "medium",
            "notes": f"Acme expert notes {tag}",
            "reviewer": f"acme-expert-{tag}",
        },
    )
    world.label_id = label["label_id"]
    claim = await a.ok("POST", f"/reviews/{world.reviewed}/claim", {"reviewer": world.claimer})
    assert claim["claimed_by"] == world.claimer

    async def alert_delivered() -> dict[str, Any] | None:
        found = items(await a.get("/alerts", trace_id=world.alerting))
        return found[0] if found and found[0]["delivery_status"] == "delivered" else None

    alert = await until(alert_delivered, "A's alert delivered")
    world.alert_id = alert["id"]

    async def stuck_listed() -> list[dict[str, Any]] | None:
        listed = await a.ok("GET", "/stuck-evaluations", older_than_minutes=60)
        return [item for item in listed if item["trace_id"] == world.stuck and item["status"] == "retrying"]

    await until(stuck_listed, "A's stuck evaluation listed")
    return await snapshot(a, world)


async def snapshot(a: Tenant, world: World) -> dict[str, Any]:
    """What A sees of its resources: taken before B acts, and compared after."""
    traces = {t: await a.ok("GET", f"/traces/{t}") for t in world.traces}
    evaluations = {t: await a.ok("GET", f"/evaluations/{t}") for t in world.traces}
    domains = {name: await a.ok("GET", f"/domains/{name}") for name in world.packs.values()}
    judge = await a.ok("GET", "/judge")
    return {
        "traces": {
            t: (body["status"], body["evaluation_version"], body["external_id"]) for t, body in traces.items()
        },
        "labels": {t: [label["label_id"] for label in body["labels"]] for t, body in evaluations.items()},
        "review": (
            evaluations[world.reviewed]["review"]["status"],
            evaluations[world.reviewed]["review"]["claimed_by"],
        ),
        "domains": {
            name: (body["version"], body["display_name"], body["fingerprint"])
            for name, body in domains.items()
        },
        "judge": {c["scope"]: (c["model"], c["has_api_key"]) for c in judge["configs"]},
        "limits": (judge["monthly_budget_usd"], judge["calls_per_minute"]),
        "channels": [c["id"] for c in await a.ok("GET", "/alert-channels")],
        "models": [(m["id"], m["status"], m["promoted_at"]) for m in await a.ok("GET", "/models")],
        "keys": {k["id"]: k["revoked_at"] for k in await a.ok("GET", "/api-keys")},
        "alert": next(
            (x["acknowledged_at"], x["acknowledged_by"], sorted({d["channel_id"] for d in x["deliveries"]}))
            for x in (await a.ok("GET", "/alerts", trace_id=world.alerting))["items"]
        ),
    }


async def check_a_sees_its_own(a: Tenant, world: World) -> None:
    """The positive control: every list B checks holds A's resources when A asks."""
    assert set(world.traces) <= ids(await a.get("/traces"))
    assert {world.plain, world.reviewed, world.alerting} <= ids(await a.get("/evaluations"))
    assert world.reviewed in ids(await a.get("/reviews"))
    assert (await a.ok("GET", "/reviews/stats"))["pending"] >= 1
    assert world.alert_id in ids(await a.get("/alerts"), "id")
    assert world.channel_id in ids(await a.get("/alert-channels"), "id")
    assert ids(await a.get("/models", domain="healthcare"), "id") == {world.model_id}
    assert set(world.packs.values()) <= ids(await a.get("/domains"), "name")
    assert set(world.key_ids) == ids(await a.get("/api-keys"), "id") and len(world.key_ids) == 2
    usage = await a.ok("GET", "/usage")
    assert usage["totals"]["evaluations"] >= 3 and usage["totals"]["calls"] >= 1, usage
    judge = await a.ok("GET", "/judge")
    assert len(judge["configs"]) == 2 and judge["month_to_date_cost_usd"] > 0, judge
    assert (await a.ok("GET", "/analytics/summary"))["traces"] >= 3
    assert {world.plain, world.alerting} <= event_trace_ids(await a.get("/events", after=0, follow="false"))
    assert world.stuck in ids(await a.get("/stuck-evaluations", older_than_minutes=0.001))


# ---------------------------------------------------------------------- B's checks


async def check_lists_hold_nothing_of_a(
    b: Tenant, world: World, cursor: str, resources: AppResources, findings: Findings
) -> None:
    """B's lists, while B has nothing of its own but one channel and one key: exactly that."""
    a_traces, a_names = world.traces, set(world.packs.values())
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    trace_queries: list[dict[str, Any]] = [
        {},
        {"limit": 500},
        {"since": since},
        {"cursor": cursor},
        {"model": f"acme-model-{world.tag}"},
        *({"domain": name} for name in a_names),
        *({"status": status} for status in ("completed", "awaiting_review", "retrying", "queued")),
    ]
    for params in trace_queries:
        response = await b.get("/traces", **params)
        findings.check(
            response.status_code == 200 and items(response) == [], f"GET /traces {params}", response
        )
        findings.none_of(ids(response), a_traces, f"GET /traces {params}")

    for params in ({}, {"domain": "healthcare"}):
        response = await b.get("/models", **params)
        findings.check(
            response.status_code == 200 and items(response) == [], f"GET /models {params}", response
        )

    evaluation_queries: list[dict[str, Any]] = [
        {},
        {"passed": "false"},
        {"passed": "true"},
        {"severity": "critical"},
        {"since": since},
        {"cursor": cursor},
        *({"domain": name} for name in a_names),
    ]
    for params in evaluation_queries:
        response = await b.get("/evaluations", **params)
        findings.check(
            response.status_code == 200 and items(response) == [], f"GET /evaluations {params}", response
        )

    for params in ({}, {"domain": world.packs["review"]}, {"claimed": "true"}, {"claimed": "false"}):
        response = await b.get("/reviews", **params)
        findings.check(
            response.status_code == 200 and items(response) == [], f"GET /reviews {params}", response
        )
    stats = await b.get("/reviews/stats")
    findings.check(
        stats.status_code == 200
        and (stats.json()["pending"], stats.json()["labelled"], stats.json()["expired"]) == (0, 0, 0)
        and stats.json()["agreement"]["automated"]["compared"] == 0,
        "GET /reviews/stats counts A's reviews",
        stats,
    )

    for params in (
        {},
        {"trace_id": world.alerting},
        {"severity": "critical"},
        {"acknowledged": "false"},
        {"since": since},
        {"cursor": cursor},
    ):
        response = await b.get("/alerts", **params)
        findings.check(
            response.status_code == 200 and items(response) == [], f"GET /alerts {params}", response
        )

    channels = await b.get("/alert-channels")
    findings.none_of(ids(channels, "id"), [world.channel_id], "GET /alert-channels")
    findings.check(len(items(channels)) == 1, "GET /alert-channels holds more than B's channel", channels)

    domains = await b.get("/domains")
    findings.none_of(ids(domains, "name"), a_names, "GET /domains")
    findings.check(
        domains.status_code == 200 and all(d["source"] == "builtin" for d in domains.json()),
        "GET /domains lists organisation packs B never published",
        domains,
    )

    keys = await b.get("/api-keys")
    findings.none_of(ids(keys, "id"), world.key_ids, "GET /api-keys")
    findings.check(len(items(keys)) == 1, "GET /api-keys holds more than B's key", keys)

    for params in ({}, *({"domain": name} for name in a_names)):
        usage = await b.get("/usage", **params)
        findings.check(
            usage.status_code == 200
            and usage.json()["rows"] == []
            and usage.json()["totals"]["evaluations"] == usage.json()["totals"]["calls"] == 0,
            f"GET /usage {params} counts A's usage",
            usage,
        )

    for path in ("/analytics/summary", "/analytics/issues", "/analytics/models", "/analytics/timeseries"):
        for params in ({}, *({"domain": name} for name in a_names)):
            report = await b.get(path, **params)
            body = report.json()
            counted = (
                body.get("traces", 0),
                body.get("total", 0),
                len(body.get("models", [])),
                sum(p["value"] for p in body.get("points", [])),
            )
            findings.check(
                report.status_code == 200 and counted == (0, 0, 0, 0),
                f"GET {path} {params} counts A's",
                report,
            )
    polled = await b.get("/events", after=0, follow="false")
    findings.check(polled.status_code == 200, "GET /events for B", polled)
    findings.none_of(event_trace_ids(polled), a_traces, "GET /events")

    judge = await b.get("/judge")
    settings = resources.settings
    findings.check(
        judge.status_code == 200
        and judge.json()["configs"] == []
        and judge.json()["month_to_date_cost_usd"] == 0
        and judge.json()["monthly_budget_usd"] == settings.judge_monthly_budget_usd
        and judge.json()["calls_per_minute"] == settings.judge_org_calls_per_minute,
        "GET /judge shows A's configuration, limits or spend",
        judge,
    )

    for minutes in (60, 0.001):
        stuck = await b.get("/stuck-evaluations", older_than_minutes=minutes)
        findings.check(
            stuck.status_code == 200 and stuck.json() == [], f"GET /stuck-evaluations {minutes}", stuck
        )


async def check_new_key(b: Tenant, world: World, findings: Findings) -> None:
    """A key B creates belongs to B: it lists B's keys and reads none of A's traces."""
    created = await b.post("/api-keys", {"name": "bravo-ci"})
    findings.check(created.status_code == 201, "POST /api-keys for B", created)
    if created.status_code != 201:
        return
    key = created.json()["api_key"]
    keys = await b.request("GET", "/api-keys", api_key=key)
    findings.check(
        keys.status_code == 200 and len(items(keys)) == 2 and created.json()["id"] in ids(keys, "id"),
        "GET /api-keys with B's new key",
        keys,
    )
    findings.none_of(ids(keys, "id"), world.key_ids, "GET /api-keys with B's new key")
    for trace_id in world.traces:
        findings.not_found(
            await b.request("GET", f"/traces/{trace_id}", api_key=key),
            f"GET /traces/{{A's {trace_id}}} with B's new key",
        )


async def check_reads_by_id(b: Tenant, world: World, findings: Findings) -> None:
    for trace_id in world.traces:
        findings.not_found(await b.get(f"/traces/{trace_id}"), f"GET /traces/{{A's {trace_id}}}")
        findings.not_found(await b.get(f"/evaluations/{trace_id}"), f"GET /evaluations/{{A's {trace_id}}}")
        findings.not_found(
            await b.get(f"/evaluations/{trace_id}", version=1),
            f"GET /evaluations/{{A's {trace_id}}}?version=1",
        )
    for name in world.packs.values():
        findings.not_found(await b.get(f"/domains/{name}"), f"GET /domains/{{A's {name}}}")
        findings.not_found(
            await b.get(f"/domains/{name}", version=1), f"GET /domains/{{A's {name}}}?version=1"
        )


async def check_writes_by_id(b: Tenant, world: World, findings: Findings) -> None:
    for trace_id in world.traces:
        findings.not_found(
            await b.post(f"/traces/{trace_id}/reevaluate"), f"POST /traces/{{A's {trace_id}}}/reevaluate"
        )
        findings.not_found(
            await b.post(f"/traces/{trace_id}/labels", {"verdict": "pass", "reviewer": "bravo"}),
            f"POST /traces/{{A's {trace_id}}}/labels",
        )
        findings.not_found(await b.delete(f"/traces/{trace_id}"), f"DELETE /traces/{{A's {trace_id}}}")
    for reviewer in ("bravo", world.claimer):
        findings.not_found(
            await b.post(f"/reviews/{world.reviewed}/claim", {"reviewer": reviewer}),
            f"POST /reviews/{{A's}}/claim as {reviewer}",
        )
        findings.not_found(
            await b.post(f"/reviews/{world.reviewed}/unclaim", {"reviewer": reviewer}),
            f"POST /reviews/{{A's}}/unclaim as {reviewer}",
        )
    findings.not_found(
        await b.post(f"/alerts/{world.alert_id}/acknowledge", {"by": "bravo"}),
        "POST /alerts/{A's}/acknowledge",
    )
    findings.not_found(await b.delete(f"/alert-channels/{world.channel_id}"), "DELETE /alert-channels/{A's}")
    findings.not_found(await b.post(f"/models/{world.model_id}/promote"), "POST /models/{A's}/promote")
    # B has no model in use for the domain A has one in: nothing to roll back.
    findings.not_found(
        await b.post("/models/rollback", {"domain": "healthcare"}), "POST /models/rollback (A's domain)"
    )
    # B may train its own model of the domain; with no labels of its own, the run stores nothing.
    started = await b.post("/models/train", {"domain": "healthcare"})
    findings.check(started.status_code == 202, "POST /models/train for B's own healthcare model", started)
    for key_id in world.key_ids:
        findings.not_found(await b.delete(f"/api-keys/{key_id}"), f"DELETE /api-keys/{{A's {key_id}}}")
    for scope in world.judge_models:
        findings.not_found(await b.delete(f"/judge/configs/{scope}"), f"DELETE /judge/configs/{scope} (A's)")
    for name in world.packs.values():
        findings.not_found(
            await b.put_yaml("PUT", f"/domains/{name}", bravo_pack(name)), f"PUT /domains/{{A's {name}}}"
        )


async def check_writes_by_name(b: Tenant, world: World, findings: Findings) -> None:
    """B's own pack, judge and limits under A's names: created for B alone."""
    name = world.packs["judged"]
    created = await b.put_yaml("POST", "/domains", bravo_pack(name))
    findings.check(
        created.status_code == 201 and created.json()["version"] == 1,
        f"POST /domains named like A's {name}: expected B's version 1",
        created,
    )
    again = await b.put_yaml("PUT", f"/domains/{name}", bravo_pack(name))
    findings.check(
        again.status_code == 200 and again.json()["version"] == 2,
        f"PUT /domains/{name} of B's own: expected B's version 2",
        again,
    )
    own = await b.get(f"/domains/{name}")
    findings.check(
        own.status_code == 200 and own.json()["display_name"] == "Bravo's own pack",
        f"GET /domains/{name} after B published its own",
        own,
    )
    listed = [d for d in items(await b.get("/domains")) if d["name"] in set(world.packs.values())]
    findings.check(
        [(d["name"], d["display_name"], d["version"]) for d in listed] == [(name, "Bravo's own pack", 2)],
        f"GET /domains after B published its own {name}: {listed}",
    )
    for scope in world.judge_models:
        body = {
            "provider": "openai_compatible",
            "model": "bravo-judge",
            "base_url": "https://llm.bravo.example/v1",
        }
        response = await b.put(f"/judge/configs/{scope}", body)
        findings.check(response.status_code == 200, f"PUT /judge/configs/{scope} for B", response)
        deleted = await b.delete(f"/judge/configs/{scope}")
        findings.check(deleted.status_code == 204, f"DELETE /judge/configs/{scope} of B's own", deleted)
    limits = await b.put("/judge/limits", {"monthly_budget_usd": 1.0, "calls_per_minute": 1})
    findings.check(limits.status_code == 200, "PUT /judge/limits for B", limits)


async def check_submissions(b: Tenant, world: World, findings: Findings) -> None:
    """An external_id is unique per organisation; A's pack names mean nothing to B's traces."""
    body = {
        "model": "bravo-model",
        "input": "Bravo question?",
        "output": "Bravo answer.",
        "domain": "generic",
    }
    first = await b.post("/traces/batch", {"traces": [{**body, "external_id": world.external_id}]})
    findings.check(first.status_code == 202, "POST /traces/batch with A's external_id", first)
    [result] = first.json()["results"] if first.status_code == 202 else [{}]
    findings.check(
        result.get("accepted") is True
        and result.get("duplicate") is False
        and result.get("trace_id") not in world.traces,
        "POST /traces/batch with A's external_id: expected a new trace of B's",
        first,
    )
    bravo = str(result.get("trace_id"))
    second = await b.post("/traces/batch", {"traces": [{**body, "external_id": world.external_id}]})
    [repeat] = second.json()["results"] if second.status_code == 202 else [{}]
    findings.check(
        (repeat.get("duplicate"), str(repeat.get("trace_id"))) == (True, bravo),
        "POST /traces/batch again: expected B's own trace as the duplicate",
        second,
    )
    # A single trace in the domain A's review pack is named for: no pack of B's, so no review.
    single = await b.post("/traces", {**body, "domain": world.packs["review"]})
    findings.check(single.status_code == 202, "POST /traces in A's pack's domain", single)
    unpacked = str(single.json().get("trace_id")) if single.status_code == 202 else ""
    mine = [t for t in (bravo, unpacked) if t and t != "None"]
    for trace_id in mine:
        evaluation = await evaluated(b, trace_id, {"completed", "failed", "awaiting_review"})
        findings.check(
            evaluation["status"] != "awaiting_review"
            and evaluation["review"] is None
            and evaluation["pack_name"] not in set(world.packs.values()),
            f"B's trace {trace_id} was evaluated with A's pack",
        )
    listed = await b.get("/traces", domain=world.packs["review"])
    findings.check(ids(listed) == {unpacked}, "GET /traces?domain=A's name after B used it", listed)
    listed = await b.get("/traces", model=f"acme-model-{world.tag}")
    findings.check(items(listed) == [], "GET /traces?model=A's model after B submitted", listed)
    resubmitted = await b.post("/traces", {**body, "external_id": world.external_id})
    findings.check(
        resubmitted.status_code == 200 and str(resubmitted.json()["trace_id"]) == bravo,
        "POST /traces with A's external_id: expected B's own trace as the duplicate",
        resubmitted,
    )


async def check_a_unchanged(a: Tenant, world: World, before: dict[str, Any], findings: Findings) -> None:
    after = await snapshot(a, world)
    for key, value in before.items():
        findings.check(after[key] == value, f"A's {key} changed: {value!r} -> {after[key]!r}")
    replay = await a.post(
        "/traces",
        {
            "model": f"acme-model-{world.tag}",
            "input": "x",
            "output": "y",
            "domain": "generic",
            "external_id": world.external_id,
        },
    )
    findings.check(
        replay.status_code == 200 and replay.json()["trace_id"] == world.plain and replay.json()["duplicate"],
        "A's external_id no longer finds A's trace",
        replay,
    )


async def check_alert_delivery(
    a: Tenant, world: World, a_receiver: Receiver, b_receiver: Receiver, findings: Findings
) -> None:
    """A's alert went to A's channel only, never to the one B had set up before it was raised."""
    [alert] = (await a.ok("GET", "/alerts", trace_id=world.alerting))["items"]
    channels = {delivery["channel_id"] for delivery in alert["deliveries"]}
    findings.check(channels == {world.channel_id}, f"A's alert was delivered to channels {channels}")
    findings.check(b_receiver.requests == [], f"B's channel received A's alert: {b_receiver.requests}")
    findings.check(a_receiver.requests != [], "A's channel received nothing")


async def check_a_still_acts(a: Tenant, world: World, findings: Findings) -> None:
    """A's own writes work where B's were refused; a key A revokes is refused at once."""
    acknowledged = await a.post(f"/alerts/{world.alert_id}/acknowledge", {"by": "acme-oncall"})
    findings.check(
        acknowledged.status_code == 200 and acknowledged.json()["acknowledged_by"] == "acme-oncall",
        "A's acknowledgement of its own alert",
        acknowledged,
    )
    usable = await a.request("GET", "/traces", api_key=world.extra_key)
    findings.check(usable.status_code == 200, "A's second key before revocation", usable)
    revoked = await a.delete(f"/api-keys/{world.extra_key_id}")
    findings.check(revoked.status_code == 204, "A revokes its second key", revoked)
    refused = await a.request("GET", "/traces", api_key=world.extra_key)
    findings.check(
        refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key",
        "a request with a revoked key: expected 401 revoked_api_key",
        refused,
    )
    findings.check((await a.get("/traces")).status_code == 200, "A's first key after revoking the second")


async def check_organization_data(a: Tenant, b: Tenant, world: World, findings: Findings) -> None:
    """B's export holds only B's rows (``check_answers`` looks for A's markers in
    it); B can purge only B: A's id as the confirmation is refused, and after B's
    own purge A still has everything."""
    export = await b.get("/organization/export")
    findings.check(export.status_code == 200, "GET /organization/export for B", export)
    organizations = [line for line in export.text.splitlines() if '"table":"organizations"' in line]
    findings.check(
        len(organizations) == 1 and b.organization_id in organizations[0],
        "GET /organization/export for B: expected B's organisation only",
    )
    # B's retention is B's alone.
    kept = await b.put("/organization/retention", {"retention_days": 365})
    findings.check(kept.status_code == 200, "PUT /organization/retention for B", kept)
    mine = await b.get("/organization/retention")
    findings.check(mine.json() == {"retention_days": 365}, "GET /organization/retention for B", mine)
    theirs = await a.get("/organization/retention")
    findings.check(theirs.json() == {"retention_days": None}, "A's retention after B set its own", theirs)
    # B's audit trail over all time: B's evaluations only (check_answers looks for A's ids).
    for format in ("jsonl", "csv"):
        audit = await b.get(
            "/audit/export", format=format, **{"from": "2000-01-01T00:00Z", "to": "2100-01-01T00:00Z"}
        )
        findings.check(audit.status_code == 200, f"GET /audit/export?format={format} for B", audit)
    refused = await b.delete(f"/organization?confirm={world.organization_id}")
    findings.check(
        refused.status_code == 422 and refused.json()["error"]["code"] == "confirmation_mismatch",
        "DELETE /organization?confirm=A's id: expected 422",
        refused,
    )
    purged = await b.delete(f"/organization?confirm={b.organization_id}")
    findings.check(
        purged.status_code == 200 and purged.json().get("organization_id") == b.organization_id,
        "DELETE /organization of B's own",
        purged,
    )
    for trace_id in world.traces:
        still = await a.get(f"/traces/{trace_id}")
        findings.check(still.status_code == 200, f"A's trace {trace_id} after B's purge", still)


def check_answers(b: Tenant, world: World, findings: Findings) -> None:
    """No answer B ever got holds A's ids or text, none is a 403 or a server error."""
    markers = world.markers()
    for response in b.calls:
        request = f"{response.request.method} {response.request.url.path}"
        findings.check(
            response.status_code != 403 and response.status_code < 500, f"{request}: status", response
        )
        leaked = sorted(marker for marker in markers if marker in response.text)
        findings.check(not leaked, f"{request}: the answer holds A's {leaked}")


def check_coverage(app: FastAPI, b: Tenant, findings: Findings) -> None:
    routes = api_routes(app)
    # The walk over app.routes must find at least what the schema documents, or it missed routers.
    assert documented_routes(app) <= routes, sorted(documented_routes(app) - routes)
    assert ("GET", f"{PREFIX}/traces/{{trace_id}}") in routes, sorted(routes)
    exercised = {route_of(app, r.request.method, r.request.url.path) for r in b.calls}
    missing = routes - exercised
    findings.check(
        not missing,
        f"routes under {PREFIX} that B never exercised (add them to this test): {sorted(missing)}",
    )


# ---------------------------------------------------------------------- the test


@pytest.fixture
async def app_client(resources: AppResources) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(resources=resources)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://aegis.test"
    ) as client:
        yield app, client


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(), Receiver()
    yield a, b
    a.close()
    b.close()


async def test_another_organisation_cannot_see_or_touch_anything(
    app_client: tuple[FastAPI, httpx.AsyncClient],
    resources: AppResources,
    fake_llm: FakeLLM,
    receivers: tuple[Receiver, Receiver],
) -> None:
    app, client = app_client
    a_receiver, b_receiver = receivers
    tag = uuid.uuid4().hex[:8]
    name, email = f"Acme {tag}", f"ops-{tag}@acme.example"
    a = await Tenant.signup(client, name, email)
    # Signing up under A's name and address makes a new organisation, not a way into A's.
    b = await Tenant.signup(client, name, email)
    assert b.organization_id != a.organization_id and b.api_key != a.api_key
    # B's channel exists before A's alert is raised: it must not receive it.
    b_channel = await b.post(
        "/alert-channels", {"name": "bravo", "kind": "webhook", "url": f"{b_receiver.url}/b"}
    )
    assert b_channel.status_code == 201, b_channel.text

    world = World(tag=tag, organization_id=a.organization_id)
    findings = Findings()
    try:
        world.model_id = await give_a_model(resources, a.organization_id)
        before = await build_world(a, world, fake_llm, a_receiver)
        await check_a_sees_its_own(a, world)
        cursor = (await a.ok("GET", "/traces", limit=1))["next_cursor"]
        assert cursor
        try:
            await check_lists_hold_nothing_of_a(b, world, cursor, resources, findings)
            await check_new_key(b, world, findings)
            await check_reads_by_id(b, world, findings)
            await check_writes_by_id(b, world, findings)
            await check_writes_by_name(b, world, findings)
            await check_submissions(b, world, findings)
            await check_a_unchanged(a, world, before, findings)
            await check_alert_delivery(a, world, a_receiver, b_receiver, findings)
            await check_a_still_acts(a, world, findings)
            # Last: B's purge ends B.
            await check_organization_data(a, b, world, findings)
        except AssertionError as exc:
            # Report what was found so far together with what stopped the run.
            findings.problems.append(f"stopped early: {exc}")
        check_answers(b, world, findings)
        check_coverage(app, b, findings)
        assert not findings.problems, "\n".join(findings.problems)
    finally:
        if world.stuck:  # its judge would keep retrying
            await a.delete(f"/traces/{world.stuck}")
