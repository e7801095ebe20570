"""`MembershipInferenceCallback`: monitor membership leakage during ``fit``.

Every ``every`` epochs the callback runs the model (one batched inference pass each) on a fixed set of
members (training records) and non-members (held-out records), and writes into the epoch's ``logs``:

* ``mi_train_accuracy``, ``mi_test_accuracy`` and ``mi_gap`` (their difference);
* ``mi_gap_attack_accuracy``: ``0.5 + gap / 2``, the balanced accuracy of the gap attack (member iff
  correctly classified);
* for each threshold attack ``a``: ``mi_<a>_auc`` and ``mi_<a>_advantage`` (max TPR - FPR);
* ``mi_best_advantage``: the largest advantage over the attacks.

Thresholds are chosen on these very membership labels (``"oracle"``): the numbers are upper bounds
for *monitoring*, not what a real attacker achieves. On epochs the callback skips, every key is logged
as NaN, so ``History.history`` lists stay aligned with ``History.epoch``.

``fit`` adds its `History` callback *after* the user's callbacks and passes the same ``logs`` dict to
all of them in order, so ``History`` (and any callback listed after this one, e.g. ``TensorBoard``
or ``EarlyStopping``) sees the keys. Put this callback *before* ``TensorBoard``/``CSVLogger`` in the
list; callbacks listed earlier do not see them (nor does a ``History`` you pass explicitly before it).

>>> import numpy as np, tensorflow as tf
>>> from sklearn.datasets import load_digits
>>> x, y = load_digits(return_X_y=True)
>>> x = (x / 16.0).astype("float32")
>>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> monitor = MembershipInferenceCallback((x[:200], y[:200]), (x[200:400], y[200:400]))
>>> history = model.fit(x[:200], y[:200], epochs=2, verbose=0, callbacks=[monitor])
>>> len(history.history["mi_loss_auc"]), 0.0 <= history.history["mi_best_advantage"][-1] <= 1.0
(2, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfmi.attacks.signals import Signals, compute_signals, model_outputs
from tfmi.attacks.threshold import THRESHOLD_ATTACKS, ThresholdAttack
from tfmi.data.dataset import check_features, check_labels
from tfmi.errors import TfmiError
from tfmi.outputs import OUTPUT_KINDS

__all__ = ["DEFAULT_ATTACKS", "MembershipInferenceCallback"]

DEFAULT_ATTACKS: tuple[str, ...] = ("loss", "confidence", "entropy", "modified_entropy")


def _check_pair(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as checked float32 features and int64 labels (one-hot labels are arg-maxed)."""
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TfmiError(f"{what} must be a pair (x, y) of arrays") from None
    x = check_features(x, f"{what} features")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot (or soft) labels
        if y.shape[0] == 0:
            raise TfmiError(f"{what} labels are empty: give at least one example")
        y = np.argmax(y, axis=1)
    y = check_labels(y, None, f"{what} labels")
    if len(x) != len(y):
        raise TfmiError(
            f"{what} features have {len(x)} rows but {what} labels have {len(y)}: they must match"
        )
    return x, y


