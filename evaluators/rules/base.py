"""Machinery shared by the rule kinds.

* ``RuleBase``: the keys every rule has (id, kind, category, severity,
  message, ``ignore_case``, ``max_scan_chars``) and how a rule builds a
  finding.
* ``compile_pack_regex``: pack regexes (``regexes.PackRegex``) are compiled
  once, when the pack is validated, and always matched with a time limit.
* ``TraceScan``: the per-trace state one evaluation shares between rules
  (scan-limited and case-folded copies of the text, word indexes, cached
  PII matches, the current rule's deadline).

Internal patterns (PII, doses, frequencies) stay on the standard ``re``
module: they are fixed, written to fail fast, and not user-controlled.
"""

from __future__ import annotations

import time
import weakref
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from evaluators.folding import fold_case
from evaluators.pii import PiiMatch, detect_pii
from evaluators.rules.prefilter import LiteralScanner, WordIndex
from evaluators.rules.regexes import PackRegex, RegexCompileError, RuleTimeout
from evaluators.types import Finding, NormalisedTrace, Severity, Span, SpanField

# Bounds the size of a finding (it ends up in logs and workflow history) when
# a rule matches many times; the first hits are enough evidence.
MAX_SPANS_PER_FINDING = 20

DEFAULT_MAX_SCAN_CHARS = 100_000

# Wall-clock budget of one rule on one trace. Every pack-regex call gets
# what is left of it as its timeout, so a rule that makes many calls cannot
# add up to more than this. Typical rules take well under a millisecond; the
# margin keeps a garbage-collection pause or a busy core from skipping one.
RULE_TIME_BUDGET_SECONDS = 0.2

RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"

TextField = Literal["input", "output"]


def pack_error(path: str, message: str) -> PydanticCustomError:
    """Validation error for a key below the current model.

    ``path`` is relative to the model that raises it (e.g. ``patterns[1]``);
    ``domains.PackError`` appends it to the location pydantic reports, so the
    author sees ``rules[4].patterns[1]`` rather than just ``rules[4]``.
    """
    return PydanticCustomError("pack", "{message}", {"path": path, "message": message})


def _not_none(severity: Severity) -> Severity:
    if severity is Severity.NONE:
        raise PydanticCustomError("severity", "severity must be one of low, medium, high, critical")
    return severity


# Severities a pack may assign: "none" would be a finding that is not one.
RuleSeverity = Annotated[Severity, AfterValidator(_not_none)]


def fill(template: str, **values: str) -> str:
    """Substitute ``{name}`` placeholders in a pack message.

    Plain replacement rather than ``str.format``: a message with other
    braces in it is still valid, and values come only from pack data (names
    from a table, check names), never from the trace.
    """
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def compile_pack_regex(source: str, ignore_case: bool, path: str, split: bool = True) -> PackRegex:
    """Compile a pack regex or raise a validation error naming ``path``.

    ``split=False`` for patterns whose groups the caller reads.
    """
    try:
        return _shared_pack_regex(source, ignore_case, split)
    except RegexCompileError as exc:
        raise pack_error(path, str(exc)) from exc


# Compiled pack regexes by (source, ignore_case, split), for as long as a
# loaded pack holds them.
_SHARED_REGEXES: weakref.WeakValueDictionary[tuple[str, bool, bool], PackRegex] = (
    weakref.WeakValueDictionary()
)


def _shared_pack_regex(source: str, ignore_case: bool, split: bool) -> PackRegex:
    """One ``PackRegex`` per pattern: rules (and pack versions) that use the
    same pattern share its compiled parts, and a trace's scan answers for
    it once (``PackRegex.exists`` keeps its answer for the whole text)."""
    key = (source, ignore_case, split)
    shared = _SHARED_REGEXES.get(key)
    if shared is None:
        shared = PackRegex(source, ignore_case, split)
        _SHARED_REGEXES[key] = shared
    return shared


class TraceScan:
    """What the rules of one evaluation share about one trace."""

    def __init__(self, trace: NormalisedTrace, scanner: LiteralScanner | None = None) -> None:
        self.trace = trace
        self.scanner = scanner
        self.deadline = 0.0
        self.malformed_episode_reported = False
        self._folded: dict[tuple[str, int], str] = {}
        self._indexes: dict[tuple[str, int], WordIndex] = {}
        self._memo: dict[str, Any] = {}

    def start_rule(self) -> None:
        self.deadline = time.perf_counter() + RULE_TIME_BUDGET_SECONDS

    def time_left(self) -> float:
        left = self.deadline - time.perf_counter()
        if left <= 0:
            raise RuleTimeout
        return left

    def text(self, field: TextField, limit: int) -> str:
        # Slicing a string no longer than ``limit`` returns it without a copy.
        return (self.trace.output if field == "output" else self.trace.input)[:limit]

    def folded(self, field: TextField, limit: int) -> str:
        """Case-folded ``text(field, limit)``, same offsets; computed once."""
        key = (field, limit)
        folded = self._folded.get(key)
        if folded is None:
            index = self._indexes.get(key)
            if index is not None and index.simple_case:
                folded = index.text  # a simple-case text's fold keeps its offsets
            else:
                folded = fold_case(self.text(field, limit))
            self._folded[key] = folded
        return folded

    def index(self, field: TextField, limit: int) -> WordIndex:
        """Word index of ``text(field, limit)`` for prefilters; computed once."""
        key = (field, limit)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = WordIndex(self.text(field, limit), self.scanner)
        return index

    def pii(self, field: TextField, limit: int) -> list[PiiMatch]:
        full = self.trace.output if field == "output" else self.trace.input
        cached = self.trace._pii_cache.get(field)
        if cached is not None and len(full) <= limit:
            return cached
        key = f"pii:{field}:{limit}"
        if key not in self._memo:
            self._memo[key] = detect_pii(full[:limit])
        return self._memo[key]

    def memo(self, key: str) -> Any:
        return self._memo.get(key)

    def remember(self, key: str, value: Any) -> Any:
        self._memo[key] = value
        return value


class RuleBase(BaseModel):
    """Keys shared by every rule kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=RULE_ID_PATTERN)
    category: str = Field(min_length=1, max_length=64)
    severity: RuleSeverity
    message: str = Field(min_length=1, max_length=500)
    ignore_case: bool = True
    max_scan_chars: int = Field(default=DEFAULT_MAX_SCAN_CHARS, ge=1, le=10_000_000)

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        raise NotImplementedError

    def finding(
        self,
        spans: list[tuple[SpanField, int, int]],
        *,
        rule_id: str | None = None,
        severity: Severity | None = None,
        message: str | None = None,
    ) -> Finding:
        return Finding(
            rule_id=rule_id or self.id,
            category=self.category,
            severity=severity or self.severity,
            message=message or self.message,
            spans=[
                Span(field=field, start=start, end=end) for field, start, end in spans[:MAX_SPANS_PER_FINDING]
            ],
        )
