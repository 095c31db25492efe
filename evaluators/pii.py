"""Regex-based detectors for common kinds of personal data.

Detectors favour precision over recall: a false "phone number" inside a dose
such as "500 mg" would both corrupt the redacted text and raise spurious
findings, so each pattern requires the separators or structure that real
values have, and numeric kinds are validated beyond the regex (SSN ranges,
Luhn checksum, digit counts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Every kind this module can report, in tie-break priority order.
PII_KINDS: tuple[str, ...] = ("ssn", "credit_card", "email", "phone", "ip_address")


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """A detected value: its kind and character offsets in the scanned text."""

    kind: str
    start: int
    end: int


# US SSN: AAA-GG-SSSS with one consistent separator (dash or space). Areas
# 000, 666 and 900-999, group 00 and serial 0000 are never issued.
_SSN_RE = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])")

_EMAIL_RE = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")

# US/NANP numbers: separators between groups are required so that plain
# numbers ("2024", "5551234567" order ids, "500 mg") never match.
_US_PHONE_RE = re.compile(
    r"(?<![\w+])"
    r"(?:\+?1[ .-]?)?"
    r"(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])"
    r"\d{3}[ .-]\d{4}"
    r"(?![\w])"
)

# International numbers must start with "+" and a country code; the "+"
# may not follow a word character, which rules out arithmetic like "2+2".
_INTL_PHONE_RE = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}(?![\w])")

# Card numbers: either contiguous digits or the printed groupings
# (4-4-4-x, or American Express 4-6-5) with one consistent separator.
_CARD_RE = re.compile(
    r"(?<![\w-])"
    r"(?:\d{13,19}"
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}"
    r"|\d{4}([ -])\d{6}\2\d{4,5})"
    r"(?![\w-])"
)

_DIGIT_RE = re.compile(r"\d")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Four octets, not part of a longer dotted sequence (version strings such as
# 1.2.3.4.5 are rejected).
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_valid(number: str) -> bool:
    """Luhn checksum over the digits of ``number`` (separators ignored)."""
    digits = _digits(number)
    if not digits:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _find_ssn(text: str) -> Iterable[PiiMatch]:
    for m in _SSN_RE.finditer(text):
        yield PiiMatch("ssn", m.start(), m.end())


def _find_email(text: str) -> Iterable[PiiMatch]:
    for m in _EMAIL_RE.finditer(text):
        yield PiiMatch("email", m.start(), m.end())


def _find_phone(text: str) -> Iterable[PiiMatch]:
    for m in _US_PHONE_RE.finditer(text):
        yield PiiMatch("phone", m.start(), m.end())
    for m in _INTL_PHONE_RE.finditer(text):
        # E.164 numbers have at most 15 digits; fewer than 8 is not a
        # dialable international number.
        if 8 <= len(_digits(m.group())) <= 15:
            yield PiiMatch("phone", m.start(), m.end())


def _find_credit_card(text: str) -> Iterable[PiiMatch]:
    for m in _CARD_RE.finditer(text):
        value = m.group()
        if 13 <= len(_digits(value)) <= 19 and luhn_valid(value):
            yield PiiMatch("credit_card", m.start(), m.end())


def _find_ip_address(text: str) -> Iterable[PiiMatch]:
    for m in _IPV4_RE.finditer(text):
        yield PiiMatch("ip_address", m.start(), m.end())


_DETECTORS = (
    _find_ssn,
    _find_credit_card,
    _find_email,
    _find_phone,
    _find_ip_address,
)


def detect_pii(text: str) -> list[PiiMatch]:
    """Return non-overlapping PII matches in ``text``, ordered by position.

    When matches overlap, the longer one wins; on equal length the earlier
    one wins, then the kind listed first in ``PII_KINDS``.
    """
    # Every kind but email needs a digit, and email needs "@": skipping
    # detectors that cannot match keeps plain prose cheap.
    has_digit = _DIGIT_RE.search(text) is not None
    candidates = [
        match
        for detector in _DETECTORS
        if (has_digit if detector is not _find_email else "@" in text)
        for match in detector(text)
    ]
    priority = {kind: index for index, kind in enumerate(PII_KINDS)}
    candidates.sort(key=lambda m: (-(m.end - m.start), m.start, priority[m.kind]))

    kept: list[PiiMatch] = []
    for match in candidates:
        if all(match.end <= other.start or match.start >= other.end for other in kept):
            kept.append(match)
    kept.sort(key=lambda m: m.start)
    return kept


def placeholder(kind: str) -> str:
    """Replacement text for a kind, e.g. ``"[CREDIT_CARD]"``."""
    return f"[{kind.upper()}]"


def redact(text: str, matches: Iterable[PiiMatch]) -> str:
    """Replace each (non-overlapping) match in ``text`` with its placeholder."""
    parts: list[str] = []
    cursor = 0
    for match in sorted(matches, key=lambda m: m.start):
        if match.start < cursor:
            # Overlapping input: the earlier replacement already covers it.
            continue
        parts.append(text[cursor : match.start])
        parts.append(placeholder(match.kind))
        cursor = match.end
    parts.append(text[cursor:])
    return "".join(parts)
