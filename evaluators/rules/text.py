"""Rule kinds driven by pack regexes: ``pattern`` and ``required_when``."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator

from evaluators.rules.base import MAX_SPANS_PER_FINDING, RuleBase, TextField, TraceScan, compile_pack_regex
from evaluators.rules.regexes import PackRegex
from evaluators.types import Finding, SpanField


class PatternRule(RuleBase):
    """A forbidden phrase.

    A hit is dropped when ``unless`` matches within ``window`` characters on
    either side of it, e.g. "stop taking your insulin" next to "talk to your
    doctor", or a refusal that quotes the phrase it refuses.
    """

    kind: Literal["pattern"]
    patterns: list[str] = Field(min_length=1)
    unless: str | None = None
    window: int = Field(default=120, ge=0, le=10_000)
    field: Literal["output", "input", "both"] = "output"

    # Compiled on validation (the validator touches them, so that a bad
    # regex is a validation error); cached properties live in the instance
    # dict, which is much faster to read than pydantic private attributes.
    @cached_property
    def _patterns(self) -> list[PackRegex]:
        return [
            compile_pack_regex(source, self.ignore_case, f"patterns[{index}]")
            for index, source in enumerate(self.patterns)
        ]

    @cached_property
    def _unless(self) -> PackRegex | None:
        return None if self.unless is None else compile_pack_regex(self.unless, self.ignore_case, "unless")

    @model_validator(mode="after")
    def _compile(self) -> PatternRule:
        _ = self._patterns, self._unless
        return self

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        fields: tuple[TextField, ...] = ("input", "output") if self.field == "both" else (self.field,)
        spans: list[tuple[SpanField, int, int]] = []
        limit = self.max_scan_chars
        for field in fields:
            patterns = [pattern for pattern in self._patterns if pattern.possible(scan, field, limit)]
            if not patterns:
                continue
            length = len(scan.text(field, limit))
            # Whether ``unless`` can match anywhere; if not, no window can hold it.
            unless = self._unless
            if unless is not None and not unless.possible(scan, field, limit):
                unless = None
            for pattern in patterns:
                for match in pattern.finditer(scan, field, limit):
                    start, end = match.span()
                    # A hit is dropped when ``unless`` matches near it.
                    if unless is not None and unless.exists(
                        scan, field, limit, max(0, start - self.window), min(length, end + self.window)
                    ):
                        continue
                    spans.append((field, start, end))
                    if len(spans) >= MAX_SPANS_PER_FINDING:
                        break
        if not spans:
            return []
        # Several patterns can hit the same place; report each place once.
        return [self.finding(sorted(set(spans), key=lambda span: (span[0] != "input", span[1], span[2])))]


class RequiredWhenRule(RuleBase):
    """A trigger without a required element, e.g. chest pain without a
    referral to emergency care.

    ``trigger`` is looked for in ``trigger_field``; ``require`` must then
    occur somewhere in the output. ``unless``, when it matches, means the rule
    does not apply; it is looked for in the output and, when the trigger may
    come from the input, in the input too (a question that is explicitly
    hypothetical, say).
    """

    kind: Literal["required_when"]
    trigger: str
    trigger_field: Literal["output", "input", "either"] = "output"
    require: str
    unless: str | None = None

    @cached_property
    def _trigger(self) -> PackRegex:
        return compile_pack_regex(self.trigger, self.ignore_case, "trigger")

    @cached_property
    def _require(self) -> PackRegex:
        return compile_pack_regex(self.require, self.ignore_case, "require")

    @cached_property
    def _unless(self) -> PackRegex | None:
        return None if self.unless is None else compile_pack_regex(self.unless, self.ignore_case, "unless")

    @model_validator(mode="after")
    def _compile(self) -> RequiredWhenRule:
        _ = self._trigger, self._require, self._unless
        return self

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        fields: tuple[TextField, ...] = {
            "output": ("output",),
            "input": ("input",),
            "either": ("input", "output"),
        }[self.trigger_field]
        limit = self.max_scan_chars
        # The rule reports nothing when the trigger cannot occur, nor when the
        # required element is there; both are checked before the trigger's
        # hits are collected, the first from literals alone.
        if not any(self._trigger.possible(scan, field, limit) for field in fields):
            return []
        if self._require.exists(scan, "output", limit):
            return []
        spans: list[tuple[SpanField, int, int]] = []
        for field in fields:
            for match in self._trigger.finditer(scan, field, limit):
                spans.append((field, match.start(), match.end()))
                if len(spans) >= MAX_SPANS_PER_FINDING:
                    break
        if not spans:
            return []
        if self._unless is not None:
            unless_fields: tuple[TextField, ...] = fields if "output" in fields else (*fields, "output")
            if any(self._unless.exists(scan, field, limit) for field in unless_fields):
                return []
        return [self.finding(spans)]
