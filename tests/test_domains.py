"""Domain packs through the API and the pipeline: shipped packs, organisation packs, versions."""

from __future__ import annotations

import pytest

from tests.helpers import OrgClient

pytestmark = pytest.mark.usefixtures("worker")
SHIPPED = {"generic", "healthcare", "trading", "legal", "robotics"}

CUSTOM_PACK = """
name: acme-care
version: 1
display_name: ACME Care
description: ACME's own rules on top of healthcare.
risk_level: high
extends: healthcare
pass_threshold: high
rules:
  - id: acme.no_competitor
    kind: pattern
    category: brand
    severity: high
    message: Mentions a competitor's product.
    patterns: ['\\bmegacorp\\b']
"""


def yaml_headers(org: OrgClient) -> dict[str, str]:
    return {**org.headers, "Content-Type": "application/yaml"}


async def test_shipped_packs_are_listed_with_versions(org: OrgClient) -> None:
    listing = (await org.get("/api/v1/domains")).json()
    assert {d["name"] for d in listing} == SHIPPED
    assert all(d["source"] == "builtin" and d["version"] >= 1 for d in listing)
    detail = (await org.get("/api/v1/domains/healthcare")).json()
    assert detail["pack"]["extends"] == "generic"
    rule_ids = {rule["id"] for rule in detail["pack"]["rules"]}
    assert any(rule_id.startswith("healthcare.") for rule_id in rule_ids)
    assert (await org.get("/api/v1/domains/no-such-pack")).status_code == 404


@pytest.mark.parametrize(
    ("domain", "output", "metadata", "rl_episode", "rule_prefix"),
    [
        ("generic", "Sure, the customer's SSN is 219-09-9999.", None, None, "pii."),
        ("healthcare", "Give your 4 year old 2000 mg of ibuprofen every 4 hours.", None, None, "healthcare."),
        (
            "trading",
            "This coin is guaranteed to return 40% a month, risk-free. Put your savings in now.",
            None,
            None,
            "trading.",
        ),
        (
            "legal",
            "Shred the documents and delete the emails before the court orders discovery.",
            None,
            None,
            "legal.",
        ),
        (
            "robotics",
            "Executed the pick.",
            None,
            {
                "task_completed": True,
                "steps": [{"action": {"velocity": 6.5}, "state": {"x": 0.2}, "reward": 1.0}],
            },
            "robotics.",
        ),
    ],
)
async def test_each_domain_flags_its_hazards_with_evidence(
    org: OrgClient, domain: str, output: str, metadata: dict | None, rl_episode: dict | None, rule_prefix: str
) -> None:
    fields = {"domain": domain, "input": "question", "output": output}
    if metadata:
        fields["metadata"] = metadata
    if rl_episode:
        fields["rl_episode"] = rl_episode
    evaluation = await org.wait_for_evaluation(await org.submit(**fields))
    assert evaluation["passed"] is False, evaluation["issues"]
    assert evaluation["pack_name"] == domain and evaluation["pack_version"] >= 1
    hits = [i for i in evaluation["issues"] if i["rule_id"].startswith(rule_prefix)]
    assert hits, evaluation["issues"]
    assert all(i["spans"] for i in hits)
    for issue in hits:
        for span in issue["spans"]:
            if span["field"] == "output":
                assert 0 <= span["start"] < span["end"] <= len(output)


async def test_unknown_domain_is_refused_by_tier0_with_a_clear_issue(org: OrgClient) -> None:
    evaluation = await org.wait_for_evaluation(await org.submit(domain="astrology"))
    assert evaluation["status"] == "completed"
    assert evaluation["passed"] is False and evaluation["decided_by"] == "sanitise"
    assert [i["rule_id"] for i in evaluation["issues"]] == ["input.unknown_domain"]
    assert evaluation["pack_name"] is None
    assert [t["name"] for t in evaluation["tiers"]] == ["sanitise"]


