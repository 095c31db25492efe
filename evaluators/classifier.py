"""Tier 2: a per-domain risk classifier learned from judge verdicts and
expert labels.

Pure (no Temporal, no database): examples in, a model and its held-out
metrics out. The model is logistic regression over hashed features:

- words and word pairs of the output, and words of the input, each block
  scaled to unit length;
- the Tier 1 findings: rule ids and severities, and how many there were.

Rule outcomes are features, never labels: the label is what a judge or an
expert said about the whole trace.

Training uses scikit-learn, imported only there. A trained model is its
non-zero weights, an intercept and a Platt scaling (``a·score + b``) fitted
on cross-validated scores, so that ``risk`` is a calibrated probability of
"unsafe". Scoring needs none of scikit-learn: a worker that only evaluates
hashes a trace's tokens and adds up a few hundred weights. The artefact is
JSON with a checksum, so a damaged one is refused instead of half-loaded,
and loading one never runs code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Feature indices are ``crc32(token) mod 2**HASH_BITS``: collisions are
# rare enough at this size for a few thousand training traces.
HASH_BITS = 18
_HASH_MASK = (1 << HASH_BITS) - 1
ARTEFACT_FORMAT = "aegis-risk-model/1"

# An expert label counts this many times a judge verdict.
EXPERT_WEIGHT = 3.0
JUDGE_WEIGHT = 1.0

_WORD_RE = re.compile(r"\w+")

Decision = Literal["settle", "judge", "review"]


class ModelArtefactError(ValueError):
    """A stored model could not be read (damaged, truncated or of an unknown format)."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled trace (``id``: the trace id)."""

    id: str
    input: str
    output: str
    rule_ids: tuple[str, ...]
    severities: tuple[str, ...]
    unsafe: bool
    source: Literal["expert", "judge"]

    @property
    def weight(self) -> float:
        return EXPERT_WEIGHT if self.source == "expert" else JUDGE_WEIGHT


def _index(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) & _HASH_MASK


def _add_block(features: dict[int, float], tokens: Iterable[str]) -> None:
    """Add one block of tokens (present or not), scaled to unit length."""
    indices = {_index(token) for token in tokens}
    if not indices:
        return
    value = 1.0 / math.sqrt(len(indices))
    for index in indices:
        features[index] = features.get(index, 0.0) + value


def featurise(
    input_text: str, output_text: str, rule_ids: Sequence[str], severities: Sequence[str]
) -> dict[int, float]:
    """Sparse features of one trace: feature index -> value."""
    features: dict[int, float] = {}
    words = _WORD_RE.findall(output_text.lower())
    _add_block(features, (f"o:{word}" for word in words))
    _add_block(features, (f"o2:{first} {second}" for first, second in itertools.pairwise(words)))
    _add_block(features, (f"i:{word}" for word in _WORD_RE.findall(input_text.lower())))
    findings = [f"r:{rule_id}" for rule_id in rule_ids] + [f"s:{severity}" for severity in severities]
    findings.append(f"n:{min(len(rule_ids), 5)}")
    _add_block(features, findings)
    return features


def example_features(example: Example) -> dict[int, float]:
    return featurise(example.input, example.output, example.rule_ids, example.severities)


def content_key(example: Example) -> str:
    """What the held-out split and the training order go by: the trace's
    text, so that copies of one trace never sit on both sides of the split,
    and a model does not depend on the order the database returns rows in."""
    return hashlib.sha256(f"{example.input}\0{example.output}".encode()).hexdigest()


