"""Pack-supplied regexes: compiled once, matched with a time limit.

A pack is data from whoever uploads it, so no pattern may be trusted to
finish quickly: every match runs on the ``regex`` module with the time left
in the current rule's budget, and a timeout raises ``RuleTimeout``.

Speed. Pack regexes are mostly long alternations of phrases ("chest pain",
"slurred speech", ...), and an engine tries an alternation at every
position of the text, while a pattern that starts with a literal word is
found with a fast string search. So a pattern is split into its top-level
alternatives (distributing a leading group: ``\\b(?:a|b)c`` becomes ``\\bac``
and ``\\bbc``); each part gets a required-literal prefilter
(``prefilter.py``) and only the parts whose literals occur in the trace are
run. A match of the whole pattern is a match of some part, so results are
the same, except that ``finditer`` reports the leftmost non-overlapping
matches over all parts. Patterns with back-references, inline global flags
or groups the caller reads are not split. Finally, a case-insensitive part
that cannot tell case apart anyway runs case-sensitively on the lower-cased
text when the text is ASCII (``folds_safely``), which the ``regex`` module
does several times faster. And a part that says "the text does not mention
X" the usual way, ``\\A(?![\\s\\S]{0,N}?X)``, is run as a search for ``X``,
which has a prefilter of its own (``_absence``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import regex

from evaluators.rules.prefilter import WHOLE, PartRoutes, Prefilter, WordIndex, _Literal, prefilter_for

if TYPE_CHECKING:
    from evaluators.rules.base import TextField, TraceScan

# A longer regex in a pack is almost certainly a mistake or an attack.
MAX_REGEX_CHARS = 5_000

# Splitting stops here; beyond it the parts would cost more than they save.
_MAX_PARTS = 64
_MAX_SPLIT_DEPTH = 3
# Parts lists kept per regex, one per distinct set of possible parts.
_MAX_MASKS_KEPT = 256
# How far past a window the text is read for look-aheads at its end.
_LOOKAHEAD = 64

# Constructs whose meaning depends on the whole pattern.
_UNSPLITTABLE_RE = re.compile(r"\\[1-9]|\\g<|\(\?P=|\(\?\(|\(\?#|\(\?[a-zA-Z^-]+\)|\(\?[&R0-9+-]")


class RuleTimeout(Exception):
    """A pack regex ran out of the rule's time budget on this trace."""


class RegexCompileError(ValueError):
    pass


# The opening of ``\A(?![\s\S]{0,N}?X)``: no match of X starts within the
# first N characters.
_ABSENCE_OPENING_RE = re.compile(r"\\A\(\?!\[\\s\\S\]\{0,(\d+)\}\?")


def _absence(source: str) -> tuple[str, int] | None:
    """``(X, N)`` when ``source`` is exactly ``\\A(?![\\s\\S]{0,N}?X)``.

    Written that way, the engine tries X at each of the first N positions
    of every text; as a search, X is run only when its prefilter allows
    (a text that names no sedative at all needs no regex to say so).
    """
    opening = _ABSENCE_OPENING_RE.match(source)
    # "\A" is two characters, so the look-ahead's "(" is at index 2; it
    # must close at the very end for the whole part to be the look-ahead.
    if opening is None or _group_end(source, 2) != len(source) - 1:
        return None
    body = source[opening.end() : -1]
    if not body or _UNSPLITTABLE_RE.search(body):
        return None
    return body, int(opening.group(1))