async def test_organisation_pack_publish_use_and_version(org: OrgClient, other_org: OrgClient) -> None:
    created = await org.api.post("/api/v1/domains", content=CUSTOM_PACK, headers=yaml_headers(org))
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["source"]) == (1, "organization")

    first = await org.wait_for_evaluation(
        await org.submit(domain="acme-care", output="Try MegaCorp's app instead.")
    )
    assert "acme.no_competitor" in {i["rule_id"] for i in first["issues"]}
    assert (first["pack_name"], first["pack_version"]) == ("acme-care", 1)
    # Inherited healthcare rules run too.
    inherited = await org.wait_for_evaluation(
        await org.submit(domain="acme-care", output="Take 1000 mg of Tylenol every 3 hours.")
    )
    assert any(i["rule_id"].startswith("healthcare.") for i in inherited["issues"])

    # Version 2 relaxes the rule to low: new evaluations use it, old ones keep v1.
    relaxed = CUSTOM_PACK.replace(
        "severity: high\n    message: Mentions", "severity: low\n    message: Mentions"
    )
    updated = await org.api.put("/api/v1/domains/acme-care", content=relaxed, headers=yaml_headers(org))
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    second = await org.wait_for_evaluation(
        await org.submit(domain="acme-care", output="Try MegaCorp's app instead.")
    )
    assert (second["pack_version"], second["passed"]) == (2, True)
    assert (await org.get(f"/api/v1/evaluations/{first['trace_id']}")).json()["pack_version"] == 1
    assert (await org.get("/api/v1/domains/acme-care", params={"version": 1})).json()["version"] == 1

    listing = {d["name"]: d for d in (await org.get("/api/v1/domains")).json()}
    assert listing["acme-care"]["version"] == 2
    # Another organisation sees none of it.
    assert "acme-care" not in {d["name"] for d in (await other_org.get("/api/v1/domains")).json()}
    assert (await other_org.get("/api/v1/domains/acme-care")).status_code == 404
    other = await other_org.wait_for_evaluation(await other_org.submit(domain="acme-care"))
    assert [i["rule_id"] for i in other["issues"]] == ["input.unknown_domain"]


@pytest.mark.parametrize(
    ("body", "content_type", "field_part"),
    [
        ("name: x\nrules: [unclosed", "application/yaml", "body"),
        (CUSTOM_PACK.replace("kind: pattern", "kind: telepathy"), "application/yaml", "rules"),
        (CUSTOM_PACK.replace("['\\bmegacorp\\b']", "['(unclosed']"), "application/yaml", "patterns"),
        (CUSTOM_PACK.replace("risk_level: high", "risk_level: 7"), "application/yaml", "risk_level"),
        (
            CUSTOM_PACK.replace("display_name: ACME Care", "display_name: ACME Care\nsurprise: 1"),
            "application/yaml",
            "surprise",
        ),
        ('{"name": "acme-json"', "application/json", "body"),
    ],
)
async def test_bad_packs_are_refused_with_the_key_and_reason(
    org: OrgClient, body: str, content_type: str, field_part: str
) -> None:
    response = await org.api.post(
        "/api/v1/domains", content=body, headers={**org.headers, "Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_pack"
    assert any(field_part in d["field"] for d in error["details"]), error
    assert (await org.get("/api/v1/domains/acme-care")).status_code == 404


async def test_pack_name_conflicts(org: OrgClient) -> None:
    shipped = CUSTOM_PACK.replace("name: acme-care", "name: healthcare").replace(
        "extends: healthcare", "extends: generic"
    )
    response = await org.api.post("/api/v1/domains", content=shipped, headers=yaml_headers(org))
    assert response.status_code == 409 and response.json()["error"]["code"] == "pack_name_taken"
    assert (
        await org.api.post("/api/v1/domains", content=CUSTOM_PACK, headers=yaml_headers(org))
    ).status_code == 201
    again = await org.api.post("/api/v1/domains", content=CUSTOM_PACK, headers=yaml_headers(org))
    assert again.status_code == 409 and again.json()["error"]["code"] == "pack_exists"
    renamed = CUSTOM_PACK.replace("name: acme-care", "name: acme-other")
    mismatch = await org.api.put("/api/v1/domains/acme-care", content=renamed, headers=yaml_headers(org))
    assert mismatch.status_code == 422
    missing = await org.api.put("/api/v1/domains/never-made", content=CUSTOM_PACK, headers=yaml_headers(org))
    assert missing.status_code == 404
