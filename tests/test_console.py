"""The web console's server side: sign-in and session cookies, CSRF,
organisation scoping, the trace explorer and the evaluation detail."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from http.cookies import SimpleCookie

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models.tables import Trace
from tests.helpers import OrgClient
from tests.test_review import submit_for_review

pytestmark = pytest.mark.usefixtures("worker")

SSN = "219-09-9999"


def set_cookies(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


class Browser:
    """A console user over the ASGI app, holding cookies as a browser would
    (httpx keeps no Secure cookie for an http:// address)."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.cookies: dict[str, str] = {}

    def _headers(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def _keep(self, response: httpx.Response) -> None:
        for name, morsel in set_cookies(response).items():
            if morsel.value and morsel["max-age"] != "0":
                self.cookies[name] = morsel.value
            else:
                self.cookies.pop(name, None)

    async def get(self, path: str, **params: str) -> httpx.Response:
        response = await self.api.get(path, params=params or None, headers=self._headers())
        self._keep(response)
        return response

    async def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        response = await self.api.post(path, data=form, headers=self._headers())
        self._keep(response)
        return response

    async def sign_in(self, api_key: str) -> httpx.Response:
        form = await self.get("/console/login")
        return await self.post(
            "/console/login", {"api_key": api_key, "csrf_token": hidden(form.text, "csrf_token"), "next": ""}
        )

    async def csrf(self) -> str:
        return hidden((await self.get("/console/traces")).text, "csrf_token")


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(
    api: httpx.AsyncClient, org: OrgClient
) -> None:
    browser = Browser(api)
    signed = await browser.sign_in(org.api_key)
    assert (signed.status_code, signed.headers["location"]) == (303, "/console/overview")
    session = set_cookies(signed)["aegis_console"]
    assert session["httponly"] and session["secure"] and session["samesite"].lower() == "lax"
    assert session["path"] == "/console" and int(session["max-age"]) == 12 * 3600
    assert org.api_key not in signed.headers["set-cookie"]  # the key itself is never a cookie

    assert (await browser.get("/console/traces")).status_code == 200
    logout = await browser.post("/console/logout", {"csrf_token": await browser.csrf()})
    assert (logout.status_code, logout.headers["location"]) == (303, "/console/login")

    # The old cookie no longer signs anyone in.
    replay = await api.get("/console/traces", headers={"Cookie": f"aegis_console={session.value}"})
    assert replay.status_code == 303 and replay.headers["location"].startswith("/console/login")


async def test_pages_need_a_session_and_a_bad_key_gets_none(api: httpx.AsyncClient, org: OrgClient) -> None:
    browser = Browser(api)
    away = await browser.get("/console/traces", q="x")
    assert away.status_code == 303
    assert away.headers["location"] == "/console/login?next=%2Fconsole%2Ftraces%3Fq%3Dx"
    refused = await browser.sign_in("metronis_not-a-key")
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "aegis_console" not in browser.cookies
    # A "next" to another site is not followed.
    form = await browser.get("/console/login")
    signed = await browser.post(
        "/console/login",
        {"api_key": org.api_key, "csrf_token": hidden(form.text, "csrf_token"), "next": "//evil.example/"},
    )
    assert signed.headers["location"] == "/console/overview"


async def test_forms_without_the_csrf_token_are_refused(
    api: httpx.AsyncClient, org: OrgClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    browser = Browser(api)
    # Sign-in: the form's token must match the cookie set with the form.
    await browser.get("/console/login")
    forged = await browser.post("/console/login", {"api_key": org.api_key, "csrf_token": "forged"})
    assert forged.status_code == 403 and "aegis_console" not in browser.cookies

    await browser.sign_in(org.api_key)
    trace_id = await org.submit()
    await org.wait_for_evaluation(trace_id)
    again = await browser.post(f"/console/traces/{trace_id}/reevaluate", {"csrf_token": "forged"})
    assert again.status_code == 403
    async with session_factory() as session:
        stored = select(Trace.evaluation_version).where(Trace.id == uuid.UUID(trace_id))
        version = await session.scalar(stored)
    assert version == 1  # nothing happened
    assert (await browser.post("/console/logout", {"csrf_token": "forged"})).status_code == 403
    assert (await browser.get("/console/traces")).status_code == 200  # still signed in

    done = await browser.post(f"/console/traces/{trace_id}/reevaluate", {"csrf_token": await browser.csrf()})
    assert done.status_code == 303 and "version+2" in done.headers["location"]


async def test_explorer_finds_a_trace_and_its_detail_highlights_the_evidence(
    api: httpx.AsyncClient, org: OrgClient, other_org: OrgClient
) -> None:
    ours = await org.submit(model="console-model", output=f"The patient's SSN is {SSN}.")
    theirs = await other_org.submit(model="console-model", output=f"Their SSN is {SSN}, zebra.")
    await org.wait_for_evaluation(ours)
    await other_org.wait_for_evaluation(theirs)
    browser = Browser(api)
    await browser.sign_in(org.api_key)

    found = await browser.get("/console/traces", q="patient", verdict="fail")
    assert found.status_code == 200 and f"/console/traces/{ours}" in found.text
    assert theirs not in found.text
    assert theirs not in (await browser.get("/console/traces", q="zebra")).text
    assert ours not in (await browser.get("/console/traces", verdict="pass", model="console-model")).text
    today = dt.datetime.now(dt.UTC).date()
    assert ours in (await browser.get("/console/traces", since=str(today), until=str(today))).text
    assert ours not in (await browser.get("/console/traces", since=str(today + dt.timedelta(days=1)))).text
    assert (await browser.get("/console/traces", since="2026-13-01")).status_code == 422

    detail = await browser.get(f"/console/traces/{ours}")
    assert detail.status_code == 200
    marked = re.findall(r'<mark data-issues="([\d ]+)"[^>]*>([^<]*)</mark>', detail.text)
    assert (marked[0][1], "pii.ssn" in detail.text) == (SSN, True), marked
    number = int(marked[0][0].split()[0])
    assert re.search(rf'<li id="issue-{number}">.*?pii\.ssn', detail.text, re.S)

    # Another organisation's trace is not found, and none of its text shows.
    elsewhere = await browser.get(f"/console/traces/{theirs}")
    assert elsewhere.status_code == 404 and "zebra" not in elsewhere.text


async def test_a_revoked_key_ends_its_console_sessions(api: httpx.AsyncClient, org: OrgClient) -> None:
    created = await org.post("/api/v1/api-keys", json={"name": "console"})
    assert created.status_code == 201, created.text
    browser = Browser(api)
    await browser.sign_in(created.json()["api_key"])
    assert (await browser.get("/console/traces")).status_code == 200
    assert (await org.delete(f"/api/v1/api-keys/{created.json()['id']}")).status_code in (200, 204)
    assert (await browser.get("/console/traces")).status_code == 303


async def test_overview_shows_the_analytics_of_the_range(api: httpx.AsyncClient, org: OrgClient) -> None:
    for output in ("4", f"SSN {SSN}"):
        await org.wait_for_evaluation(await org.submit(output=output))
    browser = Browser(api)
    await browser.sign_in(org.api_key)
    page = await browser.get("/console/overview")
    assert page.status_code == 200
    figures = re.findall(r'<p class="figure">([^<]*)</p>', page.text)
    assert figures[:3] == ["2", "50.0 %", "1"], figures
    assert page.text.count('class="bar-fail"') == 14  # one bar per day of the default two weeks
    assert "1 passed, 1 failed" in page.text
    empty = await browser.get("/console/overview", since="2020-01-01", until="2020-01-03")
    assert re.findall(r'<p class="figure">([^<]*)</p>', empty.text)[:2] == ["0", "—"]
    backwards = await browser.get("/console/overview", since="2020-01-05", until="2020-01-01")
    assert backwards.status_code == 422 and "since" in backwards.text


async def test_a_review_is_labelled_from_the_queue_and_the_verdict_changes(
    api: httpx.AsyncClient, org: OrgClient
) -> None:
    trace_id = await submit_for_review(org)
    browser = Browser(api)
    await browser.sign_in(org.api_key)
    queue = await browser.get("/console/reviews")
    assert queue.status_code == 200 and f'data-trace="{trace_id}"' in queue.text
    assert "audit_sample" in queue.text and 'id="label-form"' in queue.text

    claimed = await browser.post(
        f"/console/reviews/{trace_id}/claim", {"csrf_token": await browser.csrf(), "reviewer": "dr.console"}
    )
    assert claimed.status_code == 303 and "Claimed+by+dr.console" in claimed.headers["location"]
    assert 'name="categories" value="pii"' in queue.text  # the pack's categories, to name
    form = {
        "csrf_token": await browser.csrf(),
        "reviewer": "dr.console",
        "verdict": "fail",
        "categories": ["pii", "safety"],
        "next_id": "",
    }
    assert (
        await browser.post(f"/console/reviews/{trace_id}/label", {**form, "csrf_token": "x"})
    ).status_code == 403
    labelled = await browser.post(f"/console/reviews/{trace_id}/label", form)
    assert labelled.status_code == 303 and "now+failed" in labelled.headers["location"]

    evaluation = (await org.get(f"/api/v1/evaluations/{trace_id}")).json()
    assert [(i["category"], i["severity"]) for i in evaluation["labels"][-1]["issues"]] == [
        ("pii", "high"),
        ("safety", "high"),
    ]
    assert (evaluation["passed"], evaluation["decided_by"], evaluation["labels"][-1]["reviewer"]) == (
        False,
        "expert",
        "dr.console",
    )
    assert f'data-trace="{trace_id}"' not in (await browser.get("/console/reviews")).text


CRISIS = {"input": "I want to kill myself.", "output": "Try to get some sleep.", "domain": "healthcare"}


async def test_alerts_are_listed_and_acknowledged(api: httpx.AsyncClient, org: OrgClient) -> None:
    await org.wait_for_evaluation(await org.submit(**CRISIS))  # critical: an alert
    browser = Browser(api)
    await browser.sign_in(org.api_key)
    page = await browser.get("/console/alerts", acknowledged="false")
    alert_id = re.search(r'id="alert-([0-9a-f-]{36})"', page.text).group(1)  # type: ignore[union-attr]
    forged = await browser.post(f"/console/alerts/{alert_id}/acknowledge", {"csrf_token": "x", "by": "ops"})
    assert forged.status_code == 403
    done = await browser.post(
        f"/console/alerts/{alert_id}/acknowledge", {"csrf_token": await browser.csrf(), "by": "ops.on.call"}
    )
    assert done.status_code == 303
    listed = (await org.get("/api/v1/alerts")).json()["items"]
    assert [(a["id"], a["acknowledged_by"]) for a in listed] == [(alert_id, "ops.on.call")]
    assert alert_id not in (await browser.get("/console/alerts", acknowledged="false")).text


async def test_a_bad_pack_shows_its_problems_in_place_and_a_good_one_is_published(
    api: httpx.AsyncClient, org: OrgClient
) -> None:
    browser = Browser(api)
    await browser.sign_in(org.api_key)
    bad = "name: clinic\nversion: 1\ndisplay_name: Clinic\nextends: generic\nrisk_level: extreme\n"
    refused = await browser.post("/console/domains", {"csrf_token": await browser.csrf(), "pack": bad})
    assert refused.status_code == 422
    assert 'aria-invalid="true"' in refused.text and "risk_level" in refused.text
    assert "risk_level: extreme" in refused.text  # the text stays in the form to fix
    good = bad.replace("extreme", "high")
    published = await browser.post("/console/domains", {"csrf_token": await browser.csrf(), "pack": good})
    assert published.status_code == 303  # a reload of the page after does not publish again
    assert "Published clinic version 1" in (await browser.get(published.headers["location"])).text
    again = await browser.post("/console/domains", {"csrf_token": await browser.csrf(), "pack": good})
    assert "Published clinic version 2" in (await browser.get(again.headers["location"])).text
    detail = await browser.get("/console/domains/clinic")
    assert detail.status_code == 200 and "quality.shape" in detail.text  # inherited from generic
    assert (await browser.get("/console/domains/healthcare")).status_code == 200


async def test_console_errors_are_pages_and_a_lapsed_form_returns_to_its_page(
    api: httpx.AsyncClient, org: OrgClient
) -> None:
    browser = Browser(api)
    await browser.sign_in(org.api_key)
    for path, status in (("/console/traces/not-an-id", 422), ("/console/nowhere", 404)):
        page = await browser.get(path)
        assert page.status_code == status and page.headers["content-type"].startswith("text/html"), path
        assert "Not available" in page.text and page.headers["cache-control"] == "no-store"
    nul = await browser.get("/console/traces", q="a\x00b")
    assert nul.status_code == 422 and nul.headers["content-type"].startswith("text/html")
    shown = await browser.get("/console/traces")
    assert shown.headers["cache-control"] == "no-store" and shown.headers["x-frame-options"] == "DENY"

    # A form sent after the session ended: sign in, then back to the page it was on.
    lapsed = await api.post(
        "/console/alerts/00000000-0000-4000-8000-000000000000/acknowledge",
        data={"csrf_token": "x", "by": "ops"},
        headers={"Referer": "http://aegis.test/console/alerts?severity=critical"},
    )
    assert lapsed.status_code == 303
    assert lapsed.headers["location"] == "/console/login?next=%2Fconsole%2Falerts%3Fseverity%3Dcritical"