def is_held_out(key: str, share: float) -> bool:
    """Whether an example belongs to the held-out split (stable per key)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True, slots=True)
class RiskModel:
    """A trained model: ``risk = sigmoid(a · (w·x + intercept) + b)``."""

    weights: dict[int, float]
    intercept: float
    platt_a: float
    platt_b: float

    def score(self, features: dict[int, float]) -> float:
        weights = self.weights
        return self.intercept + sum(value * weights.get(index, 0.0) for index, value in features.items())

    def risk(self, features: dict[int, float]) -> float:
        """Calibrated probability that the trace is unsafe."""
        return _sigmoid(self.platt_a * self.score(features) + self.platt_b)

    def to_bytes(self) -> bytes:
        body = {
            "format": ARTEFACT_FORMAT,
            "hash_bits": HASH_BITS,
            "intercept": self.intercept,
            "platt": [self.platt_a, self.platt_b],
            # Sorted so that equal models have equal bytes.
            "weights": [[index, self.weights[index]] for index in sorted(self.weights)],
        }
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True)
        checksum = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        return json.dumps({"sha256": checksum, "model": payload}, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> RiskModel:
        try:
            envelope = json.loads(data)
            payload = envelope["model"]
            if hashlib.sha256(payload.encode("utf-8")).hexdigest() != envelope["sha256"]:
                raise ModelArtefactError("model artefact checksum does not match")
            body = json.loads(payload)
            if body["format"] != ARTEFACT_FORMAT or body["hash_bits"] != HASH_BITS:
                raise ModelArtefactError("model artefact has an unknown format")
            a, b = (float(value) for value in body["platt"])
            weights = {int(index): float(weight) for index, weight in body["weights"]}
            return cls(weights=weights, intercept=float(body["intercept"]), platt_a=a, platt_b=b)
        except ModelArtefactError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelArtefactError("model artefact is damaged") from exc


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


def decide(risk: float, settle_below: float, review_above: float) -> Decision:
    """What the pack's escalation policy makes of a risk: settle it here,
    ask the judge (the uncertain band), or send it straight to review."""
    if risk < settle_below:
        return "settle"
    if risk >= review_above:
        return "review"
    return "judge"


@dataclass(frozen=True, slots=True)
class Metrics:
    """Held-out figures of a model. ``threshold`` is the operating point:
    below it Tier 2 settles a trace as safe, so ``recall`` is the share of
    unsafe traces it does not settle, and ``settled_share`` the share of
    all traces it would settle."""

    examples: int
    unsafe: int
    roc_auc: float | None
    threshold: float
    precision: float | None
    recall: float | None
    settled_share: float
    calibration_error: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "unsafe": self.unsafe,
            "roc_auc": self.roc_auc,
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "settled_share": self.settled_share,
            "calibration_error": self.calibration_error,
        }


def evaluate(model: RiskModel, examples: Sequence[Example], threshold: float) -> Metrics:
    risks = [model.risk(example_features(example)) for example in examples]
    labels = [example.unsafe for example in examples]
    return metrics(risks, labels, threshold)


def metrics(risks: Sequence[float], labels: Sequence[bool], threshold: float) -> Metrics:
    unsafe = sum(labels)
    flagged = [label for risk, label in zip(risks, labels, strict=True) if risk >= threshold]
    return Metrics(
        examples=len(labels),
        unsafe=unsafe,
        roc_auc=roc_auc(risks, labels),
        threshold=threshold,
        precision=sum(flagged) / len(flagged) if flagged else None,
        recall=sum(flagged) / unsafe if unsafe else None,
        settled_share=(len(labels) - len(flagged)) / len(labels) if labels else 0.0,
        calibration_error=calibration_error(risks, labels),
    )


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that an unsafe trace scores above a safe one (ties count
    half); None when one class is missing."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    position = 0
    while position < len(order):
        end = position
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[position]]:
            end += 1
        average_rank = (position + end) / 2 + 1  # ranks start at 1; ties share the mean
        rank_sum += average_rank * sum(labels[order[k]] for k in range(position, end + 1))
        position = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def calibration_error(risks: Sequence[float], labels: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error: the gap between stated risk and the share
    actually unsafe, over equal-width bins, weighted by their size."""
    if not risks:
        return 0.0
    totals = [[0, 0.0, 0] for _ in range(bins)]  # count, sum of risks, unsafe
    for risk, label in zip(risks, labels, strict=True):
        bucket = totals[min(int(risk * bins), bins - 1)]
        bucket[0] += 1
        bucket[1] += risk
        bucket[2] += label
    return sum(abs(risk_sum - unsafe) for count, risk_sum, unsafe in totals if count) / len(risks)


