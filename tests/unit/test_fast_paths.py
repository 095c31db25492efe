"""The shortcuts Tier 0 and Tier 1 take for speed find exactly what the
plain scans they stand in for find.

PII detection and the dose reader first look for candidates in a one-byte-
per-character copy of the text (``_digit_shadow``, ``_amount_classes``) and
fall back to scanning the text itself when that copy cannot be made. Each
test runs the same generated texts both ways: a change to an exact pattern
that its shortcut does not follow shows up here as a difference. Likewise
the pack-wide literal scanner against each regex's own prefilter check, and
the quick case folds against ``str.casefold``.
"""

from __future__ import annotations

import random
import re

import pytest

from domains import available_domains, load_domain_pack
from evaluators import pii
from evaluators.folding import fold_case
from evaluators.rules import numeric_bound
from evaluators.rules.base import TraceScan
from evaluators.rules.prefilter import WordIndex
from evaluators.rules.regexes import PackRegex
from evaluators.sanitize import sanitise
from evaluators.types import NormalisedTrace

# Pieces that put every detector and the dose reader to work, with near
# misses, separators and non-ASCII characters between them.
PIECES = [
    "123-45-6789",
    "078-05-1120",
    "4111 1111 1111 1111",
    "4111-1111-1111-1112",
    "5500005555555559",
    "(555) 123-4567",
    "555.123.4567",
    "+1 415 555 0100",
    "+44 20 7946 0958",
    "+12",
    "1-800-222-1222",
    "192.168.1.20",
    "8.8.8.8",
    "300.1.1.1",
    "10.0.0",
    "MRN 00482913",
    "mrn: 12-34-56",
    "MRN 123",
    "DOB: 03/14/1962",
    "date of birth 1962-04-12",
    "born Apr 12, 1962",
    "Maria Lopez (04.12.1962)",
    "1200 Oak Street",
    "42 N Main St",
    "7th Avenue",
    "a@b.org",
    "maria.lopez@example.com",
    "500 mg",
    "500-mg",
    "250 - mg",
    "500\u2009mg",
    "1,000mg",
    "2.5 g",
    "325 mg every 4 hours",
    "two grams",
    "1000 mg/kg",
    "5 mg/ml",
    "650mcg",
    "3 tablets of 500 mg",
    "2 x 500 mg",
    "every 4-6 hours",
    "up to 4 g a day",
    "do not exceed 3000 mg",
    "acetaminophen",
    "Tylenol",
    "ibuprofen",
    "warfarin",
    "my 5yo",
    "7-year-old",
    "y/o",
    "baby",
    "can cause liver damage",
    "12",
    "3.",
    "1.5",
    "x",
    "—",
    "’",
    "°",
    "µg",
    "İ",
    "٣",
    "\u2007",
    "\x1c",
    "é",
    ".",
    ",",
    "!",
    "?",
    "\n",
    "\n\n",
    "(",
    "+",
    "-",
    "/",
    " ",
    "  ",
    "\t",
]


def generated_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        pieces = [rng.choice(PIECES) for _ in range(rng.randint(1, 25))]
        texts.append("".join(piece + rng.choice(["", " ", " ", ", ", ". ", "\n"]) for piece in pieces))
    return texts


def test_pii_shadow_finds_what_the_full_scan_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = generated_texts(seed=1, count=3000)
    shadowed = [pii.detect_pii(text) for text in texts]
    # The shadow was used for most texts, so the comparison means something.
    assert sum(pii._digit_shadow(text) is not None for text in texts) > 2000
    monkeypatch.setattr(pii, "_digit_shadow", lambda text: None)
    for text, expected in zip(texts, shadowed, strict=True):
        assert pii.detect_pii(text) == expected, text


def test_dose_reader_shortcut_finds_what_the_full_scan_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = load_domain_pack("healthcare")
    rule = next(rule for rule in pack.rules if rule.kind == "numeric_bound")
    texts = generated_texts(seed=2, count=3000)

    def findings(text: str) -> list[dict[str, object]]:
        trace, _ = sanitise("How much can I take?", text)
        scan = TraceScan(trace, pack.literal_scanner)
        scan.start_rule()
        return [finding.model_dump() for finding in rule.evaluate(scan)]

    with_shortcut = [findings(text) for text in texts]
    assert sum(bool(found) for found in with_shortcut) > 100
    monkeypatch.setattr(numeric_bound, "_amount_classes", lambda text: None)
    for text, expected in zip(texts, with_shortcut, strict=True):
        assert findings(text) == expected, text


