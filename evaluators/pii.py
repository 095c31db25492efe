"""Regex-based detectors for common kinds of personal data.

Detectors favour precision over recall: a false "phone number" inside a dose
such as "500 mg" would both corrupt the redacted text and raise spurious
findings, so each pattern requires the separators or structure that real
values have, and numeric kinds are validated beyond the regex (SSN ranges,
Luhn checksum, digit counts, IPv4 octets). Kinds that look like ordinary
numbers or dates (medical record numbers, dates of birth) are reported only
next to a label ("MRN", "DOB", "date of birth") or, for a birth date, in
parentheses right after a name.

Three things keep detection cheap and safe on any text:

* Each pattern starts with a plain character or class (a digit, "@", "+",
  "(", an upper-case letter), and its boundary look-behind comes right
  after that character. The ``re`` engine can then jump from candidate to
  candidate instead of trying a match at every position, which is most of
  the cost on ordinary prose; all kinds that start with a digit share one
  such scan.
* Every look-behind fails inside a run of the characters the pattern would
  consume, so a scan stays linear even on pathological text (megabytes of
  digits, letters or "@").
* Even so, a scan for a character class (any digit) costs several
  nanoseconds per character. Detectors that need digits therefore first
  look at a byte "shadow" of the text in which every digit is "0": a scan
  for that one byte is many times faster, and loose patterns over it find
  the few places where a detector could match (or show that none can).
  Only those places are then checked with the exact patterns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from evaluators.folding import fold_case

# Every kind this module can report, in tie-break priority order.
PII_KINDS: tuple[str, ...] = (
    "ssn",
    "credit_card",
    "mrn",
    "email",
    "phone",
    "dob",
    "address",
    "ip_address",
)

# Typed masks used by Tier 0 redaction. "dob" is masked as PERSON_DOB so that
# a reader of the redacted text knows a person's birth date stood there.
MASKS: dict[str, str] = {
    "ssn": "<SSN>",
    "credit_card": "<CREDIT_CARD>",
    "mrn": "<MRN>",
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "dob": "<PERSON_DOB>",
    "address": "<ADDRESS>",
    "ip_address": "<IP_ADDRESS>",
}


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """A detected value: its kind and character offsets in the scanned text."""

    kind: str
    start: int
    end: int


# The domain part of an address, found from its "@" (a plain character the
# engine can search for); the local part is read backwards in Python.
_EMAIL_DOMAIN_RE = re.compile(r"@(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
_EMAIL_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_EMAIL_BOUNDARY_CHARS = frozenset(".%+-")
# RFC 5321 allows 64 characters; a longer run is not an address.
_EMAIL_LOCAL_MAX = 64

# Kinds that start with a digit are found in one scan: the pattern consumes
# the first digit of a number that does not follow a word character (the
# only positions the engine has to try), then each kind looks ahead from
# there and captures its own end. A number can be several kinds at once
# ("1-800-555-1234" is read as a phone; the longest candidate wins later).
#
# US SSN: AAA-GG-SSSS with one consistent separator (dash or space). Areas
# 000, 666 and 900-999, group 00 and serial 0000 are never issued.
_SSN = r"(?<!-\d)\d\d(?<!000)(?<!666)(?<!9\d\d)(?P<ssn_sep>[- ])(?!00)\d{2}(?P=ssn_sep)(?!0000)\d{4}(?![\w-])"
# Card numbers: contiguous digits or the printed groupings (4-4-4-x, or
# American Express 4-6-5) with one consistent separator.
_CARD = (
    r"(?<!-\d)(?:\d{12,18}"
    r"|\d{3}(?P<card_sep>[ -])\d{4}(?P=card_sep)\d{4}(?P=card_sep)\d{1,7}"
    r"|\d{3}(?P<amex_sep>[ -])\d{6}(?P=amex_sep)\d{4,5})"
    r"(?![\w-])"
)
# US/NANP numbers: separators between groups are required so that plain
# numbers ("2024", "5551234567" order ids, "500 mg") never match.
_US_PHONE_TAIL = r"\d{3}[ .-]\d{4}(?!\w)"
_US_AREA = rf"(?:\([2-9]\d{{2}}\)[ .-]?|[2-9]\d{{2}}[ .-]){_US_PHONE_TAIL}"
_PHONE = rf"(?<!\+\d)(?:(?<=1)[ .-]?{_US_AREA}|(?<=[2-9])\d{{2}}[ .-]{_US_PHONE_TAIL})"
# US-style street address: number, up to four capitalised words (or an
# ordinal such as "5th"), a street suffix, then optionally a unit and
# "City, ST 12345". Lower-case prose ("take 2 tablets a day") never matches.
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace"
    r"|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Close)"
)
_ADDRESS = (
    r"(?<![.,/-]\d)\d{0,5}[A-Za-z]?\s+"
    r"(?:(?:N|S|E|W|North|South|East|West)\.?\s+)?"
    r"(?:(?:[A-Z][a-z]+|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    rf"{_STREET_SUFFIX}\b\.?"
    r"(?:\s+(?:NW|NE|SW|SE)\b)?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit)\.?\s*#?\s*\w{1,6}\b)?"
    r"(?:,\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2},?\s+[A-Z]{2}(?:\s+\d{5}(?:-\d{4})?)?\b)?"
)
# Four dot-separated groups of one to three digits, not part of a longer
# dotted sequence (version strings such as 1.2.3.4.5 are rejected); each
# group is then checked to be an octet (0-255, no leading zero).
_IPV4 = r"(?<!\.\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)"

_NUMERIC_KINDS = ("ssn", "credit_card", "phone", "address", "ip_address")
_NUMERIC_RE = re.compile(
    r"\d(?<!\w\d)"
    + "".join(
        f"(?:(?=(?P<{kind}>{pattern}))|)"
        for kind, pattern in zip(_NUMERIC_KINDS, (_SSN, _CARD, _PHONE, _ADDRESS, _IPV4), strict=True)
    )
    # Only positions where some kind matched are reported.
    + "(?(ssn)|(?(credit_card)|(?(phone)|(?(address)|(?(ip_address)|(?!))))))"
)

# Phone numbers that start with "+" or "(" (a plain character the engine
# searches for quickly); the "+" may not follow a word character, which
# rules out arithmetic like "2+2".
_PLUS_ONE_PHONE_RE = re.compile(rf"\+(?<![\w+]\+)1[ .-]?{_US_AREA}")
_PAREN_PHONE_RE = re.compile(rf"\((?<![\w+]\()[2-9]\d{{2}}\)[ .-]?{_US_PHONE_TAIL}")
# International numbers must start with "+" and a country code.
_INTL_PHONE_RE = re.compile(r"\+(?<![\w+]\+)[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}(?!\w)")

# The shadow of a text: one byte per character, in which every ASCII digit
# is "0" and every non-ASCII character (which the encoder turns into "?")
# is 0x80. The separators "\x1c"-"\x1f", which Unicode patterns count as
# whitespace and byte patterns do not, become spaces. A real "?" also
# becomes 0x80, which only lets the shadow patterns below accept more.
_SHADOW_TABLE = bytes.maketrans(b"0123456789?\x1c\x1d\x1e\x1f", b"0000000000\x80    ")
_ASCII_BYTES = bytes(range(128))
# Texts with a non-ASCII digit, or with one of the non-ASCII letters that
# match an ASCII letter when case is ignored ("İ", "ı", "ſ" and the Kelvin
# sign), get no shadow: in it, 0x80 is neither a digit nor a letter.
_UNSHADOWED_RE = re.compile(r"[\d\u0130\u0131\u017f\u212a]")

# Shadow patterns accept every place where the exact pattern could match,
# leaving out the checks on digit values. Where the exact pattern accepts a
# non-ASCII character (whitespace), they accept 0x80; it is never a word
# character, so a look-behind for one only lets them accept more. As 0x80
# is never taken for a letter or a digit, runs of it are read at most once
# or twice and the scans stay linear.

# Where a numeric kind could start: a number that does not follow a word
# character, then (after its first digit) each kind's look-behind and the
# digits and separators of its matches. Rare in prose. The first look-ahead
# is a quick necessary condition that fails on most numbers in prose ("500
# mg"): after the digits, a separator and a digit or "(", or a capitalised
# word or ordinal, or at least twelve digits in all; or a "(" or "+" before
# them, where the phone patterns that start with that character are tried.
_NUMBER_SHAPE_RE = re.compile(
    rb"0(?<!\w0)(?=0*+(?:[- .]\(?0|\(0|[A-Za-z]?[\s\x80]+[A-Z0])|0{12}|(?<=[(+]0))(?="
    rb"(?<!-0)(?:00[- ]00[- ]0000"  # SSN
    rb"|0{12}|000[ -]0000[ -]0000[ -]0|000[ -]000000[ -]0000)"  # credit card
    rb"|(?<!\+0)(?:[ .-]?(?:\(000\)[ .-]?|000[ .-])|00[ .-])000[ .-]0000"  # phone, after "1" or not
    # Address: a first word (or direction, or ordinal), then a word or suffix.
    rb"|(?<![.,/-]0)0{0,5}[A-Za-z]?[\s\x80]+(?:[A-Z][a-z]*\.?|0{1,3}[a-z]{2})[\s\x80]+[A-Z0]"
    rb"|(?<!\.0)0{0,2}(?:\.0{1,3}){3}"  # IPv4
    rb"|(?<=\(0)00\)[ .-]?000[ .-]0000"  # phone in parentheses
    rb"|(?<=\+0)"  # phone after "+"
    rb")"
)
# A medical record number (_MRN_VALUE) has six to sixteen digits and dashes,
# at least six of them digits, and no digit before them.
_MRN_SHAPE_RE = re.compile(rb"0(?<!00)(?=(?:-*0){5})[0-]{4,14}0(?![\w-])")
# Every date (_DATE) has four digits in a row or d[/.-]d[/.-]dd: a quick
# first check. The second is closer to the date forms (a year alone is not
# a date) but slower; a date never follows a digit.
_DATE_HINT_RE = re.compile(rb"0(?:000|[/.-]0{1,2}[/.-]00)")
_DATE_SHAPE_RE = re.compile(
    rb"0(?<!00)0?(?:[/.-]0{1,2}[/.-]00"  # 4/12/62, 04.12.1962
    rb"|00-0{1,2}-0"  # 1962-04-12
    # Apr 12, 1962 (from the day on) and 12th of April 1962
    rb"|(?:[A-Za-z]{2})?,?[\s\x80]+(?:(?:[A-Za-z]{2}[\s\x80]+)?[A-Za-z]{3,9}\.?,?[\s\x80]+)?0000)"
)


# Medical record number: only after a label, so that order numbers, doses
# and dates are never taken for one. The value needs at least six digits.
# One pattern per label, each starting with the label's literal text (found
# quickly) and run only when that text occurs; all run on case-folded text.
_LABEL_TAIL = r"(?:\s*(?:is|was|:|#|-|=)){0,2}\s*"
_MRN_VALUE = r"(?P<value>(?<![\w-])[a-z]{0,3}-?\d[\d-]{4,14}\d)(?![\w-])"
_MRN_RES = {
    "mrn": re.compile("mrn" + _LABEL_TAIL + _MRN_VALUE),
    "record": re.compile(r"medical\s+record\s+(?:number|no\.?|num\.?|#)" + _LABEL_TAIL + _MRN_VALUE),
    "patient": re.compile(r"patient\s+(?:id|number|no\.?|#)" + _LABEL_TAIL + _MRN_VALUE),
    "chart": re.compile(r"chart\s+(?:number|no\.?|#)" + _LABEL_TAIL + _MRN_VALUE),
}

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})"
    r"|\d{4}-\d{1,2}-\d{1,2}"
    rf"|(?i:{_MONTH})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?i:{_MONTH})\.?,?\s+\d{{4}})"
)
# A date right after "DOB", "date of birth", "born (on)", "birth date".
_DOB_VALUE = rf"(?P<value>(?<![\w/.-]){_DATE})(?![\w/.-]*\d)"
_DOB_RES = {
    "dob": re.compile("dob" + _LABEL_TAIL + _DOB_VALUE),
    "d.o.b": re.compile(r"d\.o\.b\.?" + _LABEL_TAIL + _DOB_VALUE),
    "birth": re.compile(r"(?:date\s+of\s+birth|birth\s*date)" + _LABEL_TAIL + _DOB_VALUE),
    "born": re.compile(r"born(?:\s+on)?" + _LABEL_TAIL + _DOB_VALUE),
}
# "(" followed by something a date can start with: a digit or a month; the
# name is looked for at most _NAME_REACH characters before it, the date at
# most _DATE_REACH after it.
_NAME_REACH = 100
_DATE_REACH = 40
_MAX_WINDOWS = 32
_PAREN_DATE_RE = re.compile(
    r"\(\s*(?:dob|b\.|born)?\s*:?\s*(?:\d|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
)
# A date in parentheses right after a capitalised first and last name:
# "Jane Doe (04/12/1962)". Words that usually head a record field rather
# than name a person are rejected after the match ("Visit Date (03/14/2024)").
_NOT_NAMES = frozenset(
    [
        "Date",
        "Visit",
        "Follow",
        "Appointment",
        "Admission",
        "Admitted",
        "Discharge",
        "Discharged",
        "Report",
        "Review",
        "Updated",
        "Last",
        "Next",
        "Effective",
        "Issued",
        "Signed",
        "Dated",
        "Started",
        "Ended",
        "Since",
        "Until",
        "Due",
        "Lab",
        "Labs",
        "Test",
        "Result",
        "Results",
        "Annual",
        "Monthly",
        "Weekly",
    ]
)
_DOB_NAME_RE = re.compile(
    r"[A-Z](?<!\w[A-Z])(?P<first>[a-z]+)(?:\s+[A-Z]\.)?\s+(?P<last>[A-Z][a-z]+)"
    r"(?:-[A-Z][a-z]+)?\s*\(\s*(?:(?i:dob|b\.|born)\s*:?\s*)?"
    rf"(?P<value>{_DATE})\s*\)"
)


def _digits(text: str) -> str:
    return "".join(filter(str.isdigit, text))


# A doubled Luhn digit, less 9 when it exceeds 9.
_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(number: str) -> bool:
    """Luhn checksum over the digits of ``number`` (separators ignored)."""
    return _luhn(_digits(number))


def _luhn(digits: str) -> bool:
    if not digits:
        return False
    # From the right, every second digit counts doubled.
    values = [int(char) for char in reversed(digits)]
    return (sum(values[::2]) + sum(_LUHN_DOUBLED[value] for value in values[1::2])) % 10 == 0


def _find_email(text: str) -> Iterable[PiiMatch]:
    for m in _EMAIL_DOMAIN_RE.finditer(text):
        start = m.start()
        while start > 0 and text[start - 1] in _EMAIL_LOCAL_CHARS and m.start() - start <= _EMAIL_LOCAL_MAX:
            start -= 1
        if m.start() - start > _EMAIL_LOCAL_MAX:
            continue
        # The local part must begin at a boundary: not after a word
        # character (e.g. a non-ASCII letter) or one of ". % + -".
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.%+-"):
            continue
        yield PiiMatch("email", start, m.end())


def _octet(part: str) -> bool:
    return int(part) <= 255 and (part == "0" or not part.startswith("0"))


def _find_numeric(text: str, shadow: bytes | None) -> Iterable[PiiMatch]:
    """SSNs, card numbers, phone numbers, street addresses and IPv4
    addresses: everything that starts with a digit, or with "(" or "+" and
    a digit."""
    paren: Iterable[re.Match[str] | None]
    plus_one: Iterable[re.Match[str] | None]
    intl: Iterable[re.Match[str] | None]
    if shadow is None:
        numeric: Iterable[re.Match[str] | None] = _NUMERIC_RE.finditer(text)
        paren = _PAREN_PHONE_RE.finditer(text) if "(" in text else ()
        plus_one = _PLUS_ONE_PHONE_RE.finditer(text) if "+" in text else ()
        intl = _INTL_PHONE_RE.finditer(text) if "+" in text else ()
    else:
        # Each match of _NUMERIC_RE is its number's first digit (the kinds
        # are look-aheads), and each match of a "(" or "+" pattern is that
        # character and a number, so trying them only where the shadow
        # allows a match finds the same matches as scans of the whole text.
        starts = [m.start() for m in _NUMBER_SHAPE_RE.finditer(shadow)]
        if not starts:
            return
        numeric = [_NUMERIC_RE.match(text, start) for start in starts]
        parens = [start - 1 for start in starts if text[start - 1 : start] == "("]
        pluses = [start - 1 for start in starts if text[start - 1 : start] == "+"]
        paren = [_PAREN_PHONE_RE.match(text, start) for start in parens]
        plus_one = [_PLUS_ONE_PHONE_RE.match(text, start) for start in pluses]
        intl = [_INTL_PHONE_RE.match(text, start) for start in pluses]
    for m in numeric:
        if m is None:
            continue
        start = m.start()
        for kind in _NUMERIC_KINDS:
            end = m.end(kind)
            if end == -1:
                continue
            value = text[start:end]
            if kind == "credit_card":
                digits = _digits(value)
                if not (13 <= len(digits) <= 19 and _luhn(digits)):
                    continue
            if kind == "ip_address" and not all(_octet(part) for part in value.split(".")):
                continue
            yield PiiMatch(kind, start, end)
    for m in (*paren, *plus_one):
        if m is not None:
            yield PiiMatch("phone", m.start(), m.end())
    for m in intl:
        # E.164 numbers have at most 15 digits; fewer than 8 is not a
        # dialable international number.
        if m is not None and 8 <= len(_digits(m.group())) <= 15:
            yield PiiMatch("phone", m.start(), m.end())


def _at_word_start(folded: str, position: int) -> bool:
    return position == 0 or not folded[position - 1].isalnum()


def _find_mrn(folded: str) -> Iterable[PiiMatch]:
    for hint, pattern in _MRN_RES.items():
        if hint in folded:
            for m in pattern.finditer(folded):
                if _at_word_start(folded, m.start()) and sum(ch.isdigit() for ch in m.group("value")) >= 6:
                    yield PiiMatch("mrn", m.start("value"), m.end("value"))


def _find_dob(text: str, folded: str) -> Iterable[PiiMatch]:
    for hint, pattern in _DOB_RES.items():
        if hint in folded:
            for m in pattern.finditer(folded):
                if _at_word_start(folded, m.start()):
                    yield PiiMatch("dob", m.start("value"), m.end("value"))
    if "(" not in text:
        return
    # The name pattern only runs just before a "(" that opens a date; with
    # many of them, one pass over the whole text is cheaper.
    parens = _PAREN_DATE_RE.finditer(folded)
    windows = [(max(0, m.start() - _NAME_REACH), m.end() + _DATE_REACH) for m in islice(parens, _MAX_WINDOWS)]
    if len(windows) == _MAX_WINDOWS:
        windows = [(0, len(text))]
    for low, high in windows:
        for m in _DOB_NAME_RE.finditer(text, low, high):
            first = text[m.start() : m.end("first")]
            if first not in _NOT_NAMES and m.group("last") not in _NOT_NAMES:
                yield PiiMatch("dob", m.start("value"), m.end("value"))


def _digit_shadow(text: str) -> bytes | None:
    """The shadow of ``text`` (see _SHADOW_TABLE), or None when the text
    has characters the shadow cannot show (see _UNSHADOWED_RE)."""
    if text.isascii():
        return text.encode("ascii").translate(_SHADOW_TABLE)
    # The non-ASCII characters alone, to look for those among them.
    others = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    if _UNSHADOWED_RE.search(others.decode("utf-8", "surrogatepass")) is not None:
        return None
    # "replace" writes one "?" per character, so offsets are kept.
    return text.encode("ascii", "replace").translate(_SHADOW_TABLE)


def detect_pii(text: str) -> list[PiiMatch]:
    """Return non-overlapping PII matches in ``text``, ordered by position.

    When matches overlap, the longer one wins; on equal length the earlier
    one wins, then the kind listed first in ``PII_KINDS``.
    """
    # Every kind but email needs a digit, and email needs "@": skipping
    # detectors that cannot match keeps plain prose cheap.
    candidates: list[PiiMatch] = []
    if "@" in text:
        candidates.extend(_find_email(text))
    shadow = _digit_shadow(text)
    if shadow is None or b"0" in shadow:
        candidates.extend(_find_numeric(text, shadow))
        # Medical record numbers and birth dates need a number of their own
        # shape; without one, their labels (and the case-folded copy that
        # they are looked for in) are skipped.
        mrn = shadow is None or _MRN_SHAPE_RE.search(shadow) is not None
        dob = shadow is None or (
            _DATE_HINT_RE.search(shadow) is not None and _DATE_SHAPE_RE.search(shadow) is not None
        )
        if mrn or dob:
            folded = fold_case(text)
            if mrn:
                candidates.extend(_find_mrn(folded))
            if dob:
                candidates.extend(_find_dob(text, folded))
    if not candidates:
        return []
    if len(candidates) == 1:
        return candidates
    return _resolve_overlaps(candidates)


def _resolve_overlaps(candidates: list[PiiMatch]) -> list[PiiMatch]:
    """Non-overlapping subset of ``candidates``, ordered by position.

    Among overlapping candidates the longer one wins; on equal length the
    earlier one, then the kind listed first in ``PII_KINDS``. Candidates are
    swept by position into clusters of overlapping ones (almost always a
    single candidate), and each cluster is resolved on its own, so that a
    text with a million matches is still handled in linear time.
    """
    priority = {kind: index for index, kind in enumerate(PII_KINDS)}
    candidates.sort(key=lambda m: (m.start, m.end))
    kept: list[PiiMatch] = []
    cluster: list[PiiMatch] = []
    cluster_end = -1
    for match in (*candidates, None):
        if match is not None and (not cluster or match.start < cluster_end):
            cluster.append(match)
            cluster_end = max(cluster_end, match.end)
            continue
        if len(cluster) == 1:
            kept.append(cluster[0])
        elif cluster:
            chosen: list[PiiMatch] = []
            for candidate in sorted(cluster, key=lambda m: (-(m.end - m.start), m.start, priority[m.kind])):
                if all(candidate.end <= other.start or candidate.start >= other.end for other in chosen):
                    chosen.append(candidate)
            kept.extend(sorted(chosen, key=lambda m: m.start))
        if match is not None:
            cluster, cluster_end = [match], match.end
    return kept


def placeholder(kind: str) -> str:
    """Replacement text for a kind, e.g. ``"<CREDIT_CARD>"``."""
    return MASKS.get(kind) or f"<{kind.upper()}>"


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