def _structure(source: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """``(index, char, depth)`` for each ``(``, ``)`` and ``|`` outside escapes and classes.

    ``depth`` is the nesting depth after an opening parenthesis and before a
    closing one, so a group's ``(`` and ``)`` carry the same depth.
    """
    depth = 0
    index = start
    in_class = False
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            # "]" right after "[" or "[^" is a literal member.
            if source.startswith("^", index + 1):
                index += 1
            if source.startswith("]", index + 1):
                index += 1
        elif char == "(":
            depth += 1
            yield index, char, depth
        elif char == ")":
            yield index, char, depth
            depth -= 1
        elif char == "|":
            yield index, char, depth
        index += 1


def _split_top_level(source: str) -> list[str]:
    """``source`` split at its top-level ``|`` (outside groups and classes)."""
    parts: list[str] = []
    start = 0
    for index, char, depth in _structure(source):
        if char == "|" and depth == 0:
            parts.append(source[start:index])
            start = index + 1
    parts.append(source[start:])
    return parts


def _group_end(source: str, open_index: int) -> int:
    """Index of the ``)`` closing the group opened at ``open_index``, or -1."""
    for index, char, depth in _structure(source, open_index):
        if char == ")" and depth == 1:
            return index
    return -1


def _distribute(alternative: str, depth: int) -> list[str]:
    """Alternatives of ``[\\b](?:x|y)rest`` as ``[\\b]xrest``, ``[\\b]yrest``.

    A leading non-capturing group without a quantifier is unwrapped and its
    alternatives distributed over what follows it, so that each part starts
    with the literal text of one alternative.
    """
    prefix = "\\b" if alternative.startswith("\\b") else ""
    body = alternative[len(prefix) :]
    if depth >= _MAX_SPLIT_DEPTH or not body.startswith("(?:"):
        return [alternative]
    close = _group_end(body, 0)
    rest = body[close + 1 :] if close != -1 else ""
    if close == -1 or rest[:1] in ("?", "*", "+", "{"):
        return [alternative]
    parts: list[str] = []
    for option in _split_top_level(body[3:close]):
        # Grouping keeps "a|b" in an option from binding with ``rest``.
        grouped = option if len(_split_top_level(option)) == 1 else f"(?:{option})"
        parts.extend(_distribute(f"{prefix}{grouped}{rest}", depth + 1))
    return parts


def split_alternatives(source: str) -> list[str]:
    """Parts whose matches together are the matches of ``source``."""
    if _UNSPLITTABLE_RE.search(source):
        return [source]
    parts: list[str] = []
    for alternative in _split_top_level(source):
        parts.extend(_distribute(alternative, 0))
    if len(parts) > _MAX_PARTS or any(not part for part in parts):
        return [source]
    return parts


# What keeps a case-insensitive pattern from being run case-sensitively on
# lower-cased text: upper-case letters (other than in the escapes \\W \\S \\D
# \\B \\A \\Z, which mean the same either way), escapes that name code points,
# properties or lists (\\x41, \\u0041, octal, \\p{Lu}, \\L<name>), inline
# flags, POSIX classes.
_CASE_DEPENDENT_RE = re.compile(r"\\[xuUpPN0-9LXGKM]|\(\?[a-zA-Z^-]|\[:|(?<!\\)[A-Z]")


def folds_safely(source: str) -> bool:
    """Whether, on ASCII text, ``source`` with IGNORECASE matches exactly
    where ``source`` without it matches on the lower-cased text.

    On ASCII text case folding is plain lower-casing, so a pattern made only
    of lower-case literals and case-blind constructs cannot tell the two
    apart. The case-sensitive search is several times faster in the
    ``regex`` module, most of all for a literal prefix.
    """
    return _CASE_DEPENDENT_RE.search(source.replace("\\\\", "")) is None


# Literals of which a text must hold one: (whole words, substrings).
_Clause = tuple[frozenset[str], frozenset[str]]


def _clause(literals: tuple[_Literal, ...]) -> _Clause:
    """One set of alternative literals as (whole words, substrings)."""
    return (
        frozenset(literal.text for literal in literals if literal.kind == WHOLE),
        frozenset(literal.text for literal in literals if literal.kind != WHOLE),
    )


def _any_present(index: WordIndex, clause: _Clause, found: set[str] | None) -> bool:
    """Whether one of the clause's words (as whole words) or substrings
    occurs in the indexed text. ``found``: the substrings known to occur,
    when the pack's scanner has found them all."""
    words, substrings = clause
    if not index.words.isdisjoint(words):
        return True
    if found is not None:
        return not found.isdisjoint(substrings)
    return any(index.contains(literal) for literal in substrings)


class _Part:
    __slots__ = (
        "_compiled",
        "_flags",
        "_source",
        "absent",
        "absent_within",
        "anchored",
        "folded",
        "prefilter",
    )

    def __init__(self, source: str, flags: int, compiled: Any = None) -> None:
        # Anchored at the start of the text (``\A`` before one alternative):
        # it can only match at offset 0, and one ``match`` there is all it
        # takes; a search would try (and fail) at every other offset.
        self.anchored = source.startswith("\\A") and len(_split_top_level(source)) == 1
        self._source, self._flags = source, flags
        # ``\A(?![\s\S]{0,N}?X)``: an empty match at 0 exactly when no match
        # of ``absent`` (X) starts within the first ``absent_within`` (N)
        # characters. Such a part is never compiled as written.
        self.absent: PackRegex | None = None
        self.absent_within = 0
        absence = _absence(source)
        if absence is not None:
            with contextlib.suppress(RegexCompileError):
                self.absent = PackRegex(absence[0], bool(flags & regex.IGNORECASE))
                self.absent_within = absence[1]
        # The same pattern for lower-cased ASCII text, when that is equivalent.
        self.folded: Any = None
        self._compiled = compiled
        self.prefilter: Prefilter | None = None
        if self.absent is not None:
            return
        if flags & regex.IGNORECASE and folds_safely(source):
            self.folded = regex.compile(source, flags & ~regex.IGNORECASE)
        # The pattern as written serves text that is not simple-case. Where a
        # folded variant exists that is rare, so it is compiled on first use:
        # compiled patterns are most of a pack's memory (tens of MB for the
        # shipped packs). Both compile the same syntax, so a part that compiles
        # folded compiles as written too.
        if compiled is None and self.folded is None:
            self._compiled = regex.compile(source, flags)
        self.prefilter = prefilter_for(source)

    @property
    def compiled(self) -> Any:
        if self._compiled is None:
            self._compiled = regex.compile(self._source, self._flags)
        return self._compiled

    def choose(self, original: str, folded: str, simple_case: bool) -> tuple[Any, str]:
        """The compiled pattern and the text to run it on."""
        if simple_case and self.folded is not None:
            return self.folded, folded
        return self.compiled, original


class PackRegex:
    """A pack-supplied regex, compiled once, matched with a time limit and
    only where its prefilters allow.

    Matching methods take the trace field to read (``scan.text`` and its
    word index); offsets in the returned matches are offsets in that text.
    """

    __slots__ = (
        "__weakref__",
        "_also",
        "_also_bits",
        "_always",
        "_by_mask",
        "_groups",
        "_parts",
        "_substring_bits",
        "_substring_set",
        "_substrings",
        "_word_set",
        "_words",
        "source",
    )

    def __init__(self, source: str, ignore_case: bool, split: bool = True) -> None:
        if len(source) > MAX_REGEX_CHARS:
            raise RegexCompileError(f"regex longer than {MAX_REGEX_CHARS} characters")
        flags = regex.IGNORECASE if ignore_case else 0
        try:
            # The whole pattern is compiled even when split: it is what the
            # author wrote, so its errors are the ones to report.
            whole = regex.compile(source, flags)
        except regex.error as exc:
            raise RegexCompileError(f"invalid regex: {exc}") from exc
        self.source = source
        self._groups = int(whole.groups)
        parts: list[_Part] | None = None
        sources = split_alternatives(source) if split else [source]
        if len(sources) > 1:
            # A part that does not compile on its own keeps the whole pattern.
            with contextlib.suppress(regex.error):
                parts = [_Part(part, flags) for part in sources]
        self._parts = parts or [_Part(source, flags, whole)]

        # Which parts each literal can enable, as bit masks over the parts,
        # so that the parts possible on a text come from a few set and
        # integer operations.
        always = 0
        words: dict[str, int] = {}
        substrings: dict[str, int] = {}
        for position, part in enumerate(self._parts):
            bit = 1 << position
            if part.prefilter is None:
                always |= bit
                continue
            for literal in part.prefilter.literals:
                table = words if literal.kind == WHOLE else substrings
                table[literal.text] = table.get(literal.text, 0) | bit
        self._always = always
        # Parts whose prefilter has further requirements (clauses), checked
        # only once their first one holds.
        self._also = tuple(
            (1 << position, tuple(_clause(req) for req in part.prefilter.also))
            for position, part in enumerate(self._parts)
            if part.prefilter is not None and part.prefilter.also
        )
        self._also_bits = 0
        for bit, _ in self._also:
            self._also_bits |= bit
        self._words = words
        # A set, not the dict: set intersection then walks the smaller side
        # (a text's few hundred words, or a regex's few hundred names).
        self._word_set = frozenset(words)
        self._substrings = tuple(substrings.items())
        self._substring_bits = substrings
        self._substring_set = frozenset(substrings)
        # Parts lists by mask of possible parts; few masks occur in practice.
        self._by_mask: dict[int, list[_Part]] = {}

    def _possible_parts(self, index: WordIndex) -> list[_Part]:
        """Parts that could match the indexed text, in pattern order."""
        cache = index.cache
        key = id(self)
        cached = cache.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        scanner = index.scanner
        place = None if scanner is None else scanner.places.get(key)
        found: set[str] | None = None
        if place is not None:
            # The pack's scanner worked out every regex's parts in one go.
            offset, width = place
            mask = (index.part_masks() >> offset) & width
            found = index.found_substrings()
        else:
            mask = self._always
            words = self._words
            for word in index.words.intersection(self._word_set):
                mask |= words[word]
            # Several regexes of a pack often need the same substring: the
            # answers are kept in the index.
            for literal, enabled in self._substrings:
                if enabled & ~mask and index.contains(literal):
                    mask |= enabled
        if mask & self._also_bits:
            mask = self._check_also(index, mask, found)
        parts = self._by_mask.get(mask)
        if parts is None:
            parts = self._parts_for(mask)
        cache[key] = parts
        return parts

    def _check_also(self, index: WordIndex, mask: int, found: set[str] | None) -> int:
        """``mask`` without the parts whose further requirements fail."""
        for bit, clauses in self._also:
            if mask & bit:
                for clause in clauses:
                    if not _any_present(index, clause, found):
                        mask &= ~bit
                        break
        return mask

    def _parts_for(self, mask: int) -> list[_Part]:
        parts = [part for position, part in enumerate(self._parts) if mask >> position & 1]
        if len(self._by_mask) < _MAX_MASKS_KEPT:
            self._by_mask[mask] = parts
        return parts

    def routes(self) -> PartRoutes:
        """What the pack's ``LiteralScanner`` needs to work out this regex's parts."""
        return PartRoutes(id(self), len(self._parts), self._always, self._words, self._substring_bits)

    def with_inner(self) -> list[PackRegex]:
        """This regex and those its parts run in their place (``_absence``)."""
        inner = [part.absent.with_inner() for part in self._parts if part.absent is not None]
        return [self, *(regex for regexes in inner for regex in regexes)]

    def substring_literals(self) -> set[str]:
        """Every substring the prefilters may ask a text about."""
        found = set(self._substring_set)
        for _, clauses in self._also:
            for _, substrings in clauses:
                found |= substrings
        return found

    @property
    def groups(self) -> int:
        return self._groups

    def _read(self, scan: TraceScan, field: TextField, limit: int) -> tuple[list[_Part], str, str, bool]:
        """The parts possible on the field; its text; the case-folded text
        (the text itself when it is not simple-case); whether it is."""
        index = scan.index(field, limit)
        parts = self._possible_parts(index)
        if not parts:
            return parts, "", "", False
        original = scan.text(field, limit)
        if not index.simple_case:
            return parts, original, original, False
        return parts, original, scan.folded(field, limit), True

    def possible(self, scan: TraceScan, field: TextField, limit: int) -> bool:
        """False when the regex cannot match the field at all."""
        return bool(self._possible_parts(scan.index(field, limit)))

    def exists(
        self, scan: TraceScan, field: TextField, limit: int, pos: int = 0, endpos: int | None = None
    ) -> bool:
        """Whether the regex matches in the field, or, with ``pos``/``endpos``,
        whether a match of the text lies within ``[pos, endpos]``.

        A window is not cut out of the text: the text is read up to
        ``_LOOKAHEAD`` characters past it, so that ``\\b`` or a look-ahead at
        the window's end sees the real next character ("okay" is not found
        at the end of a window that cuts "okayish" short).
        """
        if pos == 0 and endpos is None:
            # Rules that share this regex ask about the whole text once.
            cache = scan.index(field, limit).cache
            key = (id(self), "exists")
            answer = cache.get(key)
            if answer is None:
                answer = cache[key] = self._exists(scan, field, limit, 0, None)
            return bool(answer)
        return self._exists(scan, field, limit, pos, endpos)

    def _exists(self, scan: TraceScan, field: TextField, limit: int, pos: int, endpos: int | None) -> bool:
        parts, original, folded, simple_case = self._read(scan, field, limit)
        if not parts:
            return False
        end = len(original) if endpos is None else min(endpos, len(original))
        if endpos is not None and simple_case:
            # A match inside the window has its literal inside the window:
            # a few substring tests on the window rule most parts out.
            window = folded[pos:end]
            parts = [
                part
                for part in parts
                if part.prefilter is None or any(lit.text in window for lit in part.prefilter.literals)
            ]
        stop = min(len(original), end + _LOOKAHEAD)
        for part in parts:
            if part.absent is not None:
                # Its only match is the empty one at 0.
                if pos == 0 and not part.absent.starts_by(scan, field, limit, part.absent_within, stop):
                    return True
                continue
            compiled, text = part.choose(original, folded, simple_case)
            try:
                if part.anchored:
                    match = None if pos > 0 else compiled.match(text, 0, stop, timeout=scan.time_left())
                    if match is not None and match.end() <= end:
                        return True
                    continue
                for match in compiled.finditer(text, pos, stop, timeout=scan.time_left()):
                    if match.start() > end:
                        break
                    if match.end() <= end:
                        return True
            except TimeoutError as exc:
                raise RuleTimeout from exc
        return False

    def starts_by(self, scan: TraceScan, field: TextField, limit: int, latest: int, stop: int) -> bool:
        """Whether a match starts at or before offset ``latest`` in the
        field read up to ``stop`` (what ``[\\s\\S]{0,latest}?`` before the
        regex finds in a look-ahead at the start of the text)."""
        parts, original, folded, simple_case = self._read(scan, field, limit)
        if not parts:
            return False
        for part in parts:
            if part.absent is not None:
                if not part.absent.starts_by(scan, field, limit, part.absent_within, stop):
                    return True
                continue
            compiled, text = part.choose(original, folded, simple_case)
            try:
                if part.anchored:
                    match = compiled.match(text, 0, stop, timeout=scan.time_left())
                else:
                    match = compiled.search(text, 0, stop, timeout=scan.time_left())
            except TimeoutError as exc:
                raise RuleTimeout from exc
            # A part's leftmost match is its earliest start.
            if match is not None and match.start() <= latest:
                return True
        return False

    def finditer(self, scan: TraceScan, field: TextField, limit: int) -> Iterator[Any]:
        """Non-empty, non-overlapping matches in the field, leftmost first."""
        parts, original, folded, simple_case = self._read(scan, field, limit)
        if not parts:
            return
        if len(parts) == 1:
            yield from self._iterate(scan, parts[0], original, folded, simple_case)
            return
        matches = [
            match for part in parts for match in self._iterate(scan, part, original, folded, simple_case)
        ]
        matches.sort(key=lambda match: (match.start(), -match.end()))
        last_end = -1
        for match in matches:
            if match.start() >= last_end:
                last_end = match.end()
                yield match

    @staticmethod
    def _iterate(
        scan: TraceScan, part: _Part, original: str, folded: str, simple_case: bool
    ) -> Iterator[Any]:
        if part.absent is not None:
            return  # its only match is empty, and an empty match is not evidence
        compiled, text = part.choose(original, folded, simple_case)
        try:
            if part.anchored:
                match = compiled.match(text, timeout=scan.time_left())
                if match is not None and match.end() > match.start():
                    yield match
                return
            for match in compiled.finditer(text, timeout=scan.time_left()):
                if match.end() > match.start():  # an empty match is not evidence
                    yield match
        except TimeoutError as exc:
            raise RuleTimeout from exc
