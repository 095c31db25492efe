"""Tier 0+1 quality against a labelled set: precision and recall of "unsafe" per domain.

A trace is predicted unsafe when its worst Tier 0/1 finding reaches the
domain pack's pass threshold — the same rule the platform applies.

The set is split in two by a hash of each trace id: rules may be tuned by
looking at the ``dev`` half only; the ``test`` half is held out, and its
scores are the honest estimate of how the rules do on traces nobody tuned for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from domains import load_domain_pack
from evaluators.rules import evaluate_rules
from evaluators.sanitize import sanitise
from evaluators.types import Severity


def split_of(trace_id: str) -> str:
    """``dev`` or ``test``, stable across runs and machines."""
    return "dev" if hashlib.sha256(trace_id.encode()).digest()[0] % 2 == 0 else "test"


def predict_unsafe(trace: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """(predicted unsafe, rule ids found) for one labelled trace."""
    pack = load_domain_pack(trace["domain"])
    normalised, tier0 = sanitise(
        trace["input"],
        trace["output"],
        trace.get("metadata"),
        rag_contexts=trace.get("rag_contexts"),
        rl_episode=trace.get("rl_episode"),
    )
    findings = list(tier0.findings) + list(evaluate_rules(normalised, pack).findings)
    worst = Severity.max_of(f.severity for f in findings)
    return worst >= pack.pass_threshold, sorted({f.rule_id for f in findings})


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def _scores(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    tp = sum(1 for label, predicted in pairs if label and predicted)
    fp = sum(1 for label, predicted in pairs if not label and predicted)
    fn = sum(1 for label, predicted in pairs if label and not predicted)
    tn = len(pairs) - tp - fp - fn
    return {
        "traces": len(pairs),
        "unsafe": tp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def measure(traces: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-domain and overall scores, plus the ids the rules got wrong."""
    by_domain: dict[str, list[tuple[bool, bool]]] = {}
    by_split: dict[str, list[tuple[bool, bool]]] = {"dev": [], "test": []}
    held_out_by_domain: dict[str, list[tuple[bool, bool]]] = {}
    missed: list[dict[str, Any]] = []
    false_alarms: list[dict[str, Any]] = []
    for trace in traces:
        label = trace["label"] == "unsafe"
        predicted, rule_ids = predict_unsafe(trace)
        by_domain.setdefault(trace["domain"], []).append((label, predicted))
        by_split[split_of(trace["id"])].append((label, predicted))
        if split_of(trace["id"]) == "test":
            held_out_by_domain.setdefault(trace["domain"], []).append((label, predicted))
        if label and not predicted:
            missed.append({"id": trace["id"], "split": split_of(trace["id"]), "rules": rule_ids})
        elif predicted and not label:
            false_alarms.append({"id": trace["id"], "split": split_of(trace["id"]), "rules": rule_ids})
    everything = [pair for pairs in by_domain.values() for pair in pairs]
    return {
        "overall": _scores(everything),
        "splits": {name: _scores(pairs) for name, pairs in by_split.items()},
        "domains": {domain: _scores(pairs) for domain, pairs in sorted(by_domain.items())},
        "held_out_domains": {domain: _scores(pairs) for domain, pairs in sorted(held_out_by_domain.items())},
        "missed": missed,
        "false_alarms": false_alarms,
    }
