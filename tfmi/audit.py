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

from tfmi.attacks.suite import AttackReport, run_attacks, shadow_queries
from tfmi.data.dataset import Dataset, check_features, check_labels, make_dataset
from tfmi.defenses.config import DefenseConfig
from tfmi.errors import TfmiError
from tfmi.executors import ExecutorConfig, LocalExecutor, RayExecutor, make_executor
from tfmi.shadow_chunks import ShadowChunkStore, train_shadow_set
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


def shared_records(data: Dataset, first: np.ndarray, second: np.ndarray) -> int:
    """How many distinct records (features and label alike) appear among both index sets.

    >>> d = make_dataset(np.array([[0.0], [1.0], [0.0]]), [0, 1, 0])
    >>> shared_records(d, np.array([0]), np.array([1, 2]))
    1
    """
    def keys(idx: np.ndarray) -> set[bytes]:
        rows = np.ascontiguousarray(data.x[idx].reshape(len(idx), -1))
        return {row.tobytes() + int(label).to_bytes(8, "little") for row, label in zip(rows, data.y[idx],
                                                                                         strict=True)}

    return len(keys(first) & keys(second))


def overlap_warning(data: Dataset, member_idx: np.ndarray, non_member_idx: np.ndarray) -> str | None:
    """A warning when members and non-members share records (the attacks then measure little), else None.

    >>> d = make_dataset(np.array([[0.0], [1.0], [0.0]]), [0, 1, 0])
    >>> overlap_warning(d, np.array([0]), np.array([1, 2]))[:45]
    '1 distinct records (100% of the smaller set) '
    """
    shared = shared_records(data, member_idx, non_member_idx)
    if not shared:
        return None
    share = min(1.0, shared / min(len(member_idx), len(non_member_idx)))
    return (f"{shared} distinct records ({share:.0%} of the smaller set) are both members and "
            "non-members: an attack cannot tell them apart, so the results understate the leak; "
            "check which records were given as members and which as non-members")


def append_records(
    data: Dataset, records: tuple[Any, Any], name: str = "population"
) -> tuple[Dataset, np.ndarray]:
    """``data`` with the (x, y) ``records`` appended, and the appended records' indices.

    The records must have ``data``'s feature shape and labels below its class count (an audit's
    RMIA population: records the attacker holds that the model never trained on).
    """
    x, y = check_features(records[0], name), check_labels(records[1], data.num_classes, what=f"{name} labels")
    if x.shape[1:] != data.x.shape[1:]:
        raise TfmiError(f"{name} has features of shape {x.shape[1:]} but the audited records have "
                        f"{data.x.shape[1:]}: give records of the same features")
    if len(x) != len(y):
        raise TfmiError(f"{name}: {len(x)} feature rows but {len(y)} labels: they must match")
    combined = make_dataset(np.concatenate([data.x, x]), np.concatenate([data.y, y]), data.num_classes,
                            name=data.name, source=data.source, default_model=data.default_model)
    added = np.arange(len(data), len(combined), dtype=np.int64)
    shared = shared_records(combined, np.arange(len(data)), added)
    if shared:
        raise TfmiError(f"{name} shares {shared} record(s) with the audited members or non-members: RMIA "
                        "compares them with records the model never saw; give records outside the audit")
    return combined, added


def audit_shadow_pool(member_idx: np.ndarray, non_member_idx: np.ndarray) -> np.ndarray:
    """The records an audit's shadows train on: random halves of every audited record (the online
    setting: each record is IN for half the shadows), in index order."""
    return np.sort(np.concatenate([member_idx, non_member_idx]))


def train_audit_shadows(
    data: Dataset, member_idx: np.ndarray, non_member_idx: np.ndarray, config: TrainConfig, *,
    num_shadows: int, seed: int, member_accuracy: float, defense: DefenseConfig | None = None,
    population_idx: np.ndarray | None = None, flip: bool = False,
    executor: ExecutorConfig | LocalExecutor | RayExecutor | None = None, per_task: int | None = None,
    store: ShadowChunkStore | None = None, chunks: list[tuple[int, int]] | None = None, progress=None,
):
    """An audit's shadows (`audit_shadow_pool`), trained as `tfmi.shadow_chunks.train_shadow_set`
    does: here, or in chunks on ``executor`` (a config is started and closed here; a running executor
    is left open), cached in ``store``, only a shard's ``chunks`` (then None is returned). Shadows that
    fail to train are retrained when the audited model, at ``member_accuracy`` on its members, trained
    (`tfmi.attacks.shadow.retrain_failed_for`).

    >>> from tfmi.data import load_dataset
    >>> data = load_dataset("digits")
    >>> shadows = train_audit_shadows(data, np.arange(40), np.arange(40, 80), TrainConfig("mlp", epochs=1),
    ...                               num_shadows=2, seed=0, member_accuracy=1.0)
    >>> shadows.pool.tolist() == list(range(80)), shadows.logits(data.x[:3]).shape
    (True, (2, 3, 10))
    """
    from tfmi.attacks.shadow import retrain_failed_for

    pool = audit_shadow_pool(member_idx, non_member_idx)
    retrain = retrain_failed_for(member_accuracy, data.y[member_idx])
    chunked = executor is not None or per_task is not None or store is not None or chunks is not None
    if store is not None:
        if store.retrain_failed != retrain:
            raise ValueError("the store was made for another audited model: make it with audit_shadow_store")
        queries = store.queries
    else:
        queries = (shadow_queries(data, pool, member_idx, non_member_idx, population_idx, flip=flip)
                   if chunked else None)
    runner = make_executor(executor) if isinstance(executor, ExecutorConfig) else executor
    try:
        return train_shadow_set(data, pool, config, num_shadows=num_shadows, seed=seed, defense=defense,
                                retrain_failed=retrain, queries=queries, executor=runner, per_task=per_task,
                                store=store, chunks=chunks, progress=progress)
    finally:
        if runner is not executor:
            runner.close()


