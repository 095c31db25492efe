"""Unit tests for the shared types and Tier 0 (sanitise)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from evaluators.sanitize import EMPTY_OUTPUT, normalise, sanitise, unknown_domain_finding
from evaluators.types import Finding, Severity

# --------------------------------------------------------------------------
# Severity and findings
# --------------------------------------------------------------------------


def test_severity_rank_and_ordering_use_rank_not_alphabet() -> None:
    assert [s.rank for s in Severity] == [0, 1, 2, 3, 4]
    assert Severity.CRITICAL > Severity.HIGH  # alphabetically "critical" < "high"
    assert Severity.MEDIUM >= "medium"
    assert Severity.LOW < Severity.MEDIUM
    assert Severity.max_of([]) is Severity.NONE
    assert Severity.max_of([Severity.LOW, Severity.CRITICAL, Severity.HIGH]) is Severity.CRITICAL
    assert Severity.max_of(["medium", "low"]) is Severity.MEDIUM


def test_finding_is_frozen() -> None:
    finding = Finding(rule_id="x", category="y", severity=Severity.LOW, message="m")
    with pytest.raises(ValidationError):
        finding.severity = Severity.HIGH  # type: ignore[misc]


def test_span_fields_cover_rl_and_rag_evidence() -> None:
    finding = Finding(
        rule_id="x",
        category="y",
        severity=Severity.LOW,
        message="m",
        spans=[
            {"field": "rl_episode", "start": 3, "end": 4},
            {"field": "rag_contexts", "start": 0, "end": 1},
        ],
    )
    assert [span.field for span in finding.spans] == ["rl_episode", "rag_contexts"]
    with pytest.raises(ValidationError):
        Finding(
            rule_id="x",
            category="y",
            severity="low",
            message="m",
            spans=[{"field": "x", "start": 0, "end": 1}],
        )


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------


def test_normalise_line_endings_controls_nfc_and_trailing_space() -> None:
    raw = "a\r\nb\rc\x00d\x07\te\u0301  \n\n "
    assert normalise(raw) == "a\nb\ncd\t\u00e9"


def test_normalise_ascii_fast_path_removes_controls() -> None:
    assert normalise("x\x00y\x1bz\x7f\tq\n") == "xyz\x7f\tq"


# --------------------------------------------------------------------------
# sanitise
# --------------------------------------------------------------------------


def test_short_valid_answer_is_clean() -> None:
    trace, tier0 = sanitise("What is 2+2?", "4")
    assert tier0.valid
    assert tier0.findings == []
    assert tier0.pii_counts == {}
    assert (trace.input, trace.output) == ("What is 2+2?", "4")
    assert trace.metadata == {} and trace.rag_contexts == [] and trace.rl_episode is None


@pytest.mark.parametrize("output", ["", "   ", "\n\t\n", "\x00\x01"])
def test_empty_output_is_invalid_with_one_high_finding(output: str) -> None:
    _, tier0 = sanitise("question", output)
    assert not tier0.valid
    assert tier0.findings == [EMPTY_OUTPUT]
    assert (EMPTY_OUTPUT.rule_id, EMPTY_OUTPUT.severity) == ("input.empty_output", Severity.HIGH)


def test_truncation_is_not_a_tier0_finding_any_more() -> None:
    _, tier0 = sanitise("question", "The answer is", {"finish_reason": "length"})
    assert tier0.valid and tier0.findings == []


def test_tier0_redacts_both_fields_with_typed_masks_and_counts_pii() -> None:
    trace, tier0 = sanitise(
        "My SSN is 123-45-6789, email me at jane.doe@example.com",
        "Card 4111 1111 1111 1111 noted; we will call (555) 123-4567 from 10.0.0.1. "
        "MRN: 00482913, DOB: 03/14/1962, home 12 Oak Street, Springfield, IL 62704.",
    )
    assert tier0.redacted_input == "My SSN is <SSN>, email me at <EMAIL>"
    assert tier0.redacted_output == (
        "Card <CREDIT_CARD> noted; we will call <PHONE> from <IP_ADDRESS>. "
        "MRN: <MRN>, DOB: <PERSON_DOB>, home <ADDRESS>."
    )
    assert tier0.pii_counts == {
        "ssn": 1,
        "email": 1,
        "credit_card": 1,
        "phone": 1,
        "ip_address": 1,
        "mrn": 1,
        "dob": 1,
        "address": 1,
    }
    assert tier0.findings == []
    # The normalised trace keeps the original text for Tier 1.
    assert "123-45-6789" in trace.input


def test_sanitise_keeps_metadata_and_normalises_rag_contexts() -> None:
    trace, _ = sanitise(
        "q",
        "a",
        {"finish_reason": "stop"},
        rag_contexts=[
            "first\r\n",
            {"text": "second", "id": "doc-2"},
            {"content": "third"},
            {"x": 1},
            None,
            7,
        ],
    )
    assert trace.metadata == {"finish_reason": "stop"}
    # Contexts without text keep their place so that citation indices hold.
    assert trace.rag_contexts == ["first", "second", "third", "", "", ""]
    assert trace.rag_source_ids == [None, "doc-2", None, None, None, None]


def test_sanitise_keeps_rl_episode_and_turns_other_values_into_an_empty_one() -> None:
    episode = {"task_completed": True, "steps": []}
    trace, _ = sanitise("q", "a", rl_episode=episode)
    assert trace.rl_episode == episode
    trace, _ = sanitise("q", "a", rl_episode=[1, 2, 3])
    assert trace.rl_episode == {}


def test_unknown_domain_finding_is_high_and_does_not_echo_the_domain() -> None:
    domain = "secret-project-<script>"
    finding = unknown_domain_finding(domain)
    assert (finding.rule_id, finding.category, finding.severity) == (
        "input.unknown_domain",
        "input",
        Severity.HIGH,
    )
    assert domain not in finding.message and "secret" not in finding.message
    assert finding.spans == []
