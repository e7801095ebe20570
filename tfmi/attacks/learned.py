"""Learned shadow-model attacks: a classifier trained on shadow-model outputs predicts membership.

The attacker trains shadow models whose membership it knows, computes their outputs on members and
non-members, and fits an *attack classifier* mapping an output vector to ``P(member)``:

- `ShokriAttack` (Shokri et al. 2017): one attack classifier per class label, on the full vector of
  log-probabilities;
- `Top3Attack` (Salem et al. 2019, ML-Leaks): one attack classifier for all classes, on the three
  largest probabilities sorted in descending order (labels are not used as features).

Each attack classifier is a `~sklearn.preprocessing.StandardScaler` followed by a small MLP
(``classifier="mlp"``) or a logistic regression (``classifier="logistic"``). Scores are ``P(member)``;
`evaluate` predicts *member* iff the score is at least 0.5 (``threshold_source="shadow"``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> def outputs(n):  # members: a larger margin on their class
...     y, member = rng.integers(3, size=n), rng.random(n) < 0.5
...     logits = rng.normal(size=(n, 3))
...     logits[np.arange(n), y] += np.where(member, 4.0, 1.0)
...     return logits, y, member
>>> logits, y, member = outputs(600)
>>> attack = ShokriAttack("logistic").fit(logits, y, member)
>>> logits, y, member = outputs(600)
>>> result = attack.evaluate(logits[member], logits[~member], y[member], y[~member])
>>> result.attack, result.auc > 0.8
('shokri (logistic)', True)
"""

from __future__ import annotations

import warnings
from typing import Any, Self

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tfmi.attacks.metrics import AttackResult, check_membership, evaluate_scores
from tfmi.attacks.signals import PROBABILITY_EPS, ModelOutputs, _check_outputs, _logsumexp, _resolve_kind
from tfmi.data.dataset import check_labels
from tfmi.errors import TfmiError

__all__ = ["CLASSIFIERS", "ShokriAttack", "Top3Attack"]

#: Attack classifier names accepted by ``classifier=``.
CLASSIFIERS: tuple[str, ...] = ("mlp", "logistic")

#: The MLP uses early stopping (10% of its rows held out) only with at least this many members and
#: this many non-members; smaller training sets are fitted for the full ``max_iter`` instead.
_MIN_ROWS_FOR_EARLY_STOPPING = 20

_TOP_K = 3


def _log_probabilities(values: np.ndarray, kind: str) -> np.ndarray:
    """Row-wise log-probabilities of checked outputs: a log-softmax of logits; probabilities are
    clipped to ``[PROBABILITY_EPS, 1]``, logged and renormalized (as in `compute_signals`)."""
    z = np.log(np.clip(values, PROBABILITY_EPS, 1.0)) if kind == "probabilities" else values
    return z - _logsumexp(z)[:, None]


def _outputs_and_kind(outputs: ModelOutputs | np.ndarray) -> tuple[np.ndarray, str]:
    if isinstance(outputs, ModelOutputs):
        return _check_outputs(outputs.values), outputs.kind
    values = _check_outputs(outputs)
    return values, _resolve_kind(values, "auto")


