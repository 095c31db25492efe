"""Finding entity names (drug names, groups of a pair) in case-folded text.

Names are pack data, not regexes: each is matched literally, as whole words,
with any run of whitespace between its words. A regex alternation of a few
hundred names would be tried at every letter of the text and dominate
Tier 1, so instead a name is only looked for when its longest word is among
the text's words (``WordIndex``), and then found with ``str.find`` on its
longest part (a common first word such as the "a" of "a few drinks" occurs
hundreds of times in a text). Where names overlap, the leftmost wins, then
the longest, as with a regex alternation of the names longest first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from evaluators.rules.prefilter import WordIndex

_WORD_RE = re.compile(r"\w+")


def normalise_name(name: str) -> str:
    """Lower case, single spaces: the form names are stored and reported in."""
    return " ".join(name.lower().split())


class _Name(NamedTuple):
    """How one name is looked for."""

    name: str
    first: str  # its first part
    tail: re.Pattern[str] | None  # the parts after the first, each after whitespace
    anchor: str  # its longest part, searched for with ``str.find``
    before: tuple[str, ...]  # the parts before the anchor, nearest first
    others: frozenset[str]  # its words other than the key, which must occur too


def _compile_name(name: str, key: str, words: list[str]) -> _Name:
    parts = name.split()
    first, rest = parts[0], parts[1:]
    tail = re.compile("".join(r"\s+" + re.escape(part) for part in rest)) if rest else None
    at = max(range(len(parts)), key=lambda position: len(parts[position]))
    # Its other ASCII words: where the name occurs in the folded text, each
    # is a whole word of the text's case-folded copy too (no character that
    # lowers to a non-word character case-folds to an ASCII word character).
    others = frozenset(word for word in words if word.isascii()) - {key}
    return _Name(name, first, tail, parts[at], tuple(reversed(parts[:at])), others)


def _start_before(text: str, anchor_at: int, before: tuple[str, ...]) -> int:
    """Where a name would start whose anchor part is at ``anchor_at``, or -1.

    Walks back over the parts before the anchor, each followed by a
    whitespace run. Parts contain no whitespace, so the run in front of a
    part is the maximal one: the walk is the exact inverse of the forward
    match (``\\s+part``), and each start has at most one anchor position.
    """
    position = anchor_at
    for part in before:
        end = position
        while end > 0 and text[end - 1].isspace():  # ``isspace`` is exactly ``\s``
            end -= 1
        start = end - len(part)
        if end == position or start < 0 or not text.startswith(part, start):
            return -1
        position = start
    return position


class NameMatcher:
    """Whole-word occurrences of a fixed set of names."""

    def __init__(self, names: Iterable[str]) -> None:
        # The longest word of each name: a name cannot occur unless it does
        # (nor unless its other words do: "tylenol 3" needs "3" as well).
        self._by_key: dict[str, list[_Name]] = {}
        self._unkeyed: list[_Name] = []
        for name in sorted({normalise_name(name) for name in names}):
            words = _WORD_RE.findall(name.casefold())
            if words:
                key = max(words, key=len)
                self._by_key.setdefault(key, []).append(_compile_name(name, key, words))
            else:
                self._unkeyed.append(_compile_name(name, "", words))
        self._keys = frozenset(self._by_key)

    def find(self, index: WordIndex, folded: str) -> list[tuple[int, int, str]]:
        """(start, end, normalised name) of each occurrence in ``folded``
        (the case-folded text that ``index`` was built from), in order."""
        # (start, -end, name): sorts leftmost first, then longest. Two hits
        # never share a span (the span's text determines the name).
        hits: list[tuple[int, int, str]] = []
        find = folded.find
        length = len(folded)
        words = index.words
        present = [
            entry for key in index.present(self._keys) for entry in self._by_key[key] if entry.others <= words
        ]
        for name, first, tail, anchor, before, _ in (*self._unkeyed, *present) if self._unkeyed else present:
            at = find(anchor)
            while at != -1:
                start = _start_before(folded, at, before) if before else at
                at = find(anchor, at + 1)
                if start == -1:
                    continue
                if start:
                    char = folded[start - 1]
                    if char.isalnum() or char == "_":  # not a word start
                        continue
                # The forward match checks the whole name from its start.
                end = start + len(first)
                if tail is not None:
                    match = tail.match(folded, end)
                    if match is None:
                        continue
                    end = match.end()
                if end != length:
                    char = folded[end]
                    if char.isalnum() or char == "_":  # not a word end
                        continue
                hits.append((start, -end, name))
        if len(hits) < 2:
            return [(start, -negative_end, name) for start, negative_end, name in hits]
        hits.sort()
        kept: list[tuple[int, int, str]] = []
        kept_end = -1
        for start, negative_end, name in hits:
            if start >= kept_end:
                kept_end = -negative_end
                kept.append((start, kept_end, name))
        return kept