def audit_shadow_store(
    out, data: Dataset, member_idx: np.ndarray, non_member_idx: np.ndarray, config: TrainConfig, *,
    num_shadows: int, seed: int, member_accuracy: float, defense: DefenseConfig | None = None,
    population_idx: np.ndarray | None = None, flip: bool = False, per_task: int | None = None,
) -> ShadowChunkStore:
    """Where `train_audit_shadows`, given the same arguments, caches its chunks under ``out``: shards of
    a job array and a rerun after a crash find each other's finished chunks there."""
    from tfmi.attacks.shadow import retrain_failed_for

    pool = audit_shadow_pool(member_idx, non_member_idx)
    queries = shadow_queries(data, pool, member_idx, non_member_idx, population_idx, flip=flip)
    return ShadowChunkStore(out, data, pool, config, queries, num_shadows=num_shadows, seed=seed,
                            per_task=per_task, defense=defense,
                            retrain_failed=retrain_failed_for(member_accuracy, data.y[member_idx]))


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
    population: tuple[Any, Any] | None = None,
    executor: ExecutorConfig | None = None,
    shadows_per_task: int | None = None,
    shadow_defense: DefenseConfig | None = None,
    **attack_options: Any,
) -> AttackReport:
    """Attack ``model`` on ``members`` (x, y), which it trained on, and ``non_members`` (x, y).

    Args:
        model: a Keras model, a SavedModel loaded with ``tf.saved_model.load``, or a callable
            mapping a batch to logits or probabilities.
        attacks: names or groups (see `tfmi.attacks.suite.parse_attacks`); default all that can run.
        shadows: number of shadow models (0: gap and oracle threshold attacks only). They train on
            random halves of all the given records with ``shadow_config`` (default: ``shadow_model``,
            or ``mlp`` for vectors and ``cnn`` for images, 30 epochs, Adam 1e-3) and, when the audited
            model was trained with a defense, that ``shadow_defense``; see `train_audit_shadows`.
        population: (x, y) records the model never trained on that an attacker may hold, for RMIA
            (never the non-members); without it RMIA is skipped.
        executor, shadows_per_task: train the shadows in chunks of ``shadows_per_task`` on an executor
            (e.g. ``ExecutorConfig("ray")``; see `train_shadows_on`); default: here, in one piece.
        attack_options: passed on to `run_attacks` (``per_class``, ``flip``, ``bootstrap``, ...).

    Records that are both members and non-members get a warning first in the report's ``notes``.
    """
    from tfmi.attacks.signals import model_outputs

    width = model_outputs(model, check_features(members[0], "members")[:1], outputs=outputs).num_classes
    data, member_idx, non_member_idx = combine_members(members, non_members, width)
    population_idx = None
    if population is not None:
        data, population_idx = append_records(data, population)
    shadow_set = None
    if shadows:
        config = shadow_config or TrainConfig(shadow_model or data.default_model, seed=seed)
        member_outputs = model_outputs(model, data.x[member_idx], outputs=outputs).values
        member_accuracy = float(np.mean(np.argmax(member_outputs, axis=1) == data.y[member_idx]))
        shadow_set = train_audit_shadows(
            data, member_idx, non_member_idx, config, num_shadows=shadows, seed=seed,
            member_accuracy=member_accuracy, defense=shadow_defense, population_idx=population_idx,
            flip=bool(attack_options.get("flip")), executor=executor, per_task=shadows_per_task)
    report = run_attacks(model, data, member_idx, non_member_idx, attacks=attacks, shadows=shadow_set,
                         outputs=outputs, seed=seed, population=population_idx, **attack_options)
    warning = overlap_warning(data, member_idx, non_member_idx)
    if warning is not None:
        report.notes.insert(0, warning)
    return report
