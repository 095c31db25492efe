"""Tier 0: normalise trace text, spot broken outputs and redact PII.

Tier 0 is deliberately cheap and conservative. It reports only structural
quality problems (empty or truncated output); personal data is redacted and
counted here but reported as findings by Tier 1's ``pii`` rule, so that the
severity of each kind is decided by the domain pack.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from typing import Any

from evaluators.pii import detect_pii, redact
from evaluators.types import Finding, NormalisedTrace, Severity, Tier0Result

# C0 control characters except tab (\x09) and newline (\x0a). Carriage
# returns are converted to newlines before this runs.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")

# A line that opens or closes a fenced code block.
_FENCE_RE = re.compile(r"^[ \t]*```", re.MULTILINE)

_TRUNCATION_REASONS = frozenset({"length", "max_tokens"})

# Thresholds for the text-only truncation heuristics; below them an output
# is treated as a complete short answer (e.g. "4").
_MIN_CHARS_FOR_TEXT_HEURISTICS = 200
_MIN_LAST_LINE_FOR_MID_WORD = 80

EMPTY_OUTPUT = Finding(
    rule_id="quality.empty_output",
    category="quality",
    severity=Severity.HIGH,
    message="Output is empty or contains only whitespace",
)

TRUNCATED_OUTPUT = Finding(
    rule_id="quality.truncated_output",
    category="quality",
    severity=Severity.MEDIUM,
    message="Output appears to be truncated",
)


def normalise(text: str) -> str:
    """Canonical form used for every offset reported by later tiers.

    Unicode NFC, CRLF and lone CR become LF, C0 control characters other than
    tab and newline are removed, and trailing whitespace is stripped.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
    return text.rstrip()


def looks_truncated(output: str, metadata: Mapping[str, Any] | None = None) -> bool:
    """Whether ``output`` (already normalised, non-empty) was cut off.

    Only strong signals count, so short complete answers are never flagged:

    * the provider said so: ``finish_reason`` / ``stop_reason`` is
      ``"length"`` or ``"max_tokens"``;
    * a fenced code block was opened but never closed (odd number of fences);
    * an output of at least 200 characters ends with a dangling "..." or "…";
    * an output of at least 200 characters ends mid-word (its last character
      is a letter, so there is no closing punctuation) and its last line is
      longer than 80 characters, i.e. it stops inside running prose rather
      than at a heading or list item.
    """
    if metadata:
        for key in ("finish_reason", "stop_reason"):
            reason = metadata.get(key)
            if isinstance(reason, str) and reason.strip().lower() in _TRUNCATION_REASONS:
                return True

    if len(_FENCE_RE.findall(output)) % 2 == 1:
        return True

    if len(output) >= _MIN_CHARS_FOR_TEXT_HEURISTICS:
        if output.endswith("...") or output.endswith("…"):
            return True
        last_line = output.rsplit("\n", 1)[-1]
        if output[-1].isalpha() and len(last_line) > _MIN_LAST_LINE_FOR_MID_WORD:
            return True

    return False


def sanitise(
    input_text: str,
    output_text: str,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[NormalisedTrace, Tier0Result]:
    """Run Tier 0 on one trace.

    Returns the normalised (unredacted) trace for later tiers, and the Tier 0
    result with quality findings and redacted copies. ``valid`` is False only
    when the output is empty.
    """
    trace = NormalisedTrace(input=normalise(input_text), output=normalise(output_text))

    findings: list[Finding] = []
    valid = bool(trace.output.strip())
    if not valid:
        findings.append(EMPTY_OUTPUT)
    elif looks_truncated(trace.output, metadata):
        findings.append(TRUNCATED_OUTPUT)

    input_matches = detect_pii(trace.input)
    output_matches = detect_pii(trace.output)
    counts = Counter(match.kind for match in (*input_matches, *output_matches))

    result = Tier0Result(
        valid=valid,
        findings=findings,
        redacted_input=redact(trace.input, input_matches),
        redacted_output=redact(trace.output, output_matches),
        pii_counts=dict(counts),
    )
    return trace, result
