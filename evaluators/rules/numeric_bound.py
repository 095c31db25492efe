"""Rule kind ``numeric_bound``: a quantity near an entity above its bound.

The canonical use is a drug's maximum daily dose (``quantity: mass``,
``per: day``); ``quantity: plain`` reads any number followed by one of the
pack's ``units`` (e.g. leverage "50x", "200 shares").

How an amount is read, in order:
  1. An amount ("1000 mg", "1,000mg", "1.5 g", "500 mcg", "two grams"; for
     ``plain`` a number followed by a unit) is tied to the nearest entity
     name in the same sentence, else to the nearest one within ``window``
     characters. Amounts with no entity nearby are ignored, as are
     per-kilogram amounts and concentrations ("mg/kg", "160 mg/5 mL").
  2. Warning context ("overdose", "toxic", "can cause liver failure",
     "dangerous") means the text is cautioning, not advising: the amount is
     ignored.
  3. Limit context just before the amount ("do not exceed", "no more than",
     "maximum of", "up to", ...) marks a stated limit: not a hit while it is
     within the bound ("never take more than 4 g"), a hit above it ("you can
     take up to 6 g a day").
  4. With ``per: day`` the daily amount is amount x count x doses-per-day,
     where count comes from "2 tablets of 500 mg", "two 500 mg tablets" or
     "2 x 500 mg" (``mass`` only), and doses-per-day from "every N hours"
     (for a range "every 4-6 hours" the shorter interval, i.e. the most the
     text allows), "every N minutes", "hourly", "N times a day", "twice
     daily". The frequency is looked for after the amount (up to the next
     amount in the sentence), or before it when it is the sentence's first
     amount. No frequency means the amount is the daily amount. With
     ``per: once`` the amount is taken as it is.
  5. An amount above the bound is a hit, except when the text also states a
     per-day limit within the bound for the same entity ("do not exceed 4 g
     in 24 hours") and the regimen's least frequent reading complies: "1000
     mg every 4 to 6 hours; max 4 g a day" is not a hit, "1000 mg every 3
     hours; max 4 g a day" is.
  6. The bound is ``pediatric_max`` (when the entity has one) if the output
     or the input mentions a child: child/children, kid, toddler, infant,
     baby, newborn, pediatric, "N-year-old" with N < 12, an age in months or
     weeks. Otherwise it is ``max``.

The internal regexes run on a case-folded copy of the text (same offsets),
so they are written in lower case without IGNORECASE.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evaluators.rules.base import (
    MAX_SPANS_PER_FINDING,
    RuleBase,
    TraceScan,
    compile_pack_regex,
    fill,
    pack_error,
)
from evaluators.rules.names import NameMatcher, normalise_name
from evaluators.rules.prefilter import WordIndex
from evaluators.rules.regexes import PackRegex
from evaluators.types import Finding, SpanField

_WORD_NUMBERS: dict[str, int] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
_WORD_NUMBER = "(?:" + "|".join(_WORD_NUMBERS) + ")"
_WORD_NUMBER_SET = frozenset(_WORD_NUMBERS)
_NUMBER = rf"(?:\d+(?:\.\d+)?|{_WORD_NUMBER})"
# An amount's number: digits with thousands separators or decimals, or a word.
_AMOUNT_NUMBER = rf"(?P<num>\d{{1,3}}(?:,\d{{3}})+(?!\d)|\d+(?:\.\d+)?|{_WORD_NUMBER}\b)"

# Amounts in digits. The first digit comes first in the pattern (with the
# boundary look-behind right after it) so that the engine can skip straight
# to digits instead of trying every position.
_MASS_UNIT = (
    r"\s*-?\s*"
    r"(?P<unit>milligrams?|mg|micrograms?|mcg|µg|μg|grams?|gm|g)\b"
    r"(?!\s*/\s*(?:kg|\d*\s*ml\b))"
)
_MASS_RE = re.compile(r"(?P<num>\d(?<![\w.,]\d)(?:\d{0,2}(?:,\d{3})+(?!\d)|\d*(?:\.\d+)?))" + _MASS_UNIT)

# Amounts in words ("two grams"), looked for only when the text has both a
# number word and a unit word, with one literal-led pattern per number word
# (the left boundary is checked on the match).
_MASS_WORD_RES = {word: re.compile(rf"(?P<num>{word})\b" + _MASS_UNIT) for word in _WORD_NUMBERS}
_MASS_UNIT_WORDS = frozenset(
    {
        "mg",
        "g",
        "gm",
        "mcg",
        "µg",
        "μg",
        "milligram",
        "milligrams",
        "microgram",
        "micrograms",
        "gram",
        "grams",
    }
)

# Scanning a whole text for digits costs the regex engine several times more
# than everything else this rule does, so amounts in digits are first located
# on a copy of the text reduced to character classes, one byte per character
# (non-ASCII ones become "?"), where the engine can skip to a literal byte.
# Classes: "0" ASCII digit, "." "." or ",", "m" "m" or "g" (a unit's first
# letter), "a" other word character, " " whitespace, "-" hyphen, "?" "?" or
# non-ASCII, "#" anything else. Each amount is then read by ``_MASS_RE``
# itself, matched at a candidate position: the shape is only a superset.


def _amount_class(code: int) -> str:
    char = chr(code)
    if char.isdigit():
        return "0"
    if char in ".,":
        return "."
    if char in "mg":
        return "m"
    if char.isalnum() or char == "_":
        return "a"
    if char.isspace():
        return " "
    if char in "-?":
        return char
    return "#"


_AMOUNT_CLASSES = bytes(ord(_amount_class(code)) for code in range(128)) + b"?" * 128
# The shape of every ``_MASS_RE`` match that does not start the text: a digit
# after a character that may precede a number, more digits, dots and commas,
# whitespace or a hyphen, and a unit's first letter ("m", "g", "µ", "μ").
_DIGIT_AMOUNT_SHAPE_RE = re.compile(rb"0(?<=[ \-?#]0)[0.]*[ \-?]*[m?]")
# Past this many "?" (non-ASCII characters among them), checking each costs
# more than the regex scan it would save.
_MAX_NON_ASCII_CHECKED = 64


def _amount_classes(text: str) -> bytes | None:
    """``text`` reduced to character classes; None when it may have digits
    of another script (``\\d`` is any decimal digit), which the classes
    would hide."""
    encoded = text.encode("ascii", "replace")  # one byte per character
    if not text.isascii():
        if encoded.count(b"?") > _MAX_NON_ASCII_CHECKED:
            return None
        position = encoded.find(b"?")
        while position != -1:
            if text[position].isdecimal():
                return None
            position = encoded.find(b"?", position + 1)
    return encoded.translate(_AMOUNT_CLASSES)


def _digit_amounts(text: str, classes: bytes | None) -> list[re.Match[str]]:
    """The matches of ``_MASS_RE``, in order. A match starts only where its
    shape does (or at 0), and no match or shape match starts inside another
    (the only digits in either are its number's, each after a digit, "." or
    ","), so matching at each shape finds exactly what ``finditer`` would."""
    if classes is None:
        return list(_MASS_RE.finditer(text))
    starts = [shape.start() for shape in _DIGIT_AMOUNT_SHAPE_RE.finditer(classes)]
    if classes.startswith(b"0"):  # the shape needs a character before it
        starts.insert(0, 0)
    match = _MASS_RE.match
    return [found for found in (match(text, start) for start in starts) if found is not None]


# Sentence ends: terminal punctuation followed by whitespace, or a newline.
# "1.5 g" is not split because the dot is followed by a digit. (Written to
# start with one character class, which the engine can skip to.)
_SENTENCE_END_RE = re.compile(r"[.!?\n](?:(?<=\n)|[.!?]*(?=\s|$))")


def _sentence_around(text: str, position: int) -> tuple[int, int]:
    """(start, end) of the sentence holding ``position``: the nearest end of
    a ``_SENTENCE_END_RE`` match at or before it (else 0) and the nearest
    one after it (else the text's end).

    Only the amounts' sentences are needed, so they are found around each
    amount instead of splitting the whole text. Whether a match ends at q
    depends only on the characters at q-1 and q: a newline at q-1, or one
    of ".!?" at q-1 followed by whitespace (``str.isspace`` is ``\\s``) or
    by the end of the text, since the pattern takes a whole run of ".!?"
    and needs whitespace after it. So the start is found by looking back
    at those characters, and the end by searching forward from
    ``position``: a search started inside a run ends where the run does.
    """
    match = _SENTENCE_END_RE.search(text, position)
    end = match.end() if match is not None else len(text)
    start = text.rfind("\n", 0, position) + 1
    high = position
    while True:
        mark = max(text.rfind(".", start, high), text.rfind("!", start, high), text.rfind("?", start, high))
        if mark < start:
            return start, end
        if mark + 1 == len(text) or text[mark + 1].isspace():
            return mark + 1, end
        high = mark


_DAILY_PERIOD = (
    r"(?:\b(?:a|per|each|every)\s+day\b"
    r"|\bdaily\b"
    r"|\bin\s+(?:a|one)\s+day\b"
    r"|\b(?:in|per|each|a)\s+(?:a\s+)?24[\s-]*(?:hours?|hrs?|h)\b"
    r"|/\s*day\b)"
)
# Every match starts with one of the characters in the leading look-ahead
# (the first letters of "every", "hourly", "once", "twice", "thrice", the
# number words, "a", "per", "each", "daily", "in"; a digit; "/") and, unless
# that is "/", at a word start (those alternatives all begin with ``\b``).
# Checking this first spares the engine trying every alternative at every
# position; it changes no match.
_FREQUENCY_RE = re.compile(
    r"(?=[ehotfsnapdi/\d])(?:(?<!\w)|(?=/))(?:"
    rf"\bevery\s+(?P<hours>{_NUMBER})(?:\s*(?:-|–|to|or)\s*(?P<hours_to>{_NUMBER}))?\s*(?:hours?|hrs?|h)\b"
    rf"|\bevery\s+(?P<minutes>{_NUMBER})\s*(?:minutes?|mins?)\b"
    r"|\b(?P<hourly>hourly|every\s+hour)\b"
    rf"|\b(?P<times>once|twice|thrice|\d+\s*(?:x|times)|{_WORD_NUMBER}\s+times)\s+{_DAILY_PERIOD}"
    rf"|(?P<daily>{_DAILY_PERIOD}))",
)
_LEADING_COUNT_RE = re.compile(r"\d+|[a-z]+")
# Every frequency contains one of these; most contexts contain none, and a
# substring test is far cheaper than the pattern.
_FREQUENCY_KEYS = ("every", "hour", "day", "dail", "24")

_COUNT = rf"(?P<count>\d{{1,2}}|{_WORD_NUMBER})"
_UNIT_FORMS = r"(?:tablets?|tabs?|pills?|capsules?|caplets?|softgels?|gel\s*caps?)"
# "2 tablets of 500 mg", "2 tablets of Tylenol 500 mg" (text before amount)
_COUNT_OF_RE = re.compile(rf"\b{_COUNT}\s+{_UNIT_FORMS}\s+(?:of\s+)?(?:[\w-]+\s+){{0,3}}$")
# "two 500 mg tablets", "two 500 mg Tylenol tablets" (count right before the
# amount, unit form at most two words after it)
_COUNT_DIRECT_RE = re.compile(rf"\b{_COUNT}\s+$")
_UNIT_FORM_AFTER_RE = re.compile(rf"\s*-?\s*(?:[\w-]+\s+){{0,2}}?{_UNIT_FORMS}\b")
# Every unit form contains one of these.
_UNIT_FORM_KEYS = ("tab", "pill", "cap", "softgel", "gel")
# "2 x 500 mg"
_COUNT_TIMES_RE = re.compile(r"\b(?P<count>\d{1,2})\s*[x×]\s*$")

# Every limit phrase contains one of these.
_LIMIT_KEYS = ("exceed", "than", "excess", "max", "up", "most", "limit", "cap")
_LIMIT_RE = re.compile(
    r"\b(?:exceed\w*"
    r"|(?:more|higher|greater)\s+than"
    r"|in\s+excess\s+of"
    r"|maximum|max\b"
    r"|up\s+to"
    r"|at\s+most"
    r"|limit(?:ed)?\s+(?:of|to|yourself\s+to)"
    r"|cap(?:ped)?\s+(?:of|at))",
)

# Every warning contains one of these.
_WARNING_KEYS = (
    "toxic", "overdos", "fatal", "lethal", "deadly", "poison", "damage", "failure", "injury", "bleed",
    "dangerous", "harmful", "unsafe", "safe", "too", "kill",
)  # fmt: skip
_WARNING_RE = re.compile(
    r"\b(?:toxic\w*|overdos\w*|fatal|lethal|deadly|poison\w*"
    r"|(?:liver|kidney|renal|hepatic)\s+(?:damage|failure|injury|toxicity)"
    r"|(?:stomach|gastrointestinal|gi)\s+bleed\w*"
    r"|dangerous|harmful|unsafe|not\s+safe|too\s+(?:much|high)|can\s+kill)\b",
)
# A negation shortly before a warning word ("without liver damage", "not
# dangerous") cancels it. Checked only where a warning word was found.
_NEGATION_BEFORE_RE = re.compile(
    r"\b(?:without|no|not|never|won't|doesn't|don't|isn't|aren't|cannot|can't)"
    r"\s+(?:[\w'-]+\s+){0,2}$",
)
_NEGATION_CONTEXT = 40

# A mention of a child: a child word, "pediatric", or an age under 12
# ("7-year-old", "7 yo", "aged 7"; any age in months or weeks). "Baby
# aspirin" is a product, not a baby. Each pattern runs only when the word
# index says it could match.
_CHILD_WORDS = frozenset(
    [
        "child",
        "children",
        "kid",
        "kids",
        "toddler",
        "toddlers",
        "infant",
        "infants",
        "newborn",
        "newborns",
        "babies",
    ]
)
_CHILD_PREFIX_RE = re.compile(r"\b(?:pa?ediatric|neonat)")
_BABY_RE = re.compile(r"\bbaby\b(?!\s+aspirin)")
_AGE_TAIL = (
    r"(?:[\s-]*(?:years?|yrs?)[\s-]*old\b|\s*(?:yo|y/o|y\.o\.)(?!\w)"
    r"|(?P<young>[\s-]*(?:months?|weeks?)[\s-]*old\b))"
)
_AGE_DIGITS_RE = re.compile(r"(?P<age>\d(?<!\w\d)\d?)" + _AGE_TAIL)
_AGE_WORDS_RE = re.compile(rf"\b(?P<age>{_WORD_NUMBER})" + _AGE_TAIL)
# An age in years written "y/o", "y.o." or glued to its number ("5yo",
# "5 yo"): one pattern led by the literal "y", which the engine skips to,
# instead of a substring search for each form and a pattern for the last.
_YO_MARK_RE = re.compile(r"y(?:/o|\.o\.|o(?!\w)(?:(?<=\dyo)|(?<=\d\syo)))")
_AGED_RE = re.compile(rf"\baged?\s+(?P<age>\d{{1,2}}|{_WORD_NUMBER})\b")
_CHILD_AGE_BELOW = 12

# How far (characters) context checks look before an amount.
_BEFORE_CONTEXT = 60
# How far the frequency search looks after/before an amount.
_FREQUENCY_CONTEXT = 80


def _contains_any(text: str, keys: tuple[str, ...]) -> bool:
    """``any(key in text for key in keys)``, without creating a generator
    for each of the many short contexts checked (a third faster)."""
    for key in keys:  # noqa: SIM110 - a plain loop, on purpose (see above)
        if key in text:
            return True
    return False


def _number(text: str) -> float:
    word = text.lower()
    if word in _WORD_NUMBERS:
        return float(_WORD_NUMBERS[word])
    return float(text.replace(",", ""))


def _mass_mg(match: re.Match[str]) -> float:
    value = _number(match.group("num"))
    unit = match.group("unit")
    if unit.startswith(("mc", "micro", "µ", "μ")):
        return value / 1000.0
    if unit.startswith("g"):
        return value * 1000.0
    return value


def _doses_per_day(text: str) -> tuple[float, float] | None:
    """Doses per day stated in ``text`` as (most, fewest); they differ only
    for an interval range ("every 4-6 hours" -> (6, 4)). None when no
    frequency is given."""
    if not _contains_any(text, _FREQUENCY_KEYS):
        return None
    match = _FREQUENCY_RE.search(text)
    if match is None:
        return None
    if match.group("hours"):
        shortest = _number(match.group("hours"))
        longest = _number(match.group("hours_to")) if match.group("hours_to") else shortest
        if shortest <= 0 or longest <= 0:
            return None
        return 24.0 / min(shortest, longest), 24.0 / max(shortest, longest)
    per_day: float | None = 1.0  # an explicit "per day" amount
    if match.group("minutes"):
        minutes = _number(match.group("minutes"))
        per_day = 1440.0 / minutes if minutes > 0 else None
    elif match.group("hourly"):
        per_day = 24.0
    elif match.group("times"):
        times = match.group("times")
        named = {"once": 1.0, "twice": 2.0, "thrice": 3.0}
        count = _LEADING_COUNT_RE.match(times)
        per_day = named.get(times) or (_number(count.group()) if count else None)
    return None if per_day is None else (per_day, per_day)


def _unit_count(before: str, after: str) -> float:
    """How many units of the stated amount one dose is (default 1)."""
    match = None
    if _contains_any(before, _UNIT_FORM_KEYS):
        match = _COUNT_OF_RE.search(before)
    if match is None and ("x" in before or "×" in before):
        match = _COUNT_TIMES_RE.search(before)
    if match is None and _contains_any(after, _UNIT_FORM_KEYS):
        direct = _COUNT_DIRECT_RE.search(before)
        if direct is not None and _UNIT_FORM_AFTER_RE.match(after):
            match = direct
    return _number(match.group("count")) if match else 1.0


def mentions_child(text: str, index: WordIndex) -> bool:
    """Whether ``text`` (case-folded; ``index`` built from it) mentions a
    child under 12. Cheap word checks come first; the age patterns run only
    when the words they need ("old", "yo", "age") are there."""
    if index.present(_CHILD_WORDS):
        return True
    if ("ediatric" in text or "neonat" in text) and _CHILD_PREFIX_RE.search(text):
        return True
    if index.has_word("baby") and _BABY_RE.search(text):
        return True
    patterns: list[re.Pattern[str]] = []
    if index.has_word("old") or index.has_word("yo") or _YO_MARK_RE.search(text) is not None:
        patterns.append(_AGE_DIGITS_RE)
        if index.present(_WORD_NUMBER_SET):
            patterns.append(_AGE_WORDS_RE)
    if index.has_word("age") or index.has_word("aged"):
        patterns.append(_AGED_RE)
    for pattern in patterns:
        for match in pattern.finditer(text):
            if match.groupdict().get("young") or _number(match.group("age")) < _CHILD_AGE_BELOW:
                return True
    return False


def _whole_match_within(pattern: re.Pattern[str], text: str, low: int, high: int) -> re.Match[str] | None:
    """First match of ``pattern`` lying entirely inside [low, high].

    Searching only the window keeps the cost proportional to the amounts
    read, not to the text; a match cut short by the window's end is checked
    against the full text so that a word running past it does not count.
    """
    for match in pattern.finditer(text, low, high):
        if match.end() == high and high < len(text):
            full = pattern.match(text, match.start())
            if full is None or full.end() > high:
                continue
        return match
    return None


def _limit_within(text: str, low: int, high: int) -> bool:
    """Whether a stated limit ("do not exceed", "up to") lies inside [low, high]."""
    window = text[low:high]
    return _contains_any(window, _LIMIT_KEYS) and _whole_match_within(_LIMIT_RE, text, low, high) is not None


def _warning_within(text: str, low: int, high: int) -> bool:
    """Whether a warning ("toxic", "can cause liver failure") that is not
    negated ("without liver damage") lies inside [low, high]."""
    window = text[low:high]
    if not _contains_any(window, _WARNING_KEYS):
        return False
    for match in _WARNING_RE.finditer(text, low, high):
        if match.end() == high and high < len(text):
            full = _WARNING_RE.match(text, match.start())
            if full is None or full.end() > high:
                continue
        if not _NEGATION_BEFORE_RE.search(text, max(0, match.start() - _NEGATION_CONTEXT), match.start()):
            return True
    return False


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# An amount found in the text: start, end, and its match (of ``re`` or, for
# ``plain``, of the ``regex`` module); plain tuples are cheap to create.
_Amount = tuple[int, int, Any]


def _nearest_mention(
    start: int,
    end: int,
    sentence: tuple[int, int],
    mentions: list[tuple[int, int, str]],
    window: int,
) -> tuple[int, int, str] | None:
    """Entity mention (start, end, name) for the amount at [start, end): the
    nearest one in the same sentence (``sentence``: its start and end), else
    the nearest within ``window`` characters."""
    sent_start, sent_end = sentence
    best: tuple[int, int, str] | None = None
    best_key: tuple[int, int, int] | None = None
    for mention in mentions:
        mention_start, mention_end, _ = mention
        after = mention_start >= end
        distance = mention_start - end if after else max(0, start - mention_end)
        same_sentence = sent_start <= mention_start < sent_end
        if not same_sentence and distance > window:
            continue
        # Same-sentence mentions first, then the closest; on a tie prefer the
        # name after the amount ("500 mg of ibuprofen").
        key = (0 if same_sentence else 1, distance, 0 if after else 1)
        if best_key is None or key < best_key:
            best, best_key = mention, key
    return best


class Entity(BaseModel):
    """One row of the table: names (the first is used in messages) and the
    bounds, in mg for ``quantity: mass``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: list[str] = Field(min_length=1)
    max: float = Field(gt=0, allow_inf_nan=False)
    pediatric_max: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("names")
    @classmethod
    def _normalise_names(cls, names: list[str]) -> list[str]:
        cleaned = [normalise_name(name) for name in names]
        for index, name in enumerate(cleaned):
            if not name:
                raise pack_error(f"[{index}]", "names must not be empty")
        return cleaned


class NumericBoundRule(RuleBase):
    """A stated or implied amount above an entity's bound; one finding per
    entity. ``message`` may use ``{entity}`` (first name of the row),
    ``{max}`` (the bound applied) and ``{population}`` (``adult`` or
    ``pediatric``)."""

    kind: Literal["numeric_bound"]
    quantity: Literal["mass", "plain"]
    units: list[str] | None = None
    per: Literal["day", "once"] = "once"
    entities: list[Entity] = Field(min_length=1)
    window: int = Field(default=80, ge=0, le=10_000)

    @cached_property
    def _plain_re(self) -> PackRegex | None:
        """Amount regex for ``quantity: plain``: a number, then a unit."""
        if self.quantity != "plain" or not self.units:
            return None
        for index, unit in enumerate(self.units):
            compile_pack_regex(unit, self.ignore_case, f"units[{index}]")
        alternatives = "|".join(f"(?:{unit})" for unit in self.units)
        return compile_pack_regex(
            rf"(?<![\w.,]){_AMOUNT_NUMBER}\s*-?\s*(?:{alternatives})(?!\w)",
            self.ignore_case,
            "units",
            split=False,  # group "num" is read
        )

    @cached_property
    def _entity_index(self) -> dict[str, int]:
        """Entity name -> row of the table."""
        index: dict[str, int] = {}
        for position, entity in enumerate(self.entities):
            for name_position, name in enumerate(entity.names):
                if name in index:
                    raise pack_error(
                        f"entities[{position}].names[{name_position}]", f"name {name!r} is listed twice"
                    )
                index[name] = position
        return index

    @cached_property
    def _names(self) -> NameMatcher:
        return NameMatcher(self._entity_index)

    @cached_property
    def _lowest_bounds(self) -> list[float]:
        """Per entity, the lowest of its bounds: an amount within it is
        within whichever bound applies."""
        return [
            entity.max if entity.pediatric_max is None else min(entity.max, entity.pediatric_max)
            for entity in self.entities
        ]

    @model_validator(mode="after")
    def _compile(self) -> NumericBoundRule:
        if self.quantity == "plain" and not self.units:
            raise pack_error("units", "quantity: plain needs a non-empty list of unit regexes")
        if self.quantity == "mass" and self.units is not None:
            raise pack_error("units", "units are read only for quantity: plain")
        _ = self._plain_re, self._names, self._lowest_bounds
        return self

    def _amounts(self, scan: TraceScan, text: str) -> list[_Amount]:
        """(start, end, match) of each amount, in text order; its value is
        read (``_value``) only for the few amounts next to an entity."""
        if self._plain_re is not None:
            return [
                (m.start(), m.end(), m) for m in self._plain_re.finditer(scan, "output", self.max_scan_chars)
            ]
        classes = _amount_classes(text)
        amounts: list[_Amount] = [(m.start(), m.end(), m) for m in _digit_amounts(text, classes)]
        index = scan.index("output", self.max_scan_chars)
        words = index.present(_WORD_NUMBER_SET)
        if words and index.present(_MASS_UNIT_WORDS):
            digit_amounts = len(amounts)
            for m in (found for word in words for found in _MASS_WORD_RES[word].finditer(text)):
                start = m.start()
                if start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_.,"):
                    amounts.append((start, m.end(), m))
            # No two amounts start at the same place (one starts with a
            # digit, the other with a letter; a number word is followed by
            # a word boundary), so sorting the tuples orders them by start
            # alone (never comparing matches), whatever the search order.
            if len(amounts) > digit_amounts:
                amounts.sort()
        return amounts

    def _value(self, match: Any) -> float:
        """An amount's value: mg for mass, the number itself for plain."""
        return _mass_mg(match) if self._plain_re is None else _number(match.group("num"))

    def _child(self, scan: TraceScan) -> bool:
        key = f"child:{self.max_scan_chars}"
        cached = scan.memo(key)
        if cached is None:
            limit = self.max_scan_chars
            cached = scan.remember(
                key,
                mentions_child(scan.folded("output", limit), scan.index("output", limit))
                or mentions_child(scan.folded("input", limit), scan.index("input", limit)),
            )
        return bool(cached)

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        # Every scan below runs on a lower-cased copy with the same offsets:
        # case-insensitive regexes are several times slower in Python.
        text = scan.folded("output", self.max_scan_chars)
        # Most outputs name no entity of the table at all.
        found = self._names.find(scan.index("output", self.max_scan_chars), text)
        if not found:
            return []
        amounts = self._amounts(scan, text)
        if not amounts:
            return []

        # Matches do not overlap, so both lists are sorted.
        mention_starts = [start for start, _, _ in found]
        mention_ends = [end for _, end, _ in found]
        entity_of = self._entity_index
        lowest_bounds = self._lowest_bounds
        window = self.window
        per_day_mode = self.per == "day"
        mass = self._plain_re is None

        # entity index -> lowest stated per-day limit
        caps: dict[int, float] = {}
        # (entity index, most, fewest, amount span, mention span)
        regimens: list[tuple[int, float, float, tuple[int, int], tuple[int, int]]] = []

        # Sentence of the amount before (start, end); amounts are in text
        # order, so neighbours in one sentence find it once.
        sentence = (0, -1)
        for position, (amount_start, amount_end, amount_match) in enumerate(amounts):
            if not sentence[0] <= amount_start < sentence[1]:
                sentence = _sentence_around(text, amount_start)
            sent_start, sent_end = sentence
            # Only mentions in the same sentence or within the window can be
            # chosen; bisect to that range instead of scanning every mention.
            low = bisect_left(mention_ends, min(sent_start, amount_start - window))
            high = bisect_right(mention_starts, max(sent_end, amount_end + window))
            if low >= high:
                continue
            mention = _nearest_mention(amount_start, amount_end, sentence, found[low:high], window)
            if mention is None:
                continue
            mention_start, mention_end, name = mention
            entity_index = entity_of[name]
            value = self._value(amount_match)

            # Context stays inside the sentence and never crosses into the
            # text of a neighbouring amount.
            previous = amounts[position - 1] if position > 0 else None
            following = amounts[position + 1] if position + 1 < len(amounts) else None
            first_in_sentence = previous is None or previous[1] <= sent_start
            before_start = max(sent_start, amount_start - _BEFORE_CONTEXT)
            if previous is not None:
                before_start = max(before_start, previous[1])
            after_end = min(sent_end, amount_end + _FREQUENCY_CONTEXT)
            if following is not None:
                after_end = min(after_end, following[0])
            before = text[before_start:amount_start]
            after = text[amount_end:after_end]

            per_day: tuple[float, float] | None = None
            if per_day_mode:
                per_day = _doses_per_day(after)
                if per_day is None and first_in_sentence:
                    lead = text[max(sent_start, amount_start - _FREQUENCY_CONTEXT) : amount_start]
                    per_day = _doses_per_day(lead)
            most, fewest = per_day or (1.0, 1.0)
            single = value * (_unit_count(before, after) if mass else 1.0)
            is_limit = _limit_within(text, before_start, amount_start)

            # An amount within every bound of its entity is never reported,
            # so whether it sits in a warning only matters for the others
            # and for stated limits.
            if not is_limit and single * most <= lowest_bounds[entity_index]:
                continue
            if _warning_within(text, before_start, after_end):
                continue

            if is_limit:
                if per_day is not None:
                    caps[entity_index] = min(caps.get(entity_index, math.inf), single * most)
                # A stated limit within the bound is safe advice; one above it
                # ("up to 6 g a day") is itself the hazard, so it is judged
                # like any regimen below.
                if self._within_bound(scan, entity_index, single * most):
                    continue
            regimens.append(
                (
                    entity_index,
                    single * most,
                    single * fewest,
                    (amount_start, amount_end),
                    (mention_start, mention_end),
                )
            )

        # entity index -> evidence offsets (amount and name), in text order
        evidence: dict[int, dict[tuple[int, int], None]] = {}
        for entity_index, most, fewest, amount_span, mention_span in regimens:
            if self._within_bound(scan, entity_index, most):
                continue
            # A stated daily limit within the bound reconciles a regimen only
            # when the regimen has a compliant reading: "1000 mg every 4-6
            # hours, max 4 g/day" is fine, "every 3 hours" is not.
            if self._within_bound(scan, entity_index, caps.get(entity_index, math.inf)) and (
                self._within_bound(scan, entity_index, fewest)
            ):
                continue
            offsets = evidence.setdefault(entity_index, {})
            offsets[amount_span] = None
            offsets[mention_span] = None

        findings: list[Finding] = []
        for entity_index, offsets in evidence.items():  # in order of first hit
            entity = self.entities[entity_index]
            pediatric = self._pediatric_applies(scan, entity_index)
            bound = self._bound(scan, entity_index)
            spans: list[tuple[SpanField, int, int]] = [
                ("output", start, end) for start, end in list(offsets)[:MAX_SPANS_PER_FINDING]
            ]
            message = fill(
                self.message,
                entity=entity.names[0],
                max=_format_number(bound),
                population="pediatric" if pediatric else "adult",
            )
            findings.append(self.finding(spans, message=message))
        return findings

    def _pediatric_applies(self, scan: TraceScan, entity_index: int) -> bool:
        return self.entities[entity_index].pediatric_max is not None and self._child(scan)

    def _bound(self, scan: TraceScan, entity_index: int) -> float:
        entity = self.entities[entity_index]
        if entity.pediatric_max is not None and self._child(scan):
            return entity.pediatric_max
        return entity.max

    def _within_bound(self, scan: TraceScan, entity_index: int, value: float) -> bool:
        """``value <= self._bound(scan, entity_index)``, looking for a child
        (which chooses between the two bounds) only when the answer depends
        on it: the text-wide child search costs more than the rest. Written
        with ``<=`` throughout so that a NaN is never within, as before."""
        entity = self.entities[entity_index]
        pediatric_max = entity.pediatric_max
        if pediatric_max is None:
            return value <= entity.max
        if value <= entity.max and value <= pediatric_max:
            return True
        if not value <= entity.max and not value <= pediatric_max:
            return False
        return value <= self._bound(scan, entity_index)
