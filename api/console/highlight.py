"""Trace text cut at the evidence spans of its issues, for highlighting."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    text: str
    issues: tuple[int, ...]  # the issues (by number) whose evidence covers this text


def segments(text: str, spans: Iterable[tuple[int, int, int]]) -> list[Segment]:
    """``text`` cut at every boundary of the ``(issue, start, end)`` spans
    (character offsets, ``end`` exclusive; clipped to the text); each piece
    lists the issues that cover it."""
    clipped = [(issue, max(0, start), min(len(text), end)) for issue, start, end in spans if start < end]
    clipped = [(issue, start, end) for issue, start, end in clipped if start < end]
    cuts = sorted({0, len(text), *(start for _, start, _ in clipped), *(end for _, _, end in clipped)})
    return [
        Segment(text[a:b], tuple(sorted({issue for issue, start, end in clipped if start <= a and b <= end})))
        for a, b in itertools.pairwise(cuts)
        if a < b
    ]
