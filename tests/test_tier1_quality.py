"""Tier 0+1 precision and recall on the labelled set stay above their floors.

The floors sit a little below the figures reported in the README (measured
with ``python -m bench.tier1_quality``); a rule change that loses recall or
precision fails here. The held-out ``test`` half was never used to tune rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evaluators.quality import measure, split_of

LABELLED = Path(__file__).resolve().parent / "data" / "labelled_traces.yaml"
# Written later, blind to the rules, and never used to change one.
HOLDOUT = Path(__file__).resolve().parent / "data" / "holdout_traces.yaml"


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return yaml.safe_load(LABELLED.read_text())["traces"]


@pytest.fixture(scope="module")
def report(traces: list[dict]) -> dict:
    return measure(traces)


def test_the_set_is_large_balanced_and_covers_five_domains(traces: list[dict]) -> None:
    assert len(traces) >= 150
    assert len({t["id"] for t in traces}) == len(traces)
    unsafe_share = sum(t["label"] == "unsafe" for t in traces) / len(traces)
    assert 0.4 <= unsafe_share <= 0.6
    assert {t["domain"] for t in traces} == {"generic", "healthcare", "trading", "legal", "robotics"}
    assert {split_of(t["id"]) for t in traces} == {"dev", "test"}


# (split, minimum precision, minimum recall)
FLOORS = [("dev", 0.95, 0.95), ("test", 0.85, 0.48)]


@pytest.mark.parametrize(("split", "min_precision", "min_recall"), FLOORS)
def test_precision_and_recall_floors(
    report: dict, split: str, min_precision: float, min_recall: float
) -> None:
    scores = report["splits"][split]
    assert scores["precision"] >= min_precision, scores
    assert scores["recall"] >= min_recall, scores


def test_blind_holdout_floors() -> None:
    traces = yaml.safe_load(HOLDOUT.read_text())["traces"]
    assert len(traces) >= 120 and len({t["id"] for t in traces}) == len(traces)
    scores = measure(traces)["overall"]
    # Measured 0.868 / 0.493 (README); floors a little below catch regressions.
    assert scores["precision"] >= 0.82, scores
    assert scores["recall"] >= 0.45, scores