class _LearnedAttack:
    """Shared validation, fitting and evaluation of the learned attacks."""

    _attack_name = ""

    def __init__(self, classifier: str = "mlp", seed: int = 0, max_train_rows: int | None = 200_000):
        _check_classifier(classifier)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TfmiError(f"seed must be an integer, got {seed!r}")
        if max_train_rows is not None and (
            isinstance(max_train_rows, bool) or not isinstance(max_train_rows, int | np.integer)
            or max_train_rows < 2
        ):
            raise TfmiError(f"max_train_rows must be an integer >= 2 or None, got {max_train_rows!r}")
        self.classifier = classifier
        self.seed = seed
        self.max_train_rows = max_train_rows

    @property
    def name(self) -> str:
        return f"{self._attack_name} ({self.classifier})"

    # ----------------------------------------------------------------------------------- subclass hooks

    def _fit_features(self, log_p: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> None:
        raise NotImplementedError

    def _score_features(self, log_p: np.ndarray, labels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ public

    def fit(self, outputs: ModelOutputs | np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> Self:
        """Fit on shadow-model outputs ``(n, num_classes)``, their class labels and membership flags."""
        _check_classifier(self.classifier)
        values, kind = _outputs_and_kind(outputs)
        labels = check_labels(labels, values.shape[1])
        is_member = _check_is_member(is_member)
        if not (len(values) == len(labels) == len(is_member)):
            raise TfmiError(
                f"shadow outputs ({len(values)}), labels ({len(labels)}) and membership flags "
                f"({len(is_member)}) must have one entry per example"
            )
        if is_member.all() or not is_member.any():
            which = "non-members" if is_member.all() else "members"
            raise TfmiError(
                f"{self.name}: the shadow data has no {which}: give outputs on both the shadow models' "
                "training examples (members) and held-out examples (non-members)"
            )
        if self.max_train_rows is not None and len(values) > self.max_train_rows:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(values), self.max_train_rows,
                                                                   replace=False))
            values, labels, is_member = values[keep], labels[keep], is_member[keep]
            if is_member.all() or not is_member.any():
                raise TfmiError(
                    f"{self.name}: the {self.max_train_rows} subsampled shadow rows are all of one "
                    "membership: raise max_train_rows or balance members and non-members"
                )
        self.num_classes_ = int(values.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._fit_features(_log_probabilities(values, kind), labels, is_member)
        return self

    def score_samples(self, outputs: ModelOutputs | np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``P(member)`` for each example (higher = more likely a member), from the target's outputs."""
        if not hasattr(self, "num_classes_"):
            raise TfmiError(f"{self.name} attack is not fitted: call fit on shadow-model outputs first")
        values, kind = _outputs_and_kind(outputs)
        if values.shape[1] != self.num_classes_:
            raise TfmiError(
                f"{self.name}: outputs have {values.shape[1]} classes but the attack was fitted on "
                f"{self.num_classes_}: score outputs of a model with the shadow models' classes"
            )
        labels = check_labels(labels, self.num_classes_)
        if len(labels) != len(values):
            raise TfmiError(f"outputs have {len(values)} rows but labels have {len(labels)}: they must match")
        return self._score_features(_log_probabilities(values, kind), labels)

    def evaluate(
        self,
        member_outputs: ModelOutputs | np.ndarray,
        non_member_outputs: ModelOutputs | np.ndarray,
        member_labels: np.ndarray,
        non_member_labels: np.ndarray,
        *,
        bootstrap: int = 0,
        seed: int = 0,
    ) -> AttackResult:
        """The attack on the target's members and non-members, member iff ``P(member) >= 0.5``."""
        members = self.score_samples(member_outputs, member_labels)
        others = self.score_samples(non_member_outputs, non_member_labels)
        return evaluate_scores(members, others, attack=self.name, threshold=0.5, threshold_source="shadow",
                               bootstrap=bootstrap, seed=seed)

    # ----------------------------------------------------------------------------------------- helpers

    def _new_model(self, is_member: np.ndarray) -> Pipeline:
        if self.classifier == "logistic":
            model: Any = LogisticRegression(max_iter=1000)
        else:
            smallest = min(int(is_member.sum()), int((~is_member).sum()))
            model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=int(self.seed),
                                  early_stopping=smallest >= _MIN_ROWS_FOR_EARLY_STOPPING)
        return Pipeline([("scale", StandardScaler()), ("classify", model)])

    def _train(self, features: np.ndarray, is_member: np.ndarray) -> Pipeline:
        return self._new_model(is_member).fit(features, is_member.astype(np.int64))


class ShokriAttack(_LearnedAttack):
    """Shokri et al. (2017): one attack classifier per class on the full output vector.

    Features are log-probabilities (a log-softmax of logits): a monotone transform of the probability
    vector that does not saturate when confidences round to 1.0. Classes with no members or no
    non-members in the shadow data (or absent from it) fall back to one global classifier trained on
    all rows, listed in ``fallback_classes_``.

    Args:
        classifier: ``"mlp"`` (one hidden layer of 64 units, early stopping) or ``"logistic"``.
        seed: seeds the MLP and the subsampling of shadow rows.
        max_train_rows: at most this many shadow rows are used (a seeded random subset); None: all.

    Attributes (after `fit`): ``num_classes_``; ``class_models_`` (class -> fitted pipeline);
    ``global_model_`` (the fallback pipeline, None when every class has its own);
    ``fallback_classes_`` (tuple of classes scored by ``global_model_``).
    """

    _attack_name = "shokri"

    def _fit_features(self, log_p: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> None:
        self.class_models_: dict[int, Pipeline] = {}
        for cls in range(self.num_classes_):
            in_class = labels == cls
            if is_member[in_class].any() and (~is_member[in_class]).any():
                self.class_models_[cls] = self._train(log_p[in_class], is_member[in_class])
        self.fallback_classes_ = tuple(c for c in range(self.num_classes_) if c not in self.class_models_)
        self.global_model_ = self._train(log_p, is_member) if self.fallback_classes_ else None

    def _score_features(self, log_p: np.ndarray, labels: np.ndarray) -> np.ndarray:
        scores = np.empty(len(log_p), dtype=np.float64)
        for cls in np.unique(labels):
            rows = labels == cls
            model = self.class_models_.get(int(cls), self.global_model_)
            scores[rows] = _member_probability(model, log_p[rows])
        return scores


class Top3Attack(_LearnedAttack):
    """Salem et al. (2019, ML-Leaks): one attack classifier on the top-3 sorted probabilities.

    Features are the three largest probabilities in descending order (the whole sorted vector when
    there are fewer than 3 classes, without padding) together with their logs, which keep confidences
    near 1.0 apart. Labels are validated but not used as features.

    Args:
        classifier: ``"mlp"`` (one hidden layer of 64 units, early stopping) or ``"logistic"``.
        seed: seeds the MLP and the subsampling of shadow rows.
        max_train_rows: at most this many shadow rows are used (a seeded random subset); None: all.

    Attributes (after `fit`): ``num_classes_``; ``model_`` (the fitted pipeline).
    """

    _attack_name = "top3"

    def _fit_features(self, log_p: np.ndarray, labels: np.ndarray, is_member: np.ndarray) -> None:
        self.model_ = self._train(_top_features(log_p), is_member)

    def _score_features(self, log_p: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return _member_probability(self.model_, _top_features(log_p))


def _top_features(log_p: np.ndarray) -> np.ndarray:
    top = -np.sort(-log_p, axis=1)[:, :_TOP_K]
    return np.hstack([np.exp(top), top])


def _member_probability(model: Pipeline, features: np.ndarray) -> np.ndarray:
    column = int(np.flatnonzero(model.classes_ == 1)[0])
    return model.predict_proba(features)[:, column].astype(np.float64)


def _check_classifier(classifier: Any) -> None:
    if classifier not in CLASSIFIERS:
        raise TfmiError(
            f"unknown attack classifier {classifier!r}: use one of {', '.join(map(repr, CLASSIFIERS))}"
        )


def _check_is_member(is_member: Any) -> np.ndarray:
    return check_membership(is_member, None, "membership flags")
