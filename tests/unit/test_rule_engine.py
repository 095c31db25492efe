"""The rule engine itself: time limits, scan limits, the prefilters and the
other speed-ups (which must never change results), and finding hygiene."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest
import regex

from domains import DomainPack, load_domain_pack, parse_domain_pack
from evaluators.rules import evaluate_rules
from evaluators.rules.base import TraceScan
from evaluators.rules.prefilter import LiteralScanner, WordIndex, prefilter_for
from evaluators.rules.regexes import PackRegex, folds_safely, split_alternatives
from evaluators.sanitize import sanitise
from evaluators.types import NormalisedTrace, Severity


def rule(kind: str = "pattern", **keys: Any) -> dict[str, Any]:
    return {"id": f"t.{kind}", "kind": kind, "category": "c", "severity": "medium", "message": "m", **keys}


def make_pack(*rules: dict[str, Any]) -> DomainPack:
    return parse_domain_pack({"name": "t", "version": 1, "display_name": "T", "rules": list(rules)}, "test")


def evaluate(pack: DomainPack, output: str, input_text: str = "question") -> list[tuple[str, Severity]]:
    trace, _ = sanitise(input_text, output)
    return [(f.rule_id, f.severity) for f in evaluate_rules(trace, pack).findings]


# --------------------------------------------------------------------------
# Time limits
# --------------------------------------------------------------------------


def test_catastrophic_pattern_times_out_and_other_rules_still_run() -> None:
    pack = make_pack(
        rule(id="slow", patterns=[r"(a|aa)+$"]),
        rule(id="fast", patterns=[r"\bb\b"]),
    )
    trace, _ = sanitise("q", "a" * 40 + " b")
    started = time.perf_counter()
    result = evaluate_rules(trace, pack)
    assert time.perf_counter() - started < 2
    assert [(f.rule_id, f.severity) for f in result.findings] == [
        ("engine.rule_timeout", Severity.MEDIUM),
        ("fast", Severity.MEDIUM),
    ]
    assert "slow" in result.findings[0].message
    assert result.max_severity is Severity.MEDIUM


def test_nested_quantifier_example_finishes_quickly() -> None:
    # The regex module's own safeguards settle (a+)+$ on this input without
    # needing the time limit; either way it must not hang.
    pack = make_pack(rule(id="nested", patterns=[r"(a+)+$"]))
    started = time.perf_counter()
    findings = evaluate(pack, "a" * 40 + "b")
    assert time.perf_counter() - started < 1
    assert findings in ([], [("engine.rule_timeout", Severity.MEDIUM)])


@pytest.mark.parametrize(
    "slow_rule",
    [
        rule("required_when", trigger=r"x", require=r"(a|aa)+$"),
        rule("pattern", patterns=[r"x"], unless=r"(a|aa)+$", window=1000),
        rule("pair_conflict", groups={"a": ["x"], "b": ["y"]}, pairs=[["a", "b"]], unless=r"(a|aa)+$"),
        rule("citation_grounding", citation_pattern=r"((a|aa)+)$"),
    ],
)
def test_every_pack_regex_runs_under_the_time_limit(slow_rule: dict[str, Any]) -> None:
    started = time.perf_counter()
    trace, _ = sanitise("q", "x y " + "a" * 40 + "b", rag_contexts=["context"])
    findings = evaluate_rules(trace, make_pack(slow_rule)).findings
    assert time.perf_counter() - started < 2
    assert [f.rule_id for f in findings] == ["engine.rule_timeout"]


# --------------------------------------------------------------------------
# Scan limits
# --------------------------------------------------------------------------


def test_rules_scan_at_most_max_scan_chars() -> None:
    pack = make_pack(
        rule(id="near", patterns=["needle"], max_scan_chars=1000),
        rule("pii", id="p", max_scan_chars=1000),
    )
    assert evaluate(pack, "x" * 500 + " needle 123-45-6789") == [
        ("near", Severity.MEDIUM),
        ("p.ssn", Severity.MEDIUM),
    ]
    assert evaluate(pack, "x" * 5000 + " needle 123-45-6789") == []


def test_tier0_still_redacts_beyond_the_scan_limit() -> None:
    _, tier0 = sanitise("q", "x" * 200_000 + " 123-45-6789")
    assert tier0.redacted_output.endswith(" <SSN>")


@pytest.mark.parametrize(
    "output",
    [
        "a" * 5_000_000,
        "1" * 5_000_000,
        "@" * 2_000_000,
        "chest pain " * 400_000,
        "tylenol 1000 mg every 1 hours. " * 150_000,
    ],
)
def test_huge_outputs_finish_quickly(output: str) -> None:
    pack = load_domain_pack("healthcare")
    started = time.perf_counter()
    trace, _ = sanitise("question", output)
    evaluate_rules(trace, pack)
    assert time.perf_counter() - started < 5  # typically well under one second
    scan = TraceScan(trace)
    for each in pack.rules:
        scan.start_rule()
        started = time.perf_counter()
        each.evaluate(scan)
        assert time.perf_counter() - started < 1, each.id


# --------------------------------------------------------------------------
# Prefilters, splitting and case folding never change results
# --------------------------------------------------------------------------


def _shipped_regexes() -> list[tuple[str, bool]]:
    sources: list[tuple[str, bool]] = []
    for name in ("generic", "healthcare"):
        for each in load_domain_pack(name).rules:
            for attr in ("patterns", "trigger", "require", "unless", "citation_pattern"):
                value = getattr(each, attr, None)
                for source in value if isinstance(value, list) else [value]:
                    if isinstance(source, str):
                        sources.append((source, each.ignore_case))
    return sources


TRICKY = [
    r"\bchest\s+(?:pain|pressure)\b",
    r"(?:take|taking)\s+\d+\s*(?:mg|g)\b",
    r"call(?:ing)?\s+(?:9-?1-?1|an?\s+ambulance)",
    r"doctor(?:'s|s')?\s+advice",
    r"[A-Z]{2,}\d",
    r"\bfoo\b|bar\w+|(?:baz|qux)+",
    r"(?<!\w)key\b|\bKEY-\d+",
    r"x{2,}|y?z",
    r"\b(?:(?:go|get)\s+to\s+(?:the\s+)?(?:er|hospital))\b",
    r"(?i:Stop)\s+now",
    r"(?-i:Stop)\s+now",
    r"a|b(?:c|d)e|(?:f|g)h",
    r"[[:alpha:]]+ing\b",
    r"\x41BC",
    r"(?:chest){e<=1}\s+pain",
    # "Does not mention", run as a search for what it must not mention.
    r"\A(?![\s\S]{0,30}?\bchest\s+pain\b)",
    r"\bfoo|\A(?![\s\S]{0,12}?(?:zz|\bstop))|now\b",
    r"\A(?![\s\S]{0,50}?\A(?![\s\S]{0,5}?call))",
]

SAMPLES = [
    "I have CHEST PAIN and need help; call 911 or calling an ambulance now.",
    "Take 500 mg now. taking 2 g later. TAKE 1mg",
    "The doctor's advice and the doctors' advice differ from Doctor Advice.",
    "ABC1 and AB2 and KEY-42 and a key, keyboard; foo barbaz quxqux",
    "xxx yz z; go to the ER, get to hospital, Go To The Hospital",
    "Stop now! stop now. STOP NOW; a bce bde gh fh",
    "Singing and dancing, ABC abc; chast pain, chest pan",
    "Ça va? Chest pain in Zürich — call 911. ſtop now. İstanbul KEY-7",
    "",
]


def test_prefilters_splitting_and_folding_match_the_plain_regex() -> None:
    rng = random.Random(5)
    texts = list(SAMPLES)
    words = " ".join(SAMPLES).split()
    texts += [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(150)]
    sources = (
        _shipped_regexes() + [(source, True) for source in TRICKY] + [(source, False) for source in TRICKY]
    )
    for source, ignore_case in sources:
        packed = PackRegex(source, ignore_case)
        plain = regex.compile(source, regex.IGNORECASE if ignore_case else 0)
        # Prefilters are answered regex by regex, or by a pack-wide scanner.
        regexes = packed.with_inner()
        literals = {literal for each in regexes for literal in each.substring_literals()}
        scanner = LiteralScanner(literals, [each.routes() for each in regexes])
        for text, scanner_or_none in itertools.product(texts, (None, scanner)):
            trace = NormalisedTrace(input="", output=text)
            scan = TraceScan(trace, scanner_or_none)
            scan.start_rule()
            expected = [m for m in plain.finditer(text) if m.end() > m.start()]
            got = list(packed.finditer(scan, "output", 100_000))
            assert bool(got) == bool(expected), (source, text)
            if expected:
                assert got[0].start() == expected[0].start(), (source, text)
            assert packed.exists(scan, "output", 100_000) == (plain.search(text) is not None), (source, text)
            for low in range(0, len(text), 17):
                high = min(len(text), low + 40)
                # A match of the text that lies within the window.
                window = any(
                    m.end() <= high
                    for m in plain.finditer(text, low, min(len(text), high + 64))
                    if m.start() <= high
                )
                assert packed.exists(scan, "output", 100_000, low, high) == window, (source, text, low)


def test_prefilter_literal_choice() -> None:
    literals = prefilter_for(r"\b(?:take|taking)\s+(?:[\w-]+\s+){0,5}?\d+\s*(?:mg|g)\b")
    assert literals is not None
    assert sorted((lit.text, lit.kind) for lit in literals.literals) == [
        ("take", "whole"),
        ("taking", "whole"),
    ]
    assert prefilter_for(r"(?:chest){e<=1}") is None  # fuzzy matching: no prefilter
    assert prefilter_for(r"\d+") is None  # nothing literal to require

    def chosen(source: str) -> list[tuple[str, str]]:
        found = prefilter_for(source)
        assert found is not None
        return sorted((lit.text, lit.kind) for lit in found.literals)

    # After an optional group that ends with a space, a word still starts
    # at a word boundary, whether the group matched or not.
    assert chosen(r"\bher\s+(?:home\s+|public\s+)?ip\b\s*\d") == [("ip", "whole")]
    assert chosen(r"\b(?:a\s+)+ip\b") == [("ip", "whole")]
    # Not so when the group can end inside a word, or nothing bounds it.
    assert chosen(r"\btake\s*(?:\w+\s+)?tylenol\b") == [("tylenol", "substring")]
    assert chosen(r"\bher\s+(?:home|public)?ipod\b") == [("ipod", "substring")]


def test_word_index() -> None:
    index = WordIndex("Chest-pain, CALL 911!")
    assert index.words == frozenset({"chest", "pain", "call", "911"})
    assert index.simple_case
    # Non-ASCII text gets words too: both engines' word runs, so whole-word
    # checks stay sound where their notions of a word character differ.
    unicode = WordIndex("Zürich’s KIDNEY café")
    assert not unicode.simple_case  # "ü" and "é" have case
    assert WordIndex("It’s — “quoted”").simple_case  # curly quotes and dashes have none
    assert not WordIndex("5 µg").simple_case  # "µ".upper() is Greek "Μ"
    assert {"zürich", "s", "kidney", "café"} <= unicode.words
    assert "kid" not in unicode.words  # a word, not a substring of one
    combining = WordIndex("cafe\u0301 x²")  # "e" + combining accent; superscript two
    # The standard library splits at the combining mark and keeps "x²";
    # the regex module does the opposite: the union holds every reading.
    assert {"cafe", "cafe\u0301", "x", "x²"} <= combining.words


def test_non_ascii_text_is_checked_like_ascii_text() -> None:
    from domains import load_domain_pack
    from evaluators.rules import evaluate_rules
    from evaluators.sanitize import sanitise

    pack = load_domain_pack("healthcare")
    # "kidney" must not read as "kid" (a child) whatever the apostrophes are.
    for apostrophe in ("'", "’"):
        output = f"For your kidney stones, take 1000 mg of Tylenol every 6 hours; it{apostrophe}s fine."
        trace, _ = sanitise("Kidney stone pain?", output)
        ids = [f.rule_id for f in evaluate_rules(trace, pack).findings]
        assert "healthcare.max_daily_dose" not in ids, (apostrophe, ids)


def test_split_alternatives() -> None:
    assert split_alternatives(r"\b(?:a|b\s+c)\b") == [r"\ba\b", r"\bb\s+c\b"]
    assert split_alternatives(r"x|(?:y|z)w") == ["x", "yw", "zw"]
    assert split_alternatives(r"(?:a|b)+c") == [r"(?:a|b)+c"]  # a quantified group is kept
    assert split_alternatives(r"[|]|x") == ["[|]", "x"]
    assert split_alternatives(r"(a)|\1") == [r"(a)|\1"]  # back-reference: not split


@pytest.mark.parametrize(
    "source, safe",
    [
        (r"\bchest\s+pain\W", True),
        (r"[a-z]+\d", True),
        (r"[A-Z]", False),
        (r"\x41", False),
        (r"(?-i:abc)", False),
        (r"\p{Lu}", False),
        (r"[[:upper:]]", False),
    ],
)
def test_folds_safely(source: str, safe: bool) -> None:
    assert folds_safely(source) is safe


# --------------------------------------------------------------------------
# Finding hygiene
# --------------------------------------------------------------------------


def test_no_finding_message_contains_trace_text() -> None:
    markers = [f"Zq{n}xv" for n in range(12)]
    output = (
        f"{markers[0]} you definitely have {markers[1]}itis. Take 1000 mg of Tylenol every 3 hours. "
        f"SSN 123-45-6789, mail {markers[2]}@example.com, MRN {markers[3][:2]}1234567. "
        f"You can take ibuprofen with warfarin. Stop taking your {markers[4]} insulin. "
        f"As an AI language model, password: {markers[5]}{markers[5]}. "
        f"Give your {markers[6]} 6-year-old aspirin. [insert {markers[7]}]"
    )
    input_text = f"I have crushing chest pain {markers[8]}. I want to kill myself {markers[9]}."
    for domain in ("generic", "healthcare"):
        trace, _ = sanitise(input_text, output, {"finish_reason": "length"})
        findings = evaluate_rules(trace, load_domain_pack(domain)).findings
        assert len(findings) >= 5
        for finding in findings:
            assert not any(marker.lower() in finding.message.lower() for marker in markers), finding
            # Numbers and brand names from the trace (the messages name table rows).
            for trace_text in ("123-45", "6789", "1234567", "1000", "Tylenol"):
                assert trace_text not in finding.message, finding


def test_findings_point_at_the_evidence() -> None:
    output = "Please take 1000 mg of Tylenol every 3 hours."
    trace, _ = sanitise("q", output)
    for finding in evaluate_rules(trace, load_domain_pack("healthcare")).findings:
        for span in finding.spans:
            assert 0 <= span.start < span.end <= len(output)
