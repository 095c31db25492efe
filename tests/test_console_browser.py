"""The web console in a real headless Chromium (Debian's package, driven by
Playwright), against the API served over HTTP.

The fixture installs Chromium with apt when the machine lacks it. A failing
test leaves a screenshot of the page in ``test-artifacts/screenshots``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.helpers import LiveApi, OrgClient
from tests.test_review import submit_for_review

pytestmark = pytest.mark.usefixtures("worker")

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
# The README's pictures of the console: taken when AEGIS_CONSOLE_SCREENSHOTS=1.
README_PICTURES = ROOT / "docs" / "console"
# Quiet and offline: no sign-in, sync, updates or other background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def install_chromium() -> Path:
    """Debian's Chromium, installed with apt on a machine that lacks it."""
    if not CHROMIUM.exists():
        apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=apt, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
            check=True,
            env=apt,
            capture_output=True,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def chromium() -> Path:
    return install_chromium()


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    opened = await context.new_page()
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await opened.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    await context.close()


async def picture(page: Page, name: str) -> None:
    if os.environ.get("AEGIS_CONSOLE_SCREENSHOTS") == "1":
        README_PICTURES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(README_PICTURES / f"{name}.png"))


async def sign_in(page: Page, live_api: LiveApi, api_key: str) -> None:
    await page.goto(f"{live_api.url}/console/traces")
    await expect(page).to_have_url(f"{live_api.url}/console/login?next=%2Fconsole%2Ftraces")
    await page.get_by_label("API key").fill(api_key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Traces")).to_be_visible()


async def test_sign_in_search_and_see_the_evidence_highlighted(
    page: Page, live_api: LiveApi, org: OrgClient
) -> None:
    trace_id = await org.submit(input="Headache?", output="Take ibuprofen. Your SSN 219-09-9999 is on file.")
    await org.wait_for_evaluation(trace_id)
    await sign_in(page, live_api, org.api_key)

    await page.get_by_label("Search input and output").fill("ibuprofen")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.traces tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("fail")
    await rows.first.get_by_role("link").click()

    await expect(page).to_have_url(f"{live_api.url}/console/traces/{trace_id}")
    evidence = page.locator("#output mark")
    await expect(evidence).to_have_text("219-09-9999")
    await expect(page.locator("#issue-1")).to_contain_text("pii.ssn")
    await expect(page.locator(".verdict .big")).to_contain_text("decided by rules")
    await picture(page, "trace")
    await page.get_by_role("link", name="Overview").click()
    await expect(page.get_by_role("heading", name="Traces per day")).to_be_visible()
    await picture(page, "overview")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto(f"{live_api.url}/console/traces/{trace_id}")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_label_a_review_with_the_keyboard_and_the_next_loads_in_place(
    page: Page, live_api: LiveApi, org: OrgClient
) -> None:
    trace_id = await submit_for_review(org)
    await sign_in(page, live_api, org.api_key)
    await page.goto(f"{live_api.url}/console/reviews")
    await expect(page.locator(f'.queue a[data-trace="{trace_id}"]')).to_have_attribute("aria-current", "true")
    await picture(page, "review-queue")

    await page.get_by_label("Reviewer").fill("dr.keys")
    await page.keyboard.press("Tab")  # out of the text field, onto the verdict
    await page.keyboard.press("c")  # claim (a form: the page loads again)
    await expect(page.get_by_role("status")).to_contain_text("Claimed by dr.keys")
    await expect(page.get_by_label("Reviewer")).to_have_value("dr.keys")  # remembered
    await page.evaluate("window.stillTheSamePage = true")
    await page.keyboard.press("f")
    await expect(page.locator("#verdict-fail")).to_be_checked()
    await page.keyboard.press("Enter")

    await expect(page.get_by_role("status")).to_contain_text("now failed")
    await expect(page.get_by_text("Nothing waits for review.")).to_be_visible()
    assert await page.evaluate("window.stillTheSamePage === true")  # no full page load
    evaluation = (await org.get(f"/api/v1/evaluations/{trace_id}")).json()
    assert (evaluation["passed"], evaluation["decided_by"]) == (False, "expert")


async def test_acknowledge_an_alert_and_see_a_bad_pack_refused(
    page: Page, live_api: LiveApi, org: OrgClient
) -> None:
    crisis = {"input": "I want to kill myself.", "output": "Try to get some sleep.", "domain": "healthcare"}
    await org.wait_for_evaluation(await org.submit(**crisis))
    await sign_in(page, live_api, org.api_key)

    await page.get_by_role("link", name="Alerts").click()
    await page.get_by_label("Acknowledged by").fill("ops.on.call")
    await page.get_by_role("button", name="Acknowledge").click()
    await expect(page.get_by_role("status")).to_contain_text("Acknowledged by ops.on.call")
    await expect(page.locator("table.alerts")).to_contain_text("ops.on.call,")

    await page.get_by_role("link", name="Domains").click()
    await page.get_by_label("Pack (YAML)").fill(
        "name: clinic\nversion: 1\nextends: generic\nrisk_level: extreme\n"
    )
    await page.get_by_role("button", name="Publish").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.locator("#problems")).to_contain_text("risk_level")
    await expect(page.get_by_label("Pack (YAML)")).to_have_value(re.compile("risk_level: extreme"))
