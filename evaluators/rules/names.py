"""Finding entity names (drug names, groups of a pair) in case-folded text.

Names are pack data, not regexes: each is matched literally, as whole words,
with any run of whitespace between its words. A regex alternation of a few
hundred names would be tried at every letter of the text and dominate
Tier 1, so instead a name is only looked for when its longest word is among
the text's words (``WordIndex``), and then found with ``str.find`` on its
first word. Where names overlap, the leftmost wins, then the longest, as
with a regex alternation of the names longest first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from evaluators.rules.prefilter import WordIndex

_WORD_RE = re.compile(r"\w+")


def normalise_name(name: str) -> str:
    """Lower case, single spaces: the form names are stored and reported in."""
    return " ".join(name.lower().split())


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class NameMatcher:
    """Whole-word occurrences of a fixed set of names."""

    def __init__(self, names: Iterable[str]) -> None:
        # The longest word of each name: a name cannot occur unless it does.
        self._by_key: dict[str, list[str]] = {}
        self._unkeyed: list[str] = []
        # First part of each name, and a regex for the parts after it.
        self._parts: dict[str, tuple[str, re.Pattern[str] | None]] = {}
        for name in sorted({normalise_name(name) for name in names}):
            words = _WORD_RE.findall(name.casefold())
            if words:
                self._by_key.setdefault(max(words, key=len), []).append(name)
            else:
                self._unkeyed.append(name)
            first, *rest = name.split()
            tail = re.compile("".join(r"\s+" + re.escape(part) for part in rest)) if rest else None
            self._parts[name] = (first, tail)
        self._keys = frozenset(self._by_key)

    def find(self, index: WordIndex, folded: str) -> list[tuple[int, int, str]]:
        """(start, end, normalised name) of each occurrence in ``folded``
        (the case-folded text that ``index`` was built from), in order."""
        hits: list[tuple[int, int, str]] = []
        present = [name for key in index.present(self._keys) for name in self._by_key[key]]
        for name in (*self._unkeyed, *present):
            first, tail = self._parts[name]
            start = folded.find(first)
            while start != -1:
                end = start + len(first)
                if start == 0 or not _is_word_char(folded[start - 1]):
                    if tail is not None:
                        match = tail.match(folded, end)
                        end = match.end() if match is not None else -1
                    if end != -1 and (end == len(folded) or not _is_word_char(folded[end])):
                        hits.append((start, end, name))
                start = folded.find(first, start + 1)
        if len(hits) < 2:
            return hits
        hits.sort(key=lambda hit: (hit[0], hit[0] - hit[1]))
        kept: list[tuple[int, int, str]] = []
        for hit in hits:
            if not kept or hit[0] >= kept[-1][1]:
                kept.append(hit)
        return kept
