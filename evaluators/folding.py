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


def lower_ascii_letters(text: str) -> str:
    """``text`` with its ASCII letters lower-cased and nothing else changed.

    For a text whose other characters have no case (curly quotes, dashes,
    "°") this is its full case fold, and about twice as fast as
    ``str.lower`` once the text holds one non-ASCII character: UTF-8 keeps
    ASCII bytes as they are and puts no ASCII byte inside another
    character's encoding.
    """
    return text.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")
