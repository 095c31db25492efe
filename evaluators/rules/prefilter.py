"""Required-literal prefilters for pack regexes.

Most pack regexes are long alternations of phrases ("chest pain", "slurred
speech", ...). A regex engine tries such an alternation at every position
of the text, which costs far more than the rest of Tier 1 together. Yet
every match of such a regex contains one of a few literal strings, and
when none of them occurs in the text the regex cannot match.

``prefilter_for`` reads that set off the regex's syntax tree (the standard
library's parser), choosing in each sequence the most selective literal
(the longest, not a very common word). Literals the regex bounds as whole
words (``\\bchest\\s``) are looked up in the text's set of words, the rest
are searched as substrings (see ``WordIndex``). The check is sound, never
precise: a "maybe" runs the regex, a "no" skips it. Case-folding both sides
keeps it sound for case-insensitive regexes too.

A pattern the standard parser cannot read, or that uses syntax it would
read differently from the ``regex`` module (fuzzy matching ``{e<=1}``,
POSIX classes ``[[:alpha:]]``), gets no prefilter and always runs.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from re import _constants as sre
from re import _parser as sre_parse
from typing import Any

import ahocorasick_rs
import regex

from evaluators.folding import lower_ascii_letters

# Syntax of the ``regex`` module that the standard parser would accept with
# another meaning: fuzzy matching "{e<=1}", POSIX classes "[[:alpha:]]".
_FOREIGN_SYNTAX_RE = re.compile(r"\{\s*[A-Za-z]|\[[^\]]*\[:")

# Words so frequent that a literal made of one says little about the text;
# a rarer literal is preferred when a regex offers a choice.
# fmt: off
_COMMON_WORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that",
    "these", "those", "there", "here", "i", "you", "he", "she", "we", "they", "me", "him", "her", "us",
    "them", "my", "your", "his", "our", "their", "not", "no", "do", "does", "did", "done", "have",
    "has", "had", "having", "can", "could", "will", "would", "shall", "should", "may", "might", "must",
    "get", "got", "go", "goes", "going", "come", "take", "make", "see", "use", "used", "say", "said",
    "one", "two", "all", "any", "some", "more", "most", "other", "such", "only", "also", "very",
    "just", "than", "then", "so", "up", "out", "about", "into", "over", "after", "before", "again",
    "what", "which", "who", "when", "where", "why", "how", "day", "days", "time", "way", "well",
    "good", "new", "first", "last", "like"
})
# fmt: on

_NON_WORD_CATEGORIES = frozenset({sre.CATEGORY_SPACE, sre.CATEGORY_NOT_WORD, sre.CATEGORY_LINEBREAK})
_REPEATS = frozenset({sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT})
_STARTS = frozenset({sre.AT_BEGINNING, sre.AT_BEGINNING_LINE, sre.AT_BEGINNING_STRING})
_ENDS = frozenset({sre.AT_END, sre.AT_END_LINE, sre.AT_END_STRING})

# Bytes that are not word characters in ASCII text, mapped to spaces so
# that ``split`` yields exactly the ``\w+`` runs.
_ASCII_NON_WORD = bytes(
    code if chr(code).isascii() and (chr(code).isalnum() or chr(code) == "_") else ord(" ")
    for code in range(256)
)


_STDLIB_WORD_RE = re.compile(r"\w+")
_REGEX_WORD_RE = regex.compile(r"\w+")


_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")


@functools.cache
def _case_inert(char: str) -> bool:
    """A character no case operation changes, and so no case-insensitive
    match can pair with another one ("’", "—"; not "µ", whose upper case is
    "Μ")."""
    return char.lower() == char and char.upper() == char and char.casefold() == char


@functools.cache
def _word_char_for_either_engine(char: str) -> bool:
    return bool(_STDLIB_WORD_RE.match(char) or _REGEX_WORD_RE.match(char))


def _unicode_words(text: str, others: set[str]) -> frozenset[str]:
    """The words of a text that is not all ASCII, as both engines see them.

    Tokenising the whole text twice with ``\\w+`` costs more than the rest
    of an index, and most of such a text is ASCII anyway (its non-ASCII
    characters are mostly curly quotes and dashes, word characters for
    neither engine). So: the ASCII words of the text with every non-ASCII
    character taken as a separator, plus both engines' words of each
    whitespace-delimited chunk that holds a non-ASCII *word* character (no
    word spans ASCII whitespace). The extra pieces ("caf" of "café") only
    make the set a larger superset.
    """
    replaced = text.encode("ascii", "replace").translate(_ASCII_NON_WORD).decode("ascii")
    tokens = replaced.split()
    # ``others``: the non-ASCII characters of the original text; folding
    # may have changed a few (the chunks are found in the folded text).
    word_chars = {char.casefold() for char in others if _word_char_for_either_engine(char)}
    word_chars = {char for folded in word_chars for char in folded if not char.isascii()}
    chunks: set[tuple[int, int]] = set()
    for char in word_chars:
        position = text.find(char)
        while position != -1:
            start = max(text.rfind(space, 0, position) for space in _ASCII_SPACES) + 1
            ends = [end for end in (text.find(space, position) for space in _ASCII_SPACES) if end != -1]
            end = min(ends) if ends else len(text)
            chunks.add((start, end))
            position = text.find(char, end)
    for start, end in chunks:
        chunk = text[start:end]
        tokens.extend(_STDLIB_WORD_RE.findall(chunk))
        tokens.extend(_REGEX_WORD_RE.findall(chunk))
    return frozenset(tokens)


_ASCII_SPACES = (" ", "\n", "\t", "\r", "\f", "\v")


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


WHOLE, SUBSTRING = "whole", "substring"


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str
    kind: str  # WHOLE word or SUBSTRING anywhere

    def rarity(self) -> int:
        """How selective (and cheap) a check on this literal is; higher is
        better. A word lookup costs less than a substring search, a common
        word says little, and one or two letters say nothing."""
        common = 5 if self.text in _COMMON_WORDS else 0
        if self.kind == WHOLE:
            return len(self.text) + 1 - common
        if len(self.text) <= 2 and all(_is_word_char(char) for char in self.text):
            return -5
        if len(self.text) == 1:
            return 1  # one punctuation character: "&" is rare, "-" is not
        return len(self.text) - 1 - common


@dataclass(frozen=True, slots=True)
class PartRoutes:
    """Which parts of one regex each literal can enable, as bit masks over
    its ``parts`` parts: ``always`` (parts without a prefilter), ``words``
    (whole-word literals) and ``substrings``."""

    regex_id: int
    parts: int
    always: int
    words: Mapping[str, int]
    substrings: Mapping[str, int]


class LiteralScanner:
    """Everything a pack's regex prefilters ask about a text, answered at
    once: which literals occur (one Aho-Corasick pass), and from that which
    parts of each regex could match.

    A pack's regexes need a few hundred substring answers per text; asked
    one ``in`` search at a time they cost more than the regexes they save.
    Likewise, working out the possible parts regex by regex (a set
    intersection each) costs more than one walk over the literals a text
    holds. The parts of all the pack's regexes are numbered into one bit
    mask (regex after regex, ``places`` says where each regex's bits are),
    so each literal the text holds adds its parts with one ``|``.
    """

    __slots__ = (
        "_always",
        "_automaton",
        "_characters",
        "_route_substrings",
        "_route_words",
        "_substring_bits",
        "_word_bits",
        "literals",
        "places",
    )

    def __init__(self, literals: Iterable[str], routes: Iterable[PartRoutes] = ()) -> None:
        self.literals = frozenset(literal for literal in literals if literal)
        # For each regex (by id), where its parts are in the pack-wide mask:
        # (offset, mask of its width). Every substring of these regexes is
        # among the literals.
        self.places: dict[int, tuple[int, int]] = {}
        self._always = 0
        words: dict[str, int] = {}
        substrings: dict[str, int] = {}
        offset = 0
        for route in routes:
            self.places[route.regex_id] = (offset, (1 << route.parts) - 1)
            self._always |= route.always << offset
            for table, bits_by_literal in ((words, route.words), (substrings, route.substrings)):
                for literal, bits in bits_by_literal.items():
                    table[literal] = table.get(literal, 0) | bits << offset
            offset += route.parts
        self._word_bits = words
        self._substring_bits = substrings
        # Set intersection with a dict would copy its keys into a set first.
        self._route_words = frozenset(words)
        self._route_substrings = frozenset(substrings)
        # Single characters ("." "?" "@") occur everywhere: reporting each
        # occurrence from an automaton costs more than one ``in`` each.
        self._characters = tuple(literal for literal in self.literals if len(literal) == 1)
        self._automaton = _automaton([literal for literal in self.literals if len(literal) > 1])

    def found_in(self, text: str) -> set[str]:
        """The literals that occur in ``text``."""
        found = {character for character in self._characters if character in text}
        if self._automaton is not None:
            # Overlapping: "pain" inside "painkiller" is reported as well.
            found.update(self._automaton.find_matches_as_strings(text, overlapping=True))
        return found

    def part_masks(self, words: frozenset[str], found: set[str]) -> int:
        """The pack-wide mask of the parts whose first literal set is met by
        a text with these ``words`` and ``found`` substrings (see ``places``)."""
        # reduce/map keep the loop in C.
        mask = functools.reduce(
            operator.or_,
            map(self._word_bits.__getitem__, words.intersection(self._route_words)),
            self._always,
        )
        return functools.reduce(
            operator.or_,
            map(self._substring_bits.__getitem__, found.intersection(self._route_substrings)),
            mask,
        )


def _automaton(literals: list[str]) -> ahocorasick_rs.AhoCorasick | None:
    if not literals:
        return None
    # A DFA scans about twice as fast as the default NFA; for a pack's few
    # hundred literals it takes a few hundred kB.
    return ahocorasick_rs.AhoCorasick(sorted(literals), implementation=ahocorasick_rs.Implementation.DFA)


class WordIndex:
    """A case-folded text with its set of words (the ``\\w+`` runs).

    On non-ASCII text the two regex engines in play disagree at the edges
    about what a word character is (the standard library: ``str.isalnum``;
    the ``regex`` module: Unicode properties, e.g. combining marks), so the
    word set is the union of both tokenisations: a superset keeps every
    whole-word check sound, at worst saying "maybe" a little more often.
    ``simple_case`` tells whether case-folding the text only lower-cased
    ASCII letters: it is ASCII, or its other characters (curly quotes,
    dashes) have no case at all. Then a case-insensitive pattern made of
    lower-case ASCII literals matches the folded text exactly where it
    matches the original, and the faster case-sensitive variant can run.
    ``cache`` keeps answers about this text for the rest of the
    evaluation: the possible parts of each regex (keyed by the regex's id)
    and whether a substring occurs (keyed by the substring). With a
    ``scanner``, the substrings it knows are all found in one pass, the
    first time one is asked for."""

    __slots__ = ("_found", "_masks", "cache", "scanner", "simple_case", "text", "words")

    def __init__(self, text: str, scanner: LiteralScanner | None = None) -> None:
        self.scanner = scanner
        self._found: set[str] | None = None
        self._masks: int | None = None
        self.cache: dict[object, object] = {}
        self.words: frozenset[str]
        if text.isascii():
            self.simple_case = True
            self.text = text.lower()  # the case fold of ASCII text
            tokens = self.text.encode("ascii").translate(_ASCII_NON_WORD).decode("ascii").split()
            self.words = frozenset(tokens)
        else:
            others = set(_NON_ASCII_RE.findall(text))
            self.simple_case = all(_case_inert(char) for char in others)
            # Case-inert characters are left alone by every case mapping.
            self.text = lower_ascii_letters(text) if self.simple_case else text.casefold()
            self.words = _unicode_words(self.text, others)

    def has_word(self, word: str) -> bool:
        return word in self.words

    def present(self, words: frozenset[str]) -> frozenset[str]:
        """Which of ``words`` occur as words."""
        return self.words.intersection(words)

    def found_substrings(self) -> set[str]:
        """The scanner's literals that occur in the text (the scanner must be set)."""
        if self._found is None:
            assert self.scanner is not None
            self._found = self.scanner.found_in(self.text)
        return self._found

    def part_masks(self) -> int:
        """The scanner's ``part_masks`` for this text, worked out once."""
        if self._masks is None:
            assert self.scanner is not None
            self._masks = self.scanner.part_masks(self.words, self.found_substrings())
        return self._masks

    def contains(self, literal: str) -> bool:
        """Whether ``literal`` occurs as a substring."""
        # Several regexes of a pack often need the same substring.
        found = self.cache.get(literal)
        if found is None:
            scanner = self.scanner
            if scanner is not None and literal in scanner.literals:
                found = literal in self.found_substrings()
            else:
                found = literal in self.text
            self.cache[literal] = found
        return bool(found)

    def has(self, literal: _Literal) -> bool:
        if literal.kind == WHOLE:
            return literal.text in self.words
        return self.contains(literal.text)


# Further requirements of a regex worth checking: how many, how selective
# one must be to be kept (a common word rules little out) and how many
# substring searches it may cost (word lookups are nearly free).
_MAX_ALSO = 6
_MIN_ALSO_RARITY = 2
_MAX_ALSO_SUBSTRINGS = 8


class Prefilter:
    """One of ``literals`` occurs in every match of the regex; so does one
    literal of each set in ``also`` (other pieces of the same sequence, all
    of which a match contains)."""

    __slots__ = ("also", "literals")

    def __init__(self, literals: frozenset[_Literal], also: tuple[frozenset[_Literal], ...] = ()) -> None:
        self.literals = tuple(sorted(literals, key=lambda lit: (lit.kind, lit.text)))
        self.also = tuple(tuple(sorted(req, key=lambda lit: (lit.kind, lit.text))) for req in also)

    def may_match(self, index: WordIndex) -> bool:
        return any(index.has(literal) for literal in self.literals)


def prefilter_for(source: str) -> Prefilter | None:
    """The prefilter of a regex, or None when it has no usable one."""
    if _FOREIGN_SYNTAX_RE.search(source):
        return None
    collected: list[frozenset[_Literal]] = []
    try:
        parsed = sre_parse.parse(source)
        # The text around a match is unknown: a literal at either end of the
        # pattern is not known to be a whole word.
        literals = _sequence(list(parsed.data), left=False, right=False, collect=collected)
    except (re.error, RecursionError, ValueError, TypeError, OverflowError):
        return None
    if not literals:
        return None
    also: list[frozenset[_Literal]] = []
    for req in sorted(collected, key=lambda req: -min(lit.rarity() for lit in req)):
        if len(also) >= _MAX_ALSO or min(lit.rarity() for lit in req) < _MIN_ALSO_RARITY:
            break
        substrings = sum(1 for lit in req if lit.kind != WHOLE)
        if substrings <= _MAX_ALSO_SUBSTRINGS and req != literals and req not in also:
            also.append(req)
    return Prefilter(literals, tuple(also))


# --------------------------------------------------------------------------
# syntax tree walk
# --------------------------------------------------------------------------
#
# ``left``/``right``: whether the position before/after the piece being
# read is known to be next to a non-word character (or the text's edge), so
# that a literal of word characters found there is a whole word.


def _better(a: frozenset[_Literal] | None, b: frozenset[_Literal] | None) -> frozenset[_Literal] | None:
    """The more selective of two requirements: longest shortest literal,
    then fewest literals."""
    if a is None:
        return b
    if b is None:
        return a

    def score(req: frozenset[_Literal]) -> tuple[int, int]:
        return min(lit.rarity() for lit in req), -len(req)

    return a if score(a) >= score(b) else b


def _non_word_item(op: Any, av: Any) -> bool:
    """Whether the item always consumes at least one character and only
    non-word ones (``\\s``, ``\\s+``, a space, ``[,;]``)."""
    if op is sre.LITERAL:
        return not _is_word_char(chr(av))
    if op is sre.IN:
        if not av or av[0][0] is sre.NEGATE:
            return False
        for kind, value in av:
            if kind is sre.CATEGORY:
                if value not in _NON_WORD_CATEGORIES:
                    return False
            elif kind is sre.LITERAL:
                if _is_word_char(chr(value)):
                    return False
            elif kind is sre.RANGE:
                if any(_is_word_char(chr(c)) for c in range(value[0], min(value[1], 0x2FF) + 1)):
                    return False
                if value[1] > 0x2FF:
                    return False
            else:
                return False
        return True
    if op in _REPEATS:
        low, _, body = av
        return low >= 1 and len(body.data) == 1 and _non_word_item(*body.data[0])
    return False


# A run of literals with a few alternatives in it ("tak(?:e|ing)",
# "call(?:ing)?") is kept as its list of spellings, up to this many.
_MAX_SPELLINGS = 32


def _spellings(items: list[tuple[Any, Any]]) -> list[str] | None:
    """Every string a sequence can match, when it is made only of literals,
    small classes of literals, alternatives and ``?``; else None."""
    result = [""]
    for op, av in items:
        options = _item_spellings(op, av)
        if options is None:
            return None
        result = [head + tail for head in result for tail in options]
        if len(result) > _MAX_SPELLINGS:
            return None
    return result


def _item_spellings(op: Any, av: Any) -> list[str] | None:
    if op is sre.LITERAL:
        return [chr(av)]
    if op is sre.SUBPATTERN:
        return _spellings(list(av[3].data))
    if op is sre.BRANCH:
        options: list[str] = []
        for branch in av[1]:
            spelled = _spellings(list(branch.data))
            if spelled is None:
                return None
            options.extend(spelled)
        return options
    if op is sre.IN and 0 < len(av) <= 6 and all(kind is sre.LITERAL for kind, _ in av):
        return [chr(value) for _, value in av]
    if op in _REPEATS and av[0] == 0 and av[1] == 1:
        spelled = _spellings(list(av[2].data))
        return None if spelled is None else ["", *spelled]
    return None


def _best_piece(text: str, left: bool, right: bool) -> _Literal:
    """The most selective literal every occurrence of ``text`` provides:
    the text itself, or one of its words that is whole (bounded by
    non-word characters inside ``text``, or by ``left``/``right`` at its
    ends) and cheaper to check."""
    best = _Literal(text, SUBSTRING)
    for match in _WORD_PIECE_RE.finditer(text):
        start, end = match.span()
        bounded_left = start > 0 or left
        bounded_right = end < len(text) or right
        if bounded_left and bounded_right:
            piece = _Literal(match.group(), WHOLE)
            if piece.rarity() >= best.rarity():
                best = piece
    return best


_WORD_PIECE_RE = re.compile(r"\w+")


def _sequence(
    items: list[tuple[Any, Any]],
    left: bool,
    right: bool,
    collect: list[frozenset[_Literal]] | None = None,
) -> frozenset[_Literal] | None:
    """The most selective requirement of a sequence; with ``collect``, every
    requirement found among its items is appended to it as well (each is
    necessary on its own, since every item of a sequence must match)."""
    best: frozenset[_Literal] | None = None

    def keep(req: frozenset[_Literal] | None) -> None:
        nonlocal best
        if req is not None and collect is not None:
            collect.append(req)
        best = _better(best, req)

    run: list[str] | None = None  # spellings of the literal run being read
    run_left = False
    boundary = left  # is the current position right after a non-word char?

    def close(run_right: bool) -> None:
        nonlocal run
        if run is not None and all(run):
            texts = {spelling.casefold() for spelling in run}
            keep(frozenset(_best_piece(text, run_left, run_right) for text in texts))
        run = None

    def right_of(index: int) -> bool:
        """Whether what follows item ``index`` starts at a non-word char."""
        if index + 1 >= len(items):
            return right
        op, av = items[index + 1]
        if op is sre.AT:
            return av in (sre.AT_BOUNDARY, *_ENDS)
        return _non_word_item(op, av)

    for index, (op, av) in enumerate(items):
        options = _item_spellings(op, av) if op is not sre.LITERAL else [chr(av)]
        if options is not None and not (run is None and "" in options):
            if run is None:
                run, run_left = [""], boundary
            if len(run) * len(options) <= _MAX_SPELLINGS:
                run = [head + tail for head in run for tail in options]
                boundary = all(not _is_word_char(option[-1]) if option else boundary for option in options)
                continue
        if op is sre.AT:
            close(av is sre.AT_BOUNDARY or av in _ENDS)
            boundary = av is sre.AT_BOUNDARY or av in _STARTS
            continue
        if _non_word_item(op, av):
            close(True)
            boundary = True
            continue
        close(False)
        if op is sre.BRANCH:
            branches = [_sequence(list(branch.data), boundary, right_of(index)) for branch in av[1]]
            if all(branch is not None for branch in branches):
                keep(frozenset().union(*branches))  # type: ignore[arg-type]
        elif op is sre.SUBPATTERN:
            keep(_sequence(list(av[3].data), boundary, right_of(index)))
        elif op is sre.ATOMIC_GROUP:
            keep(_sequence(list(av.data), boundary, right_of(index)))
        elif op in _REPEATS:
            low, _, body = av
            if low >= 1:
                keep(_sequence(list(body.data), boundary, False))
            if (low >= 1 or boundary) and _ends_non_word(list(body.data)):
                # Repeated, it leaves the position after a non-word character;
                # skipped (``(?:home\s+)?``), where it was.
                boundary = True
                continue
        elif op is sre.ASSERT_NOT and av[0] == -1 and _excludes_word_chars(av[1]):
            # (?<!\w), (?<![\w-]): the position is at a word start.
            boundary = True
            continue
        boundary = False
    close(right)
    return best


def _ends_non_word(items: list[tuple[Any, Any]]) -> bool:
    """Whether every match of a sequence ends with a non-word character."""
    if not items:
        return False
    op, av = items[-1]
    if op is sre.SUBPATTERN:
        return _ends_non_word(list(av[3].data))
    if op is sre.BRANCH:
        return all(_ends_non_word(list(branch.data)) for branch in av[1])
    return _non_word_item(op, av)


def _excludes_word_chars(body: Any) -> bool:
    """Whether a negative look-behind body is one character class that
    contains ``\\w``, so the character before is not a word character."""
    data = list(body.data)
    if len(data) != 1 or data[0][0] is not sre.IN:
        return False
    return any(kind is sre.CATEGORY and value is sre.CATEGORY_WORD for kind, value in data[0][1])
