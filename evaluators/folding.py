"""Case folding that keeps character offsets.

Findings report offsets into the normalised text, so any lower-cased copy
scanned for speed must have exactly the same length as the original.
"""

from __future__ import annotations

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_case(text: str) -> str:
    """Lower-cased ``text`` with exactly the same character offsets."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # A few characters (e.g. "İ") lower-case to two; fall back to ASCII only.
    return text.translate(_ASCII_LOWER)
