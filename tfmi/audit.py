"""Audit a trained classifier from Python: members and non-members in, an `AttackReport` out.

`audit` is what ``tfmi audit`` runs, without the files: it puts the member and non-member records
into one dataset, optionally trains shadow models on random halves of them (the online setting, so
LiRA online can run: every record is IN for half the shadows), and runs `run_attacks`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x, y = rng.normal(size=(200, 4)).astype("float32"), rng.integers(0, 2, 200)
>>> leaky = lambda batch: np.stack([np.zeros(len(batch)), batch[:, 0]], axis=1)   # a 2-class "model"
>>> report = audit(leaky, (x[:100], y[:100]), (x[100:], y[100:]), attacks="gap,loss")
>>> [r.attack for r in report.results], report.num_members
(['gap', 'loss'], 100)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfmi.attacks.suite import AttackReport, run_attacks
from tfmi.data.dataset import Dataset, check_features, check_labels, make_dataset
from tfmi.errors import TfmiError
from tfmi.training import TrainConfig


def combine_members(
    members: tuple[Any, Any], non_members: tuple[Any, Any], num_classes: int | None = None,
    *, names: tuple[str, str] = ("members", "non-members"),
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """One `Dataset` of the members then the non-members, and each side's record indices.

    ``num_classes`` is the model's output width when known (labels must lie below it); otherwise
    the largest label + 1.
    """
    (x_m, y_m), (x_n, y_n) = members, non_members
    x_m, x_n = check_features(x_m, names[0]), check_features(x_n, names[1])
    if x_m.shape[1:] != x_n.shape[1:]:
        raise TfmiError(f"{names[0]} have features of shape {x_m.shape[1:]} but {names[1]} have "
                        f"{x_n.shape[1:]}: both must hold the same features")
    y_m, y_n = check_labels(y_m, what=f"{names[0]} labels"), check_labels(y_n, what=f"{names[1]} labels")
    for x, y, name in ((x_m, y_m, names[0]), (x_n, y_n, names[1])):
        if len(x) != len(y):
            raise TfmiError(f"{name}: {len(x)} feature rows but {len(y)} labels: they must match")
        if len(x) == 0:
            raise TfmiError(f"no {name} given: an audit needs both members and non-members")
    y = np.concatenate([y_m, y_n])
    top = int(y.max())
    if num_classes is not None and top >= num_classes:
        raise TfmiError(f"labels go up to {top} but the model outputs {num_classes} scores per example: "
                        f"labels must be class indices 0..{num_classes - 1} of this model")
    data = make_dataset(np.concatenate([x_m, x_n]), y, num_classes or top + 1, name="audit",
                        source="members + non-members", default_model="mlp" if x_m.ndim == 2 else "cnn")
    member_idx = np.arange(len(y_m), dtype=np.int64)
    return data, member_idx, np.arange(len(y_m), len(y), dtype=np.int64)


def audit(
    model: Any,
    members: tuple[Any, Any],
    non_members: tuple[Any, Any],
    *,
    attacks: str | None = None,
    shadows: int = 0,
    shadow_config: TrainConfig | None = None,
    shadow_model: str | None = None,
    outputs: str = "auto",
    seed: int = 0,
    **attack_options: Any,
) -> AttackReport:
    """Attack ``model`` on ``members`` (x, y), which it trained on, and ``non_members`` (x, y).

    Args:
        model: a Keras model, a SavedModel loaded with ``tf.saved_model.load``, or a callable
            mapping a batch to logits or probabilities.
        attacks: names or groups (see `tfmi.attacks.suite.parse_attacks`); default all that can run.
        shadows: number of shadow models (0: gap and oracle threshold attacks only). They train on
            random halves of all the given records with ``shadow_config`` (default: ``shadow_model``,
            or ``mlp`` for vectors and ``cnn`` for images, 30 epochs, Adam 1e-3).
        attack_options: passed on to `run_attacks` (``per_class``, ``flip``, ``bootstrap``, ...).
    """
    from tfmi.attacks.signals import model_outputs

    width = model_outputs(model, check_features(members[0], "members")[:1], outputs=outputs).num_classes
    data, member_idx, non_member_idx = combine_members(members, non_members, width)
    shadow_set = None
    if shadows:
        from tfmi.attacks.shadow import train_shadows

        config = shadow_config or TrainConfig(shadow_model or data.default_model, seed=seed)
        pool = np.arange(len(data), dtype=np.int64)
        shadow_set = train_shadows(data, pool, config, num_shadows=shadows, seed=seed)
    return run_attacks(model, data, member_idx, non_member_idx, attacks=attacks, shadows=shadow_set,
                       outputs=outputs, seed=seed, **attack_options)
