"""Rule kind ``citation_grounding``: RAG output not grounded in its contexts.

Only for traces with ``rag_contexts``. Two problems are reported, in one
finding with the rule's message:

* a citation whose source does not exist: group 1 of ``citation_pattern`` is
  either a 1-based context index ("[3]" with three contexts is fine, "[4]"
  is not) or, when the contexts arrived with ids, one of those ids (ids
  cannot be checked when no context carried one). Evidence: the offsets of
  the citation in the output.
* low support: fewer than ``min_support`` of the output's sentences have at
  least half of their content words in one retrieved context. Sentences
  with fewer than three content words (greetings, headings) are not
  counted. Evidence: the offsets of the unsupported sentences.

Content words are lower-cased words of three or more letters that are not
function words, with a trailing plural "s" dropped, plus numbers: a cheap,
deterministic proxy for "says the same thing as the source".
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator

from evaluators.folding import fold_case
from evaluators.rules.base import (
    MAX_SPANS_PER_FINDING,
    RuleBase,
    TraceScan,
    compile_pack_regex,
    pack_error,
)
from evaluators.rules.regexes import PackRegex
from evaluators.types import Finding, SpanField

_WORD_RE = re.compile(r"[a-z][a-z'-]{2,}|\d+(?:\.\d+)?")
_SENTENCE_RE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")

# Sentences with fewer content words say too little to judge.
_MIN_SENTENCE_WORDS = 3
# Share of a sentence's content words that one context must contain.
_SENTENCE_OVERLAP = 0.5

# fmt: off
_STOPWORDS = frozenset({
    "the", "and", "for", "are", "but", "not", "you", "your", "with", "this", "that", "these", "those",
    "there", "their", "they", "them", "then", "than", "was", "were", "will", "would", "could",
    "should", "can", "may", "might", "must", "has", "have", "had", "having", "been", "being", "from",
    "into", "onto", "over", "under", "about", "above", "below", "after", "before", "again", "also",
    "any", "all", "each", "every", "both", "few", "more", "most", "other", "some", "such", "only",
    "own", "same", "very", "just", "what", "which", "who", "whom", "whose", "when", "where", "why",
    "how", "its", "it's", "our", "ours", "out", "off", "here", "his", "her", "hers", "him", "she",
    "he", "we", "us", "one", "two", "per", "via", "yes", "does", "did", "doing", "done"
})
# fmt: on


def _content_words(text: str) -> list[str]:
    words = []
    for word in _WORD_RE.findall(text):
        if word in _STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.append(word)
    return words


class CitationGroundingRule(RuleBase):
    kind: Literal["citation_grounding"]
    min_support: float = Field(default=0.5, ge=0, le=1)
    citation_pattern: str = r"\[(\d+)\]"

    @cached_property
    def _citation(self) -> PackRegex:
        # Not split into parts: group 1 is read.
        return compile_pack_regex(self.citation_pattern, self.ignore_case, "citation_pattern", split=False)

    @model_validator(mode="after")
    def _compile(self) -> CitationGroundingRule:
        if self._citation.groups < 1:
            raise pack_error("citation_pattern", "needs a capturing group 1 for the source id or index")
        return self

    def evaluate(self, scan: TraceScan) -> list[Finding]:
        contexts = scan.trace.rag_contexts
        if not contexts:
            return []
        output = scan.text("output", self.max_scan_chars)
        spans: list[tuple[SpanField, int, int]] = []

        # Citations are blanked out before sentences are read, so that "[2]"
        # is not itself taken for content.
        blanked = list(fold_case(output))
        known_ids = {source.lower() for source in scan.trace.rag_source_ids if source}
        for match in self._citation.finditer(scan, "output", self.max_scan_chars):
            blanked[match.start() : match.end()] = " " * (match.end() - match.start())
            source = (match.group(1) or "").strip()
            if not source:
                continue
            if source.isdecimal():
                exists = 1 <= int(source) <= len(contexts)
            else:
                exists = not known_ids or source.lower() in known_ids
            if not exists:
                spans.append(("output", match.start(), match.end()))

        if self.min_support > 0:
            spans.extend(self._unsupported(scan, "".join(blanked)))
        return [self.finding(spans)] if spans else []

    def _unsupported(self, scan: TraceScan, text: str) -> list[tuple[SpanField, int, int]]:
        key = f"context_words:{self.max_scan_chars}"
        context_words: list[frozenset[str]] | None = scan.memo(key)
        if context_words is None:
            context_words = scan.remember(
                key,
                [
                    frozenset(_content_words(context[: self.max_scan_chars].lower()))
                    for context in scan.trace.rag_contexts
                ],
            )
        counted = 0
        unsupported: list[tuple[SpanField, int, int]] = []
        for sentence in _SENTENCE_RE.finditer(text):
            words = _content_words(sentence.group())
            if len(words) < _MIN_SENTENCE_WORDS:
                continue
            counted += 1
            needed = _SENTENCE_OVERLAP * len(words)
            if not any(sum(word in known for word in words) >= needed for known in context_words):
                start = sentence.start() + len(sentence.group()) - len(sentence.group().lstrip())
                unsupported.append(("output", start, sentence.end()))
        if counted == 0 or (counted - len(unsupported)) / counted >= self.min_support:
            return []
        return unsupported[:MAX_SPANS_PER_FINDING]
