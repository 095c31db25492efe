"""Unit tests for loading, validating and inheriting domain packs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from domains import (
    DEFAULT_DOMAIN,
    DomainPack,
    PackError,
    UnknownDomain,
    available_domains,
    load_domain_pack,
    parse_domain_pack,
)
from evaluators.rules import RULE_KINDS
from evaluators.types import Severity


def rule(kind: str = "pattern", **keys: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"t.{kind}",
        "kind": kind,
        "category": "c",
        "severity": "low",
        "message": "m",
    }
    if kind == "pattern":
        base["patterns"] = ["x"]
    return {**base, **keys}


def pack(*rules: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "t", "version": 1, "display_name": "T", "rules": list(rules), **top}


GROUPS = {"a": ["x"], "b": ["y"]}


def problems(data: Any, source: str = "upload") -> list[dict[str, str]]:
    with pytest.raises(PackError) as info:
        parse_domain_pack(data, source)
    assert str(info.value).startswith(f"{source}: ")
    return info.value.problems


# --------------------------------------------------------------------------
# Shipped packs
# --------------------------------------------------------------------------


def test_shipped_packs_load_and_are_cached() -> None:
    assert {"generic", "healthcare"} <= set(available_domains())
    assert DEFAULT_DOMAIN == "generic"
    generic = load_domain_pack("generic")
    assert load_domain_pack("generic") is generic
    assert load_domain_pack("Healthcare") is load_domain_pack(" healthcare ")


@pytest.mark.parametrize("name", ["no-such-domain", "../healthcare", "", "generic.yaml", "HEALTH CARE"])
def test_unknown_domain_raises_instead_of_falling_back(name: str) -> None:
    with pytest.raises(UnknownDomain) as info:
        load_domain_pack(name)
    assert isinstance(info.value, LookupError)


def test_generic_pack_metadata() -> None:
    generic = load_domain_pack("generic")
    assert (generic.name, generic.display_name, generic.risk_level) == ("generic", "Generic", "low")
    assert isinstance(generic.version, int) and generic.version >= 1
    assert generic.pass_threshold is Severity.HIGH
    kinds = {rule.kind for rule in generic.rules}
    assert {"output_shape", "pii", "pattern"} <= kinds
    shape = next(rule for rule in generic.rules if rule.kind == "output_shape")
    assert {"empty", "truncated", "refusal", "prompt_injection_echo"} <= set(shape.checks)


def test_healthcare_pack_metadata_and_inheritance() -> None:
    generic = load_domain_pack("generic")
    healthcare = load_domain_pack("healthcare")
    assert healthcare.extends == "generic"
    assert healthcare.risk_level == "high"
    assert "HIPAA" in healthcare.regulatory_frameworks
    assert 4 <= len(healthcare.rubric) <= 6
    assert healthcare.alerts.severities == [Severity.CRITICAL]
    assert healthcare.escalation.audit_sample_rate > 0
    generic_ids = [rule.id for rule in generic.rules]
    healthcare_ids = [rule.id for rule in healthcare.rules]
    # Parent rules first, in order; "pii" is overridden in place.
    assert healthcare_ids[: len(generic_ids)] == generic_ids
    pii = next(rule for rule in healthcare.rules if rule.id == "pii")
    assert pii.kinds is not None and pii.kinds["mrn"] is Severity.HIGH and pii.kinds["dob"] is Severity.HIGH
    kinds = {rule.kind for rule in healthcare.rules}
    assert {"numeric_bound", "pair_conflict", "required_when", "pattern", "pii"} <= kinds


def test_fingerprint_is_stable_and_follows_content() -> None:
    healthcare = load_domain_pack("healthcare")
    assert len(healthcare.fingerprint) == 64
    data = pack(rule())
    first = parse_domain_pack(data, "a")
    same = parse_domain_pack(copy.deepcopy(data), "b")
    changed = parse_domain_pack(pack(rule(patterns=["y"])), "c")
    assert first.fingerprint == same.fingerprint != changed.fingerprint
    # Defaults are part of the canonical form: spelling one out changes nothing.
    explicit = parse_domain_pack(pack(rule(window=120)), "d")
    assert explicit.fingerprint == first.fingerprint


# --------------------------------------------------------------------------
# Uploaded packs
# --------------------------------------------------------------------------


def test_minimal_pack_gets_documented_defaults() -> None:
    parsed = parse_domain_pack(pack(), "upload")
    assert parsed.rules == [] and parsed.extends is None
    assert parsed.pass_threshold is Severity.HIGH
    assert parsed.escalation.judge_on_severity is Severity.MEDIUM
    assert parsed.escalation.settle_on_severity is Severity.CRITICAL
    assert parsed.escalation.classifier_settle_below == 0.15
    assert parsed.escalation.review_judge_ratings == ["unsafe"]
    assert parsed.alerts.severities == [Severity.CRITICAL]


def test_uploaded_pack_extends_a_shipped_pack() -> None:
    healthcare = load_domain_pack("healthcare")
    data = pack(
        rule(id="pii", kind="pii", kinds={"ssn": "critical"}),
        rule(id="cardio.extra"),
        extends="healthcare",
        escalation={"audit_sample_rate": 0.5},
    )
    child = parse_domain_pack(data, "cardio.yaml")
    ids = [r.id for r in child.rules]
    assert ids[: len(healthcare.rules)] == [r.id for r in healthcare.rules]
    assert ids[-1] == "cardio.extra"
    assert next(r for r in child.rules if r.id == "pii").kinds == {"ssn": Severity.CRITICAL}
    # Left-out keys come from the parent; escalation is merged key by key.
    assert child.risk_level == healthcare.risk_level
    assert child.rubric == healthcare.rubric
    assert child.escalation.audit_sample_rate == 0.5
    assert child.escalation.review_deadline_hours == healthcare.escalation.review_deadline_hours
    assert child.fingerprint != healthcare.fingerprint


def test_extends_must_name_a_shipped_pack() -> None:
    assert problems(pack(extends="nope")) == [
        {
            "path": "extends",
            "message": f"unknown parent pack 'nope'; shipped packs: {', '.join(available_domains())}",
        }
    ]


# --------------------------------------------------------------------------
# PackError: source, key path and reason
# --------------------------------------------------------------------------


def test_bad_regex_message_names_file_path_and_reason() -> None:
    data = pack(rule(id="a"), rule(id="b"), rule(id="c"), rule(id="d", patterns=["[abc"]))
    with pytest.raises(PackError) as info:
        parse_domain_pack(data, "healthcare.yaml")
    assert str(info.value) == (
        "healthcare.yaml: rules[3].patterns[0]: invalid regex: unterminated character set at position 4"
    )
    data = pack(rule(id="d", patterns=["ok", "(x"]))
    assert problems(data) == [
        {"path": "rules[0].patterns[1]", "message": "invalid regex: missing ) at position 2"}
    ]


@pytest.mark.parametrize(
    "bad_rule, path",
    [
        (rule("required_when", trigger="(", require="x"), "rules[0].trigger"),
        (rule("required_when", trigger="x", require="[", unless="x"), "rules[0].require"),
        (rule(unless="a{2,1}"), "rules[0].unless"),
        (
            rule("pair_conflict", groups={"a": ["x"], "b": ["y"]}, pairs=[["a", "b"]], unless="("),
            "rules[0].unless",
        ),
        (rule("citation_grounding", citation_pattern="["), "rules[0].citation_pattern"),
        (
            rule("numeric_bound", quantity="plain", units=["x", "("], entities=[{"names": ["n"], "max": 1}]),
            "rules[0].units[1]",
        ),
    ],
)
def test_every_pack_regex_is_compiled_on_load(bad_rule: dict[str, Any], path: str) -> None:
    (problem,) = problems(pack(bad_rule))
    assert problem["path"] == path
    assert problem["message"].startswith("invalid regex: ")


def test_unknown_rule_kind() -> None:
    (problem,) = problems(pack(rule(), rule(kind="nope", id="x")))
    assert problem["path"] == "rules[1].kind"
    assert problem["message"].startswith("unknown rule kind 'nope'; expected one of pattern, required_when")
    assert all(kind in problem["message"] for kind in RULE_KINDS)


def test_missing_rule_kind() -> None:
    data = pack({"id": "x", "category": "c", "severity": "low", "message": "m"})
    assert problems(data)[0]["path"] == "rules[0].kind"


@pytest.mark.parametrize(
    "data, path, message",
    [
        (pack(rule(patern=["x"])), "rules[0].patern", "unknown key"),
        ({**pack(), "rulez": []}, "rulez", "unknown key"),
        (pack(escalation={"judge_on": "high"}), "escalation.judge_on", "unknown key"),
        (pack(rubric=[{"id": "a", "description": "d", "wieght": 1}]), "rubric[0].wieght", "unknown key"),
        (pack(rule(), version="three"), "version", "Input should be a valid integer"),
        (pack(version=0), "version", "Input should be greater than or equal to 1"),
        (pack(rule(window="wide")), "rules[0].window", "Input should be a valid integer"),
        (pack(rule(severity="urgent")), "rules[0].severity", "Input should be 'none', 'low'"),
        (
            pack(rule(severity="none")),
            "rules[0].severity",
            "severity must be one of low, medium, high, critical",
        ),
        (pack(rule(patterns="x")), "rules[0].patterns", "Input should be a valid list"),
        (pack(rule(patterns=[])), "rules[0].patterns", "List should have at least 1 item"),
        (pack(risk_level="extreme"), "risk_level", "Input should be 'low', 'medium', 'high' or 'critical'"),
        (pack(name="Bad Name"), "name", "String should match pattern"),
        ({"version": 1, "display_name": "T"}, "name", "required key is missing"),
        (pack(rule(), rule()), "rules[1].id", "duplicate id 't.pattern'"),
        (
            pack(rule("pii", kinds={"ssn": "high", "passport": "low"})),
            "rules[0].kinds.passport",
            "unknown PII kind",
        ),
        (
            pack(escalation={"classifier_settle_below": 0.9, "classifier_review_above": 0.1}),
            "escalation.classifier_settle_below",
            "must not be above classifier_review_above",
        ),
    ],
)
def test_validation_problems_have_key_paths(data: dict[str, Any], path: str, message: str) -> None:
    found = problems(data)
    assert any(p["path"] == path and p["message"].startswith(message) for p in found), found


def test_kind_specific_checks() -> None:
    numeric = {"entities": [{"names": ["a"], "max": 1}]}
    cases = [
        (rule("numeric_bound", quantity="plain", **numeric), "rules[0].units"),
        (rule("numeric_bound", quantity="mass", units=["x"], **numeric), "rules[0].units"),
        (
            rule(
                "numeric_bound",
                quantity="mass",
                entities=[{"names": ["a"], "max": 1}, {"names": ["A"], "max": 2}],
            ),
            "rules[0].entities[1].names[0]",
        ),
        (rule("pair_conflict", groups=GROUPS, pairs=[["a", "c"]]), "rules[0].pairs[0][1]"),
        (rule("pair_conflict", groups=GROUPS, pairs=[["a", "a"]]), "rules[0].pairs[0]"),
        (rule("citation_grounding", citation_pattern=r"\[\d+\]"), "rules[0].citation_pattern"),
        (rule("rl_bounds"), "rules[0]"),
        (rule("rl_bounds", actions={"v": {"min": 2, "max": 1}}), "rules[0].actions.v.min"),
        (rule("output_shape", checks={"min_chars": {"severity": "low"}}), "rules[0].checks.min_chars.value"),
        (rule("output_shape", checks={"spelling": "low"}), "rules[0].checks.spelling"),
    ]
    for bad_rule, path in cases:
        found = problems(pack(bad_rule))
        assert [p["path"] for p in found] == [path], (bad_rule, found)


def test_several_problems_are_all_reported() -> None:
    data = pack(rule(patterns=["("]), rule(id="b", kind="nope"), version="x")
    paths = sorted(p["path"] for p in problems(data))
    assert paths == ["rules[0].patterns[0]", "rules[1].kind", "version"]


def test_non_mapping_pack_is_refused() -> None:
    assert problems(["not", "a", "mapping"], "x.json") == [
        {"path": "", "message": "a pack must be a mapping of keys to values"}
    ]


def test_pack_model_is_frozen() -> None:
    parsed = parse_domain_pack(pack(rule()), "upload")
    assert isinstance(parsed, DomainPack)
    with pytest.raises(ValueError):
        parsed.name = "other"  # type: ignore[misc]