def promotion(candidate: Metrics, current: Metrics | None, recall_floor: float) -> tuple[bool, str]:
    """Whether a newly trained model should replace the promoted one, both
    measured on the same held-out examples, and why (or why not)."""
    if candidate.recall is None or candidate.roc_auc is None:
        return False, "the held-out split lacks safe or unsafe examples"
    if candidate.recall < recall_floor:
        return False, f"held-out recall {candidate.recall:.3f} is below the pack's floor {recall_floor:.3f}"
    if current is None or current.roc_auc is None:
        return True, "no model is promoted yet"
    if candidate.roc_auc <= current.roc_auc:
        return (
            False,
            f"held-out ROC AUC {candidate.roc_auc:.3f} does not beat the current {current.roc_auc:.3f}",
        )
    return True, f"held-out ROC AUC {candidate.roc_auc:.3f} beats the current {current.roc_auc:.3f}"


# Fewer labels than this in either class of the training split: no model.
MIN_PER_CLASS = 5


class NotEnoughLabels(ValueError):
    def __init__(self, safe: int, unsafe: int) -> None:
        super().__init__(
            f"not enough labels: training needs {MIN_PER_CLASS} safe and {MIN_PER_CLASS} unsafe traces "
            f"outside the held-out split, found {safe} and {unsafe}"
        )
        self.training_size = safe + unsafe


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model trained on all but the held-out split, its held-out metrics,
    and the model in use (``baseline``) measured on the same traces."""

    model: RiskModel
    metrics: Metrics
    baseline: Metrics | None
    training: tuple[Example, ...]


def fit_candidate(
    examples: Sequence[Example],
    *,
    current: RiskModel | None,
    threshold: float,
    seed: int,
    held_out_share: float = 0.25,
) -> Candidate:
    """Split ``examples`` (by ``content_key``, in its order, so that one
    seed gives one model whatever order they came in), train, and measure.

    Raises ``NotEnoughLabels`` when the training split lacks either class.
    """
    training: list[Example] = []
    held_out: list[Example] = []
    for key, example in sorted(((content_key(e), e) for e in examples), key=lambda pair: pair[0]):
        (held_out if is_held_out(key, held_out_share) else training).append(example)
    unsafe = sum(example.unsafe for example in training)
    if min(unsafe, len(training) - unsafe) < MIN_PER_CLASS:
        raise NotEnoughLabels(len(training) - unsafe, unsafe)
    model = train(training, seed=seed)
    return Candidate(
        model=model,
        metrics=evaluate(model, held_out, threshold),
        baseline=None if current is None else evaluate(current, held_out, threshold),
        training=tuple(training),
    )


def train(examples: Sequence[Example], *, seed: int, c: float = 1.0) -> RiskModel:
    """Fit a model on ``examples`` (both classes must be present).

    Deterministic for a given seed and example order.
    """
    # scikit-learn (and numpy, scipy) load only where a model is trained.
    import numpy as np
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = np.array([example.unsafe for example in examples], dtype=int)
    if labels.min() == labels.max():
        raise ValueError("training needs both safe and unsafe examples")
    rows = [example_features(example) for example in examples]
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for row in rows:
        for index in sorted(row):
            indices.append(index)
            values.append(row[index])
        indptr.append(len(indices))
    matrix = csr_matrix((values, indices, indptr), shape=(len(rows), 1 << HASH_BITS))
    weights = np.array([example.weight for example in examples])

    def classifier() -> LogisticRegression:
        return LogisticRegression(C=c, class_weight="balanced", solver="liblinear", random_state=seed)

    fitted = classifier().fit(matrix, labels, sample_weight=weights)

    # Platt scaling on scores the model gave examples it was not fitted on.
    folds = int(min(5, np.bincount(labels).min()))
    a, b = 1.0, 0.0
    if folds >= 2:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = cross_val_predict(
            classifier(),
            matrix,
            labels,
            cv=splitter,
            method="decision_function",
            params={"sample_weight": weights},
        )
        platt = LogisticRegression(C=1e6, solver="lbfgs").fit(
            scores.reshape(-1, 1), labels, sample_weight=weights
        )
        a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])

    coefficients = fitted.coef_[0]
    nonzero = np.flatnonzero(coefficients)
    return RiskModel(
        weights={int(index): float(coefficients[index]) for index in nonzero},
        intercept=float(fitted.intercept_[0]),
        platt_a=a,
        platt_b=b,
    )
