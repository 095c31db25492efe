"""Tier 0: normalise the trace, check it can be evaluated, redact PII.

Tier 0 is deliberately cheap and conservative. It reports one finding only,
``input.empty_output``, because a trace without an output cannot be judged
and the result should say why. Everything about the output's form
(truncation, refusals, JSON shape) is an ``output_shape`` rule of the domain
pack, so its severity is the pack's choice. Personal data is counted and
redacted here with typed masks (``<SSN>``, ``<PERSON_DOB>``...) but reported
as findings by Tier 1's ``pii`` rule, for the same reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from evaluators.pii import detect_pii, redact
from evaluators.types import Finding, NormalisedTrace, Severity, Tier0Result

# C0 control characters except tab (\x09) and newline (\x0a). Carriage
# returns are converted to newlines before this runs.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")
# The same set as bytes, for ASCII text (a byte translation is several
# times faster than a regex substitution).
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0B, 0x20)])

# Keys under which a RAG context dict carries its text, and its source id.
_CONTEXT_TEXT_KEYS = ("text", "content", "page_content")
_CONTEXT_ID_KEYS = ("id", "source_id", "doc_id", "source")

EMPTY_OUTPUT = Finding(
    rule_id="input.empty_output",
    category="input",
    severity=Severity.HIGH,
    message="Output is empty or contains only whitespace, so it cannot be evaluated",
)


def unknown_domain_finding(domain: str) -> Finding:
    """Finding for a trace whose domain has no pack.

    The domain name is caller-supplied text, so it is deliberately not
    echoed: the caller already knows what it sent.
    """
    return Finding(
        rule_id="input.unknown_domain",
        category="input",
        severity=Severity.HIGH,
        message="No domain pack exists for the trace's domain, so no domain rules were applied",
    )


def normalise(text: str) -> str:
    """Canonical form used for every offset reported by later tiers.

    Unicode NFC, CRLF and lone CR become LF, C0 control characters other than
    tab and newline are removed, and trailing whitespace is stripped.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii():
        # ASCII text is already NFC.
        text = text.encode("ascii").translate(None, _CONTROL_BYTES).decode("ascii")
    else:
        text = unicodedata.normalize("NFC", text)
        # A regex scan costs several nanoseconds per character, and control
        # characters are rare: look for them in an ASCII copy first ("?"
        # stands for each other character, which is never a control one).
        encoded = text.encode("ascii", "replace")
        if len(encoded.translate(None, _CONTROL_BYTES)) != len(encoded):
            text = _CONTROL_RE.sub("", text)
    return text.rstrip()


def _context(item: Any) -> tuple[str, str | None]:
    """(text, source id) of one RAG context, sent as a string or a dict."""
    if isinstance(item, str):
        return normalise(item), None
    if isinstance(item, Mapping):
        text = next((item[key] for key in _CONTEXT_TEXT_KEYS if isinstance(item.get(key), str)), "")
        source = next((item[key] for key in _CONTEXT_ID_KEYS if isinstance(item.get(key), str | int)), None)
        return normalise(text), None if source is None or isinstance(source, bool) else str(source)
    # Anything else has no text; it keeps its place so citation indices hold.
    return "", None


def sanitise(
    input_text: str,
    output_text: str,
    metadata: Mapping[str, Any] | None = None,
    rag_contexts: Sequence[Any] | None = None,
    rl_episode: Any = None,
) -> tuple[NormalisedTrace, Tier0Result]:
    """Run Tier 0 on one trace.

    Returns the normalised (unredacted) trace for later tiers, and the Tier 0
    result with redacted copies and PII counts. ``valid`` is False only when
    the output is empty. An ``rl_episode`` that is not a mapping is kept as an
    empty episode, which the RL rules then report as malformed.
    """
    contexts = [_context(item) for item in rag_contexts or ()]
    if rl_episode is not None and not isinstance(rl_episode, Mapping):
        rl_episode = {}
    trace = NormalisedTrace(
        input=normalise(input_text),
        output=normalise(output_text),
        metadata=dict(metadata or {}),
        rag_contexts=[text for text, _ in contexts],
        rag_source_ids=[source for _, source in contexts],
        rl_episode=dict(rl_episode) if rl_episode is not None else None,
    )

    valid = bool(trace.output.strip())
    findings = [] if valid else [EMPTY_OUTPUT]

    input_matches = detect_pii(trace.input)
    output_matches = detect_pii(trace.output)
    # Tier 1's pii rule reads these instead of scanning the same text again.
    trace._pii_cache["input"] = input_matches
    trace._pii_cache["output"] = output_matches
    counts = Counter(match.kind for match in (*input_matches, *output_matches))

    result = Tier0Result(
        valid=valid,
        findings=findings,
        redacted_input=redact(trace.input, input_matches),
        redacted_output=redact(trace.output, output_matches),
        pii_counts=dict(counts),
    )
    return trace, result