def _is_positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= 1


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def _subsample(
    x: np.ndarray, y: np.ndarray, limit: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or len(x) <= limit:
        return x, y
    keep = np.sort(rng.choice(len(x), size=limit, replace=False))
    return x[keep], y[keep]


class MembershipInferenceCallback(keras.callbacks.Callback):
    """Log the train/test gap and oracle threshold attacks' AUC and advantage during ``fit``.

    Args:
        members: ``(x, y)`` training records; ``y`` integer labels (or one-hot rows).
        non_members: ``(x, y)`` held-out records with the same feature shape.
        every: evaluate at epochs where ``(epoch + 1) % every == 0``; other epochs log NaN.
        attacks: names from `tfmi.attacks.threshold.THRESHOLD_ATTACKS`.
        outputs: ``"auto"``, ``"logits"`` or ``"probabilities"`` (what the model returns). ``"auto"``
            uses a tfmi defended model's ``output_kind``, else the last layer's activation or values.
        advantage_budget: stop training once ``mi_best_advantage`` exceeds it (a number in [0, 1]).
        max_examples: keep at most this many records per side (a seeded random subset); None: all.
        seed: seeds that subset.
        prefix: prefix of the logged keys.

    Attributes:
        history: one dict per evaluated epoch: ``{"epoch": <0-based epoch>, <key>: <float>, ...}``
            (kept across ``fit`` calls).
        stopped_epoch: the 0-based epoch at which the budget stopped training, else None.
    """

    def __init__(
        self,
        members: tuple[np.ndarray, np.ndarray],
        non_members: tuple[np.ndarray, np.ndarray],
        *,
        every: int = 1,
        attacks: Sequence[str] = DEFAULT_ATTACKS,
        outputs: str = "auto",
        advantage_budget: float | None = None,
        max_examples: int | None = 5000,
        seed: int = 0,
        prefix: str = "mi_",
    ):
        super().__init__()
        if not _is_positive_int(every):
            raise TfmiError(f"every must be a positive integer (evaluate every N epochs), got {every!r}")
        if isinstance(attacks, str):
            attacks = (attacks,)
        attacks = tuple(attacks)
        if not attacks:
            raise TfmiError(f"give at least one attack: one of {', '.join(THRESHOLD_ATTACKS)}")
        unknown = [a for a in attacks if a not in THRESHOLD_ATTACKS]
        if unknown:
            raise TfmiError(
                f"unknown threshold attack {unknown[0]!r}: use one of {', '.join(THRESHOLD_ATTACKS)}"
            )
        if len(set(attacks)) != len(attacks):
            raise TfmiError(f"attacks are listed twice: {attacks}")
        if outputs not in ("auto", *OUTPUT_KINDS):
            raise TfmiError(f"outputs must be 'auto', 'logits' or 'probabilities', got {outputs!r}")
        if advantage_budget is not None:
            if not _is_number(advantage_budget):
                raise TfmiError(
                    f"advantage_budget must be a number in [0, 1] or None, got {advantage_budget!r}"
                )
            if not 0.0 <= float(advantage_budget) <= 1.0:
                raise TfmiError(f"advantage_budget must be in [0, 1], got {advantage_budget!r}")
            advantage_budget = float(advantage_budget)
        if max_examples is not None and not _is_positive_int(max_examples):
            raise TfmiError(f"max_examples must be a positive integer or None, got {max_examples!r}")
        if not isinstance(prefix, str):
            raise TfmiError(f"prefix must be a string, got {type(prefix).__name__}")

        member_x, member_y = _check_pair(members, "members")
        other_x, other_y = _check_pair(non_members, "non-members")
        if member_x.shape[1:] != other_x.shape[1:]:
            raise TfmiError(
                f"members have feature shape {member_x.shape[1:]} but non-members {other_x.shape[1:]}: "
                "they must come from the same dataset"
            )
        rng = np.random.default_rng(seed)
        self.member_x, self.member_y = _subsample(member_x, member_y, max_examples, rng)
        self.non_member_x, self.non_member_y = _subsample(other_x, other_y, max_examples, rng)
        self.every = int(every)
        self.attacks = attacks
        self.outputs = outputs
        self.advantage_budget = advantage_budget
        self.prefix = prefix
        self.history: list[dict[str, float]] = []
        self.stopped_epoch: int | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys this callback writes into the epoch logs, in order."""
        names = ["train_accuracy", "test_accuracy", "gap", "gap_attack_accuracy"]
        for attack in self.attacks:
            names += [f"{attack}_auc", f"{attack}_advantage"]
        names.append("best_advantage")
        return tuple(self.prefix + name for name in names)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.stopped_epoch = None

    def _output_kind(self) -> str:
        if self.outputs != "auto":
            return self.outputs
        kind = getattr(self.model, "output_kind", None)  # tfmi defended models know their inner kind
        return kind if kind in OUTPUT_KINDS else "auto"

    def _signals(self, x: np.ndarray, y: np.ndarray) -> Signals:
        # a defended wrapper's call runs its inner network, so this is the plain classifier's output
        return compute_signals(model_outputs(self.model, x, outputs=self._output_kind()), y)

    def evaluate(self) -> dict[str, float]:
        """The monitored values for the current weights, keyed as logged."""
        members = self._signals(self.member_x, self.member_y)
        others = self._signals(self.non_member_x, self.non_member_y)
        train_acc, test_acc = float(np.mean(members.correct)), float(np.mean(others.correct))
        gap = train_acc - test_acc
        values = {"train_accuracy": train_acc, "test_accuracy": test_acc, "gap": gap,
                  "gap_attack_accuracy": 0.5 + gap / 2}
        best = -math.inf
        for attack in self.attacks:
            result = ThresholdAttack(attack).evaluate_oracle(members, others)
            values[f"{attack}_auc"] = float(result.auc)
            values[f"{attack}_advantage"] = float(result.advantage)
            best = max(best, float(result.advantage))
        values["best_advantage"] = best
        return {self.prefix + name: value for name, value in values.items()}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:  # fit always passes a dict; direct calls may not
            logs = {}
        if (epoch + 1) % self.every != 0:
            logs.update(dict.fromkeys(self.keys, math.nan))
            return
        values = self.evaluate()
        logs.update(values)  # the same dict History and later callbacks receive
        self.history.append({"epoch": int(epoch), **values})
        budget = self.advantage_budget
        if budget is not None and values[self.prefix + "best_advantage"] > budget:
            self.model.stop_training = True
            self.stopped_epoch = int(epoch)
