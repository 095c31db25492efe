"""Rule kind ``pair_conflict``: two entities that must not be combined,
mentioned together without a warning (e.g. warfarin with an NSAID).

A pair counts when both groups are mentioned and at least one of them in the
output: advice about ibuprofen to someone who said they take warfarin is the
classic miss. ``unless`` (a warning such as "interact" or "bleeding risk")
anywhere in the output suppresses every pair of the rule. One finding per
conflicting pair; ``message`` may use ``{a}`` and ``{b}``, the pair's group
names from the pack.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator, model_validator

from evaluators.rules.base import (
    RuleBase,
    TextField,
    TraceScan,
    compile_pack_regex,
    fill,
    pack_error,
)
from evaluators.rules.names import NameMatcher, normalise_name
from evaluators.rules.regexes import PackRegex
from evaluators.types import Finding, SpanField


class PairConflictRule(RuleBase):
    kind: Literal["pair_conflict"]
    groups: dict[str, list[str]] = Field(min_length=2)
    pairs: list[tuple[str, str]] = Field(min_length=1)
    unless: str | None = None

    @field_validator("groups")
    @classmethod
    def _normalise_names(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        cleaned: dict[str, list[str]] = {}
        for group, names in groups.items():
            if not names:
                raise pack_error(group, "a group needs at least one name")
            cleaned[group] = [normalise_name(name) for name in names]
            for index, name in enumerate(cleaned[group]):
                if not name:
                    raise pack_error(f"{group}[{index}]", "names must not be empty")
        return cleaned

    @cached_property
    def _name_groups(self) -> dict[str, tuple[str, ...]]:
        """Name -> the groups it belongs to (a name may be in several)."""
        name_groups: dict[str, list[str]] = {}
        for group, names in self.groups.items():
            for name in names:
                name_groups.setdefault(name, []).append(group)
        return {name: tuple(groups) for name, groups in name_groups.items()}

    @cached_property
    def _names(self) -> NameMatcher:
        return NameMatcher(self._name_groups)

    @cached_property
    def _pairs_of(self) -> dict[str, tuple[int, ...]]:
        """Group -> positions in ``pairs`` of the pairs it belongs to."""
        pairs_of: dict[str, list[int]] = {}
        for position, pair in enumerate(self.pairs):
            for group in set(pair):
                pairs_of.setdefault(group, []).append(position)
        return {group: tuple(positions) for group, positions in pairs_of.items()}

    @cached_property
    def _unless(self) -> PackRegex | None:
        return None if self.unless is None else compile_pack_regex(self.unless, self.ignore_case, "unless")

    @model_validator(mode="after")
    def _compile(self) -> PairConflictRule:
        for index, (group_a, group_b) in enumerate(self.pairs):
            for position, group in enumerate((group_a, group_b)):
                if group not in self.groups:
                    raise pack_error(f"pairs[{index}][{position}]", f"unknown group {group!r}")
            if group_a == group_b:
                raise pack_error(f"pairs[{index}]", "a pair needs two different groups")
        _ = self._names, self._unless, self._pairs_of
        return self

    def _mentions(self, scan: TraceScan, field: TextField) -> dict[str, tuple[int, int]]:
        """Group -> span of its first mention in the field."""
        limit = self.max_scan_chars
        first: dict[str, tuple[int, int]] = {}
        for start, end, name in self._names.find(scan.index(field, limit), scan.folded(field, limit)):
            for group in self._name_groups[name]:
                first.setdefault(group, (start, end))
        return first

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        in_output = self._mentions(scan, "output")
        if not in_output:
            return []
        in_input: dict[str, tuple[int, int]] | None = None

        conflicts: list[tuple[str, str, list[tuple[SpanField, int, int]]]] = []
        # Only the pairs with a group in the output can conflict: visit just
        # those (most texts name a few drugs of a long list), in pack order.
        pairs_of = self._pairs_of
        candidates = sorted({position for group in in_output for position in pairs_of.get(group, ())})
        for position in candidates:
            group_a, group_b = self.pairs[position]
            if group_a not in in_output or group_b not in in_output:
                if in_input is None:
                    in_input = self._mentions(scan, "input")
                if group_a not in in_output and group_a not in in_input:
                    continue
                if group_b not in in_output and group_b not in in_input:
                    continue
            spans: list[tuple[SpanField, int, int]] = []
            for group in (group_a, group_b):
                field: TextField = "output" if group in in_output else "input"
                start, end = (in_output if field == "output" else in_input or {})[group]
                spans.append((field, start, end))
            conflicts.append((group_a, group_b, spans))

        if not conflicts:
            return []
        limit = self.max_scan_chars
        if self._unless is not None and self._unless.exists(scan, "output", limit):
            return []
        return [
            self.finding(
                sorted(spans, key=lambda span: (span[0] != "input", span[1])),
                message=fill(self.message, a=a, b=b),
            )
            for a, b, spans in conflicts
        ]