def test_sentence_around_agrees_with_splitting_the_whole_text() -> None:
    for text in generated_texts(seed=3, count=500):
        ends = [match.end() for match in numeric_bound._SENTENCE_END_RE.finditer(text)]
        for position in range(len(text)):
            start = max((end for end in ends if end <= position), default=0)
            end = min((end for end in ends if end > position), default=len(text))
            assert numeric_bound._sentence_around(text, position) == (start, end), (text, position)


def test_frequency_pattern_lead_changes_no_match() -> None:
    # The same pattern without the leading look-ahead that lets the engine
    # skip positions.
    lead = r"(?=[ehotfsnapdi/\d])(?:(?<!\w)|(?=/))(?:"
    source = numeric_bound._FREQUENCY_RE.pattern
    assert source.startswith(lead) and source.endswith(")")
    plain = re.compile(source[len(lead) : -1])
    for text in generated_texts(seed=4, count=1000):
        lowered = text.lower()
        fast = [
            match.groupdict() | {"span": match.span()}
            for match in numeric_bound._FREQUENCY_RE.finditer(lowered)
        ]
        slow = [match.groupdict() | {"span": match.span()} for match in plain.finditer(lowered)]
        assert fast == slow, text


def test_pack_scanner_allows_the_parts_each_regex_allows_on_its_own() -> None:
    """The scanner works out the possible parts of every regex of a pack in
    one pass (one bit mask over all their parts, clauses included); each
    regex's own check must come to the same parts."""
    words = [word for text in generated_texts(seed=5, count=50) for word in text.split()]
    for name in available_domains():
        pack = load_domain_pack(name)
        regexes = [
            inner
            for rule in pack.rules
            for value in vars(rule).values()
            for item in (value if isinstance(value, list | tuple) else (value,))
            if isinstance(item, PackRegex)
            for inner in item.with_inner()
        ]
        # Texts made of the pack's own literals, so that most parts are
        # possible on some texts and not on others.
        literals = sorted(pack.literal_scanner.literals)
        rng = random.Random(name)
        texts = [
            " ".join(rng.choice(literals + words) for _ in range(rng.randint(1, 60))) for _ in range(150)
        ]
        allowed = 0
        for text in texts:
            with_scanner = WordIndex(text, pack.literal_scanner)
            alone = WordIndex(text)
            for each in regexes:
                parts = each._possible_parts(with_scanner)
                assert parts == each._possible_parts(alone), (name, each.source, text)
                allowed += len(parts)
        assert allowed > 0


def test_quick_case_folds_are_the_case_fold() -> None:
    texts = [*generated_texts(seed=6, count=2000), "Straße İstanbul ǅ ﬁ ΣΑΣ", "“Quoted” — 38 °C’s"]
    simple = 0
    for text in texts:
        index = WordIndex(text)
        assert index.text == text.casefold(), text
        if index.simple_case:
            simple += 1
            # What a scan of a simple-case text reuses as its folded copy.
            assert index.text == fold_case(text), text
            scan = TraceScan(NormalisedTrace(input="", output=text))
            scan.index("output", 100_000)
            assert scan.folded("output", 100_000) == fold_case(text), text
    assert 0 < simple < len(texts)


def test_rules_with_the_same_pattern_share_one_compiled_regex() -> None:
    pack = load_domain_pack("healthcare")
    referrals = [rule for rule in pack.rules if rule.id.startswith("healthcare.emergency_referral")]
    assert len(referrals) == 2 and referrals[0].require == referrals[1].require
    assert referrals[0]._require is referrals[1]._require
    # Asked twice about one text, the second answer comes from the scan.
    scan = TraceScan(NormalisedTrace(input="", output="Chest pain: call 911 now."), pack.literal_scanner)
    scan.start_rule()
    assert referrals[0]._require.exists(scan, "output", 100_000)
    assert (id(referrals[0]._require), "exists") in scan.index("output", 100_000).cache
    assert referrals[1]._require.exists(scan, "output", 100_000)
