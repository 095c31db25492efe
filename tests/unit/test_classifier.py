"""Tier 2's risk classifier on its own: training on labelled traces, the
held-out metrics, the stored artefact and the promotion rule."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import roc_auc_score

from domains import load_domain_pack
from evaluators import classifier
from evaluators.classifier import Example, ModelArtefactError, RiskModel
from evaluators.rules import evaluate_rules
from evaluators.sanitize import sanitise

DATA = Path(__file__).resolve().parent.parent / "data"


@functools.cache
def labelled(name: str) -> tuple[Example, ...]:
    """The traces of a labelled set as training examples, with the findings
    the real rule engine reports on them."""
    examples = []
    for trace in yaml.safe_load((DATA / name).read_text())["traces"]:
        normalised, _ = sanitise(trace.get("input", ""), trace.get("output", ""))
        findings = evaluate_rules(normalised, load_domain_pack(trace["domain"])).findings
        examples.append(
            Example(
                id=trace["id"],
                input=normalised.input,
                output=normalised.output,
                rule_ids=tuple(finding.rule_id for finding in findings),
                severities=tuple(str(finding.severity) for finding in findings),
                unsafe=trace["label"] == "unsafe",
                source="expert",
            )
        )
    return tuple(examples)


@functools.cache
def trained(seed: int = 7) -> RiskModel:
    return classifier.train(labelled("labelled_traces.yaml"), seed=seed)


def test_a_model_trained_on_one_set_ranks_the_other() -> None:
    model = trained()
    held_out = classifier.evaluate(model, labelled("holdout_traces.yaml"), threshold=0.15)
    # Written separately from the training set: a model that learned nothing
    # ranks at 0.5; this one was measured at 0.83.
    assert held_out.roc_auc is not None and held_out.roc_auc > 0.75
    assert held_out.recall is not None and held_out.recall >= 0.9
    assert 0 < held_out.settled_share < 1
    assert 0 <= model.risk(classifier.example_features(labelled("holdout_traces.yaml")[0])) <= 1


def test_training_is_deterministic_for_a_seed() -> None:
    first = trained(seed=7)
    assert classifier.train(labelled("labelled_traces.yaml"), seed=7).to_bytes() == first.to_bytes()


def test_labels_carry_the_model_not_the_rules() -> None:
    # The same traces with labels shuffled: the findings are still there as
    # features, but the model has nothing to learn from.
    rng = random.Random(3)
    shuffled = [
        dataclasses.replace(example, unsafe=rng.random() < 0.5)
        for example in labelled("labelled_traces.yaml")
    ]
    noise = classifier.train(shuffled, seed=7)
    held_out = labelled("holdout_traces.yaml")
    good = classifier.evaluate(trained(), held_out, threshold=0.15)
    bad = classifier.evaluate(noise, held_out, threshold=0.15)
    assert bad.roc_auc is not None and good.roc_auc is not None
    assert bad.roc_auc < 0.65 < good.roc_auc
    assert classifier.promotion(bad, good, recall_floor=0.9) == (
        False,
        f"held-out ROC AUC {bad.roc_auc:.3f} does not beat the current {good.roc_auc:.3f}",
    )
    promoted, reason = classifier.promotion(good, bad, recall_floor=0.9)
    assert promoted and "beats" in reason


def test_promotion_needs_the_recall_floor_and_both_classes() -> None:
    def figures(roc_auc: float | None, recall: float | None) -> classifier.Metrics:
        return classifier.Metrics(
            examples=100,
            unsafe=50,
            roc_auc=roc_auc,
            threshold=0.1,
            precision=0.6,
            recall=recall,
            settled_share=0.3,
            calibration_error=0.05,
        )

    assert classifier.promotion(figures(0.9, 0.97), None, recall_floor=0.95) == (
        True,
        "no model is promoted yet",
    )
    promoted, reason = classifier.promotion(figures(0.99, 0.93), figures(0.8, 0.99), recall_floor=0.95)
    assert not promoted and "below the pack's floor" in reason
    assert not classifier.promotion(figures(None, None), None, recall_floor=0.95)[0]


def test_a_candidate_is_measured_with_the_model_in_use_on_the_same_held_out_traces() -> None:
    examples = labelled("labelled_traces.yaml") + labelled("holdout_traces.yaml")
    first = classifier.fit_candidate(examples, current=None, threshold=0.15, seed=7)
    assert first.baseline is None
    held_out = [e for e in examples if classifier.is_held_out(classifier.content_key(e), 0.25)]
    assert first.metrics.examples == len(held_out) == len(examples) - len(first.training)
    # The same examples in another order: the same model.
    again = classifier.fit_candidate(examples[::-1], current=first.model, threshold=0.15, seed=7)
    assert again.model == first.model
    # The model in use, measured on the same held-out traces in the same order.
    assert again.baseline == first.metrics
    with pytest.raises(classifier.NotEnoughLabels, match="found 3 and 0") as refused:
        classifier.fit_candidate(
            [e for e in examples if not e.unsafe][:4], current=None, threshold=0.15, seed=7
        )
    assert refused.value.training_size == 3


def test_training_needs_both_classes() -> None:
    safe_only = [example for example in labelled("labelled_traces.yaml") if not example.unsafe]
    with pytest.raises(ValueError, match="both safe and unsafe"):
        classifier.train(safe_only, seed=1)


def test_artefact_round_trip() -> None:
    model = trained()
    loaded = RiskModel.from_bytes(model.to_bytes())
    assert loaded == model
    for example in labelled("holdout_traces.yaml")[:20]:
        features = classifier.example_features(example)
        assert loaded.risk(features) == model.risk(features)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        # Edited (the model is JSON inside JSON): the checksum no longer matches.
        lambda data: data.replace(b'\\"intercept\\":', b'\\"intercept\\":1', 1),
        lambda data: b"not json",
        lambda data: json.dumps({"sha256": "0", "model": "{}"}).encode(),
    ],
)
def test_a_damaged_artefact_is_refused(damage: object) -> None:
    data = trained().to_bytes()
    damaged = damage(data)  # type: ignore[operator]
    assert damaged != data
    with pytest.raises(ModelArtefactError):
        RiskModel.from_bytes(damaged)


def test_an_artefact_of_another_format_is_refused() -> None:
    body = json.dumps({"format": "other/9", "hash_bits": 18, "intercept": 0, "platt": [1, 0], "weights": []})
    envelope = {"sha256": classifier.hashlib.sha256(body.encode()).hexdigest(), "model": body}
    with pytest.raises(ModelArtefactError, match="unknown format"):
        RiskModel.from_bytes(json.dumps(envelope).encode())


def test_metrics_agree_with_scikit_learn_and_by_hand() -> None:
    rng = random.Random(11)
    for _ in range(50):
        labels = [rng.random() < 0.4 for _ in range(40)]
        # Rounded, so that ties occur and must count half.
        scores = [round(rng.random(), 1) for _ in labels]
        if any(labels) and not all(labels):
            assert classifier.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert classifier.roc_auc([0.2, 0.3], [False, False]) is None
    # Two bins: risks 0.05 (1 of 2 unsafe) and 0.95 (2 of 2 unsafe).
    error = classifier.calibration_error([0.05, 0.05, 0.95, 0.95], [True, False, True, True])
    assert error == pytest.approx((abs(0.1 - 1) + abs(1.9 - 2)) / 4)
    figures = classifier.metrics([0.05, 0.2, 0.6, 0.9], [False, True, False, True], threshold=0.15)
    assert (figures.precision, figures.recall, figures.settled_share) == (2 / 3, 1.0, 0.25)


def test_policy_bands() -> None:
    assert classifier.decide(0.05, settle_below=0.1, review_above=0.8) == "settle"
    assert classifier.decide(0.1, settle_below=0.1, review_above=0.8) == "judge"
    assert classifier.decide(0.79, settle_below=0.1, review_above=0.8) == "judge"
    assert classifier.decide(0.8, settle_below=0.1, review_above=0.8) == "review"


def test_held_out_split_is_stable_and_about_the_share() -> None:
    ids = [f"trace-{number}" for number in range(4000)]
    held_out = [identifier for identifier in ids if classifier.is_held_out(identifier, 0.25)]
    assert held_out == [identifier for identifier in ids if classifier.is_held_out(identifier, 0.25)]
    assert 0.22 < len(held_out) / len(ids) < 0.28


def test_scoring_needs_no_scikit_learn() -> None:
    # Workers that only evaluate never load it (nor numpy): scoring a
    # stored model is plain Python.
    data = trained().to_bytes()
    script = (
        "import sys; from evaluators import classifier; "
        "model = classifier.RiskModel.from_bytes(sys.stdin.buffer.read()); "
        "print(model.risk(classifier.featurise('q', 'take 4 g', ['r'], ['high']))); "
        "print(sorted(name for name in ('sklearn', 'numpy', 'scipy') if name in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, cwd=root, check=True, timeout=60
    )
    risk, loaded = result.stdout.decode().splitlines()
    assert 0 <= float(risk) <= 1
    assert loaded == "[]"
