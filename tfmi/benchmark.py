"""Defenses against attacks, over seeds: one resumable cell per (defense setting, seed).

A `BenchmarkSpec` fixes the dataset, model, training, attacks and shadow count; its cells are the
(defense setting, seed) pairs. A defense may appear with several settings (variants, e.g. from a
`Sweep` through `expand_sweeps`): each is one row, named by its `variant_labels` label. `run_cell`
trains the target with the defense, trains its shadows the same way (same model, training and
defense, on random halves of the target's members and non-members: the online LiRA setting) and runs
every attack. Shadows are never shared between settings: a defended target's shadows train with its
own setting. A `CellStore` keeps each finished cell as one JSON file named by the hash of its full
configuration (and of the data), written atomically, so an interrupted benchmark re-run skips the
cells it finished. `summarize` turns the cells into one row per defense setting: mean and spread
(sample standard deviation) over seeds.

>>> spec = BenchmarkSpec(dataset="digits", data_fingerprint="abc", train=TrainConfig("mlp", epochs=2),
...                      defenses=(DefenseConfig("none"), DefenseConfig("l2")), seeds=(0, 1),
...                      attacks=("gap", "loss"), num_shadows=0, target_size=200)
>>> [(c.defense.name, c.seed) for c in spec.cells()]
[('none', 0), ('none', 1), ('l2', 0), ('l2', 1)]
>>> spec.cells()[0].key() == spec.cells()[0].key() != spec.cells()[1].key()
True
>>> swept = expand_sweeps(spec.defenses, [parse_sweep("l2:l2=1e-4,1e-2")])
>>> dataclasses.replace(spec, defenses=swept).labels
('none', 'l2 (l2=0.0001)', 'l2 (l2=0.01)')
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfmi.attacks.metrics import DEFAULT_DELTA
from tfmi.attacks.suite import SHADOW_ONLY_ATTACKS, AttackReport
from tfmi.data.dataset import Dataset
from tfmi.defenses.config import DEFENSE_NAMES, DefenseConfig, defense_cache_fields
from tfmi.errors import TfmiError
from tfmi.safe_write import (
    add_to_marker,
    check_output_dir,
    legacy_marker,
    read_marker,
    write_marker,
    write_text_atomic,
)
from tfmi.training import TrainConfig
from tfmi.validation import check_count

MANIFEST_FILE = "benchmark.json"
CELLS_DIR = "cells"
#: bumped when a cell's computation changes, so stale cached cells are not reused
# 2: results carry the counts at their own threshold (achieved advantage, eps LB); 3: shadows in
# complementary pairs, each on exactly half the pool (`sample_shadow_masks`), and failed ones retrained
CELL_FORMAT = 3
#: a cached cell's file name (written by `CellStore.save`), including its temporary files
_CELL_FILE = re.compile(r"(\.)?[0-9a-f]{20}\.json(\.[^/]*\.tmp)?")


def data_fingerprint(data: Dataset) -> str:
    """SHA-256 of the features and labels: a cached cell is only reused on the very same data."""
    digest = hashlib.sha256()
    digest.update(str((data.x.shape, str(data.x.dtype), data.num_classes)).encode())
    digest.update(np.ascontiguousarray(data.x).data)
    digest.update(np.ascontiguousarray(data.y).astype(np.int64).data)
    return digest.hexdigest()


@dataclass(frozen=True)
class Cell:
    """One (defense setting, seed) run of a benchmark."""

    spec: BenchmarkSpec
    defense: DefenseConfig
    seed: int

    @property
    def label(self) -> str:
        """The row this cell belongs to (see `variant_labels`); not part of the key."""
        return self.spec.label_of(self.defense)

    def to_dict(self) -> dict[str, Any]:
        base = self.spec.to_dict()
        del base["defenses"], base["seeds"]
        return {"format": CELL_FORMAT, **base, **defense_cache_fields(self.defense), "seed": self.seed}

    def key(self) -> str:
        """Hash of the full configuration: the cell's cache file name."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class BenchmarkSpec:
    """What a benchmark runs: every defense setting on every seed, each attacked with ``attacks``.

    ``defenses`` may hold several settings of one defense (variants); two settings with the same
    parameters (same ``to_dict``) are refused. Rows are named by `variant_labels`.
    """

    dataset: str
    data_fingerprint: str
    train: TrainConfig
    defenses: tuple[DefenseConfig, ...]
    seeds: tuple[int, ...]
    attacks: tuple[str, ...]
    num_shadows: int
    target_size: int
    reference_size: int | None = None
    shadows_per_task: int | None = None

    def __post_init__(self) -> None:
        if self.shadows_per_task is not None:
            check_count(self.shadows_per_task, "--shadows-per-task", 1)
            if self.num_shadows == 0:
                raise TfmiError("--shadows-per-task chunks the shadows: pass --shadows K (K >= 1) too")
        if not self.defenses:
            raise TfmiError("no defense given: use e.g. --defenses none,mmd-mixup,dp-sgd")
        seen: set[str] = set()
        for defense in self.defenses:
            text = json.dumps(defense.to_dict(), sort_keys=True)
            if text in seen:
                setting = _setting_text(defense)
                raise TfmiError(f"the defense setting {setting} is listed twice (in --defenses or a "
                                "--sweep): list each once")
            seen.add(text)
        if not self.seeds:
            raise TfmiError("no seed given: use --seeds 1 or more")
        if self.num_shadows < 0:
            raise TfmiError(f"--shadows must be >= 0, got {self.num_shadows}")
        needs = [a for a in self.attacks if a in SHADOW_ONLY_ATTACKS]
        if needs and self.num_shadows < 2:
            raise TfmiError(
                f"{', '.join(needs)} need at least 2 shadow models: pass --shadows 2 or more, or "
                "--attacks threshold"
            )

    def to_dict(self) -> dict[str, Any]:
        train = self.train.to_dict()
        del train["seed"]  # each cell's seed
        return {
            "dataset": self.dataset,
            "data_fingerprint": self.data_fingerprint,
            "train": train,
            "defenses": [d.to_dict() for d in self.defenses],
            "seeds": list(self.seeds),
            "attacks": list(self.attacks),
            "num_shadows": self.num_shadows,
            "target_size": self.target_size,
            "reference_size": self.reference_size,
            # recorded only when set, so cells cached before chunks existed keep their keys
            **({"shadows_per_task": self.shadows_per_task} if self.shadows_per_task is not None else {}),
        }

    @property
    def labels(self) -> tuple[str, ...]:
        """One unique row label per defense setting, in order (see `variant_labels`)."""
        return variant_labels(self.defenses)

    def label_of(self, defense: DefenseConfig) -> str:
        return self.labels[self.defenses.index(defense)]

    def cells(self) -> list[Cell]:
        return [Cell(self, d, s) for d in self.defenses for s in self.seeds]


# ------------------------------------------------------------------------------------------ sweeps


@dataclass(frozen=True)
class Sweep:
    """Values of one `DefenseConfig` field to try for one defense: one benchmark row per value.

    Build it with `parse_sweep` from ``DEFENSE:PARAM=V1,V2,...``; `expand_sweeps` turns sweeps into
    the defense settings of a `BenchmarkSpec`.

    >>> Sweep("dp-sgd", "noise_multiplier", (0.5, 1.0)).text
    'dp-sgd:noise_multiplier=0.5,1'
    """

    defense: str
    field: str
    values: tuple[Any, ...]

    @property
    def text(self) -> str:
        return f"{self.defense}:{self.field}=" + ",".join(format_value(v) for v in self.values)


def format_value(value: Any) -> str:
    """A parameter value as labels show it: floats as short as they round-trip, tuples joined by ``+``.

    >>> format_value(20.0), format_value(1e-4), format_value(0.30000000000000004), format_value((1.0, 2.5))
    ('20', '0.0001', '0.30000000000000004', '1+2.5')
    """
    if isinstance(value, tuple | list):
        return "+".join(format_value(v) for v in value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _field_type(name: str) -> tuple[type, bool]:
    """The scalar type of a `DefenseConfig` field, and whether the field is a tuple of them."""
    hint = typing.get_type_hints(DefenseConfig)[name]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint, False


def _parse_value(text: str, kind: type, sweep: str, field_name: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise TfmiError(f"--sweep {sweep}: {text!r} is not {what} ({field_name} takes "
                        f"{kind.__name__} values, e.g. 1,2,3)") from None


def parse_sweep(text: str, aliases: Mapping[str, str] | None = None) -> Sweep:
    """Parse ``DEFENSE:PARAM=V1,V2,...``; PARAM is a `DefenseConfig` field or its option name.

    ``mmd-weight`` and ``mmd_weight`` both name the field ``mmd_weight``; ``aliases`` maps further
    names (the CLI passes its option names, e.g. ``mmd-bandwidth`` for ``mmd_bandwidths``). Values
    are parsed with the field's type (``+`` joins the numbers of a tuple field: ``0.5+2``); their
    ranges are checked by `DefenseConfig` in `expand_sweeps`. The defense must use the field.

    >>> parse_sweep("mmd-mixup:mmd-weight=0.5,2,6.5")
    Sweep(defense='mmd-mixup', field='mmd_weight', values=(0.5, 2.0, 6.5))
    >>> parse_sweep("l2:dropout=0.1")
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: --sweep l2:dropout=0.1: l2 does not use dropout; sweep one of its parameters: l2
    """
    defense, colon, rest = text.partition(":")
    param, equals, values_text = rest.partition("=")
    defense, param = defense.strip(), param.strip()
    if not colon or not equals or not defense or not param:
        raise TfmiError(f"--sweep {text!r} is not DEFENSE:PARAM=V1,V2,...: write e.g. "
                        "--sweep mmd-mixup:mmd-weight=0.5,2,6.5")
    if defense not in DEFENSE_NAMES:
        raise TfmiError(f"--sweep {text}: unknown defense {defense!r}: use one of {', '.join(DEFENSE_NAMES)}")
    known = {f.name for f in dataclasses.fields(DefenseConfig)} - {"name"}
    names = {**{k.replace("-", "_"): v for k, v in (aliases or {}).items()}, **{k: k for k in known}}
    field_name = names.get(param.lstrip("-").replace("-", "_"))
    relevant = DefenseConfig(defense).relevant_fields()
    if field_name is None:
        raise TfmiError(f"--sweep {text}: unknown parameter {param!r}: use a defense option name such as "
                        "mmd-weight or l2 (see `tfmi train --help`)")
    if not relevant:
        raise TfmiError(f"--sweep {text}: {defense} has no parameters to sweep: sweep another defense")
    if field_name not in relevant:
        raise TfmiError(f"--sweep {text}: {defense} does not use {field_name}; sweep one of its "
                        f"parameters: {', '.join(relevant)}")
    parts = [v.strip() for v in values_text.split(",")]
    if not any(parts):
        raise TfmiError(f"--sweep {text}: no values: list them after '=', e.g. {defense}:{param}=1,2")
    if not all(parts):
        raise TfmiError(f"--sweep {text}: an empty value between commas: remove the extra comma")
    kind, is_tuple = _field_type(field_name)
    values = []
    for part in parts:
        if is_tuple:
            value = tuple(_parse_value(p.strip(), kind, text, field_name) for p in part.split("+"))
        else:
            value = _parse_value(part, kind, text, field_name)
        if value in values:
            raise TfmiError(f"--sweep {text}: the value {part} is listed twice: list each value once")
        values.append(value)
    return Sweep(defense, field_name, tuple(values))


def expand_sweeps(defenses: Sequence[DefenseConfig], sweeps: Sequence[Sweep]) -> tuple[DefenseConfig, ...]:
    """The defense settings of a benchmark: ``defenses`` with each swept defense replaced by its variants.

    A swept defense's single setting in ``defenses`` (its other parameters) is replaced, at its place,
    by one setting per swept value; a swept defense not in ``defenses`` is added at the end (from its
    defaults). Several sweeps of one defense (different fields) combine as a grid, the first sweep
    varying slowest; the same field swept twice is refused. Every setting passes `DefenseConfig`'s
    checks here, before any work.

    >>> rows = expand_sweeps([DefenseConfig("none")], [Sweep("dp-sgd", "noise_multiplier", (0.5, 1.0)),
    ...                                              Sweep("dp-sgd", "l2_norm_clip", (1.0, 2.0))])
    >>> [(d.name, d.noise_multiplier, d.l2_norm_clip) for d in rows][1:3]
    [('dp-sgd', 0.5, 1.0), ('dp-sgd', 0.5, 2.0)]
    >>> variant_labels(rows)[1]
    'dp-sgd (l2_norm_clip=1, noise_multiplier=0.5)'
    """
    by_defense: dict[str, list[Sweep]] = {}
    for sweep in sweeps:
        group = by_defense.setdefault(sweep.defense, [])
        twice = next((s for s in group if s.field == sweep.field), None)
        if twice is not None:
            raise TfmiError(f"--sweep {sweep.text}: {sweep.defense}'s {sweep.field} is already swept by "
                            f"--sweep {twice.text}: give all its values in one --sweep")
        group.append(sweep)
    for name in by_defense:
        listed = [d for d in defenses if d.name == name]
        if len(listed) > 1:
            raise TfmiError(f"{name} is swept but listed {len(listed)} times: list it once, or not at all")
    out: list[DefenseConfig] = []
    bases = list(defenses) + [DefenseConfig(n) for n in by_defense if all(d.name != n for d in defenses)]
    for base in bases:
        group = by_defense.get(base.name)
        if not group:
            out.append(base)
            continue
        for combination in itertools.product(*(s.values for s in group)):
            changes = {s.field: v for s, v in zip(group, combination, strict=True)}
            try:
                out.append(dataclasses.replace(base, **changes))
            except TfmiError as error:
                setting = ", ".join(f"{k}={format_value(v)}" for k, v in changes.items())
                raise TfmiError(f"--sweep {base.name} ({setting}): {error}") from None
    return tuple(out)


def variant_labels(defenses: Sequence[DefenseConfig]) -> tuple[str, ...]:
    """Row labels: a defense's name, plus the parameters that differ between its settings when it has several.

    >>> variant_labels([DefenseConfig("none"), DefenseConfig("l2", l2=1e-4), DefenseConfig("l2", l2=0.01)])
    ('none', 'l2 (l2=0.0001)', 'l2 (l2=0.01)')
    """
    settings = [d.to_dict() for d in defenses]
    labels = []
    for setting in settings:
        same = [s for s in settings if s["name"] == setting["name"]]
        varying = [k for k in setting if k != "name" and any(s.get(k) != setting[k] for s in same)]
        if not varying:
            labels.append(setting["name"])
        else:
            labels.append(setting["name"] + " (" + ", ".join(f"{k}={format_value(setting[k])}"
                                                             for k in varying) + ")")
    return tuple(labels)


def _setting_text(defense: DefenseConfig) -> str:
    params = ", ".join(f"{k}={format_value(v)}" for k, v in defense.to_dict().items() if k != "name")
    return f"{defense.name} ({params})" if params else defense.name


def run_cell(
    data: Dataset, cell: Cell, *, shadow_progress: Callable[[int], None] | None = None,
    shadow_executor: Any = None,
) -> dict[str, Any]:
    """Train the cell's target and shadows, attack, and return the JSON-ready record.

    With the spec's ``shadows_per_task`` the shadows train in chunks (`tfmi.shadow_chunks`) on
    ``shadow_executor`` (default: in this process); the record does not depend on where.
    """
    import keras

    from tfmi.attacks.shadow import retrain_failed_for
    from tfmi.attacks.suite import run_attacks, shadow_pool, shadow_queries
    from tfmi.data.splits import membership_split
    from tfmi.training import train_target

    spec = cell.spec
    start = time.perf_counter()
    keras.backend.clear_session()
    split = membership_split(data.y, spec.target_size, spec.reference_size, seed=cell.seed)
    config = dataclasses.replace(spec.train, seed=cell.seed)
    target = train_target(data, split, config, cell.defense, verbose=0)
    shadows = None
    pool = shadow_pool(split, "online")
    retrain = retrain_failed_for(target.train_accuracy, data.y[split.members])
    if spec.num_shadows > 0:
        from tfmi.shadow_chunks import train_shadow_set

        chunked = spec.shadows_per_task is not None
        queries = (shadow_queries(data, pool, split.members, split.non_members, rmia_population(split))
                   if chunked else None)
        shadows = train_shadow_set(data, pool, config, num_shadows=spec.num_shadows, seed=cell.seed + 1,
                                   defense=cell.defense, retrain_failed=retrain, queries=queries,
                                   executor=shadow_executor if chunked else None,
                                   per_task=spec.shadows_per_task, progress=shadow_progress)
    report = run_attacks(target.model, data, split.members, split.non_members, attacks=spec.attacks,
                         shadows=shadows, seed=cell.seed, population=rmia_population(split))
    accounting = target.defense.get("accounting") or {}
    return {
        "cell": cell.to_dict(),
        "key": cell.key(),
        "defense": cell.defense.name,
        "label": cell.label,
        "seed": cell.seed,
        "train_accuracy": target.train_accuracy,
        "test_accuracy": target.test_accuracy,
        "generalization_gap": target.generalization_gap,
        "epsilon": accounting.get("epsilon"),
        "delta": accounting.get("delta"),
        "defense_record": target.defense,
        # per shadow, the trainings that failed and were redone
        "shadows_retrained": [] if shadows is None else [int(n) for n in shadows.retrained],
        # per shadow, accuracy on its IN and OUT records: how closely the shadows resemble the target
        "shadow_accuracies": [] if shadows is None else [
            [round(float(a), 6), round(float(b), 6)]
            for a, b in zip(shadows.train_accuracy, shadows.test_accuracy, strict=True)],
        "report": report.to_dict(),
        "seconds": time.perf_counter() - start,
    }


def run_cell_task(
    data: Dataset, cell: Cell, shadow_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """`run_cell` as a unit of a `tfmi.executors` executor: with TensorFlow's deterministic ops, so a
    cell gives the same record (but its ``seconds``) wherever it runs: locally, on Ray, in a shard.
    Inside a Ray task, a cell whose shadows train in chunks sends the chunks out as Ray tasks too."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    shadow_executor = None
    if cell.spec.shadows_per_task is not None and _inside_ray():
        from tfmi.executors import ExecutorConfig, RayExecutor

        shadow_executor = RayExecutor(ExecutorConfig("ray"))  # joins the cluster this task runs on
    return run_cell(data, cell, shadow_progress=shadow_progress, shadow_executor=shadow_executor)


def _inside_ray() -> bool:
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None  # None: the driver


def rmia_population(split) -> np.ndarray | None:
    """RMIA's population in a benchmark: the split's shadow pool, records the attacker holds that the
    target never saw (not the reference set, whose outputs the MMD defense trains against)."""
    return split.shadow_pool if len(split.shadow_pool) else None


class CellStore:
    """Finished cells of one benchmark under ``out/cells/<key>.json``, and the manifest beside them.

    The folder is a tfmi output (see `tfmi.safe_write`): its marker lists what the benchmark wrote,
    and ``force`` removes exactly those entries, nothing a user added.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.cells_dir = self.out / CELLS_DIR

    def open(self, spec: BenchmarkSpec, force: bool = False) -> None:
        """Create the output, or check it holds this benchmark (``force`` starts it afresh).

        A folder whose benchmark differs only in the defense settings or seeds it lists is this
        benchmark extended (or narrowed): the cells they share are reused.

        Call it with every option already validated and `output_lock` held on ``out``.
        """
        check_output_dir(self.out, "benchmark", force=force, reuse=True)
        manifest = self.out / MANIFEST_FILE
        if self.out.exists() and any(self.out.iterdir()):
            stored, wanted = self._read_manifest(manifest), spec.to_dict()
            differing = _differing_fields(stored, wanted) if stored else None
            if stored != wanted and not (differing and set(differing) <= _CELL_SET_FIELDS):
                if not force:
                    what = "differs in " + ", ".join(differing) if stored else "it holds no benchmark.json"
                    raise TfmiError(
                        f"{self.out} holds results of a different benchmark ({what}): use another --out, "
                        "or --force to discard them"
                    )
                self._discard()
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(manifest, json.dumps(spec.to_dict(), indent=2, sort_keys=True))
        add_to_marker(self.out, "benchmark", [MANIFEST_FILE, CELLS_DIR])

    def record_written(self, names: Sequence[str]) -> None:
        """Note in the marker that the benchmark wrote ``names`` (results, plots) into ``out``.

        Results an earlier run wrote there that this one did not (the ROC plot of a setting the
        benchmark no longer lists) are removed, so the folder shows one benchmark's results.
        """
        marker = read_marker(self.out) or {"written": []}
        keep = {MANIFEST_FILE, CELLS_DIR, *names}
        for name in marker["written"]:
            path = self.out / name
            if name not in keep and (path.is_file() or path.is_symlink()):
                path.unlink()
        write_marker(self.out, "benchmark", [MANIFEST_FILE, CELLS_DIR, *dict.fromkeys(names)])

    def _discard(self) -> None:
        """Remove what the marker says this benchmark wrote; cells are only files named like keys."""
        marker = read_marker(self.out) or legacy_marker(self.out, "benchmark") or {"written": []}
        for name in marker["written"]:
            path = self.out / name
            if name == CELLS_DIR and path.is_dir() and not path.is_symlink():
                for cell in path.iterdir():
                    if _CELL_FILE.fullmatch(cell.name) and cell.is_file():
                        cell.unlink()
                with contextlib.suppress(OSError):
                    path.rmdir()  # kept if a user put something else there
            elif path.is_file() or path.is_symlink():
                path.unlink()
        write_marker(self.out, "benchmark", [])

    @staticmethod
    def _read_manifest(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def load(self, cell: Cell) -> dict[str, Any] | None:
        """The finished record of ``cell``, or None (missing or unreadable: it will be recomputed).

        A record from before shadows that failed every retraining were left out of the attacks, with
        such a shadow possibly among its own (retrained `MAX_RETRAINS` times), is recomputed too.
        """
        from tfmi.attacks.shadow import MAX_RETRAINS

        path = self.cells_dir / f"{cell.key()}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if record.get("cell") != cell.to_dict():
            return None
        if ("shadows_left_out" not in record.get("report", {})
                and max(record.get("shadows_retrained") or [0]) >= MAX_RETRAINS):
            return None
        return record

    def save(self, cell: Cell, record: dict[str, Any]) -> Path:
        return write_text_atomic(self.cells_dir / f"{cell.key()}.json", json.dumps(record, indent=1))


# A cell's key leaves out which settings and seeds its benchmark lists, so a benchmark that differs only
# in those shares every common cell: it may reuse the folder (more seeds, another sweep value).
_CELL_SET_FIELDS = frozenset({"defenses", "seeds"})


def _differing_fields(stored: dict, wanted: dict) -> list[str]:
    """The manifest fields in which two benchmarks differ, sorted."""
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


# --------------------------------------------------------------------------------------- summaries


@dataclass
class Stat:
    """Mean and sample standard deviation over seeds (spread 0 for one seed)."""

    mean: float | None
    spread: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        values = [float(v) for v in values if v is not None]
        if not values:
            return cls(None, 0.0)
        return cls(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)

    def format(self, digits: int = 3) -> str | None:
        if self.mean is None:
            return None
        text = f"{self.mean:.{digits}f}"
        return text + (f" ± {self.spread:.{digits}f}" if self.spread > 0 else "")


@dataclass
class AttackSummary:
    attack: str
    threshold_source: str
    accuracy: Stat
    advantage: Stat
    achieved_advantage: Stat
    auc: Stat
    tpr_at_1pct: Stat
    tpr_at_01pct: Stat

    @property
    def label(self) -> str:
        return f"{self.attack} (oracle)" if self.threshold_source == "oracle" else self.attack


@dataclass
class DefenseRow:
    """One defense setting over its seeds; ``defense`` is its row label, ``name`` the defense's name."""

    defense: str
    seeds: int
    train_accuracy: Stat
    test_accuracy: Stat
    gap: Stat
    epsilon: Stat
    delta: float | None
    epsilon_lower_bound: Stat = field(default_factory=lambda: Stat(None, 0.0))
    attacks: list[AttackSummary] = field(default_factory=list)
    name: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.name = self.name or self.defense

    def best_attack(self) -> AttackSummary | None:
        """The realistic (non-oracle) attack with the highest mean max advantage (threshold-free)."""
        realistic = [a for a in self.attacks
                     if a.threshold_source != "oracle" and a.advantage.mean is not None]
        return max(realistic, key=lambda a: a.advantage.mean, default=None)


def summarize(records: Sequence[dict[str, Any]]) -> list[DefenseRow]:
    """One `DefenseRow` per row label (the defense's name in records without one), in first-seen order,
    from `run_cell` records."""
    by_label: dict[str, list[dict]] = {}
    for r in records:
        by_label.setdefault(r.get("label") or r["defense"], []).append(r)
    rows = []
    for label, group in by_label.items():
        reports = [AttackReport.from_dict(r["report"]) for r in group]
        row = DefenseRow(
            defense=label, name=group[0]["defense"], seeds=len(group),
            seconds=sum(float(r.get("seconds") or 0.0) for r in group),
            train_accuracy=Stat.of([r["train_accuracy"] for r in group]),
            test_accuracy=Stat.of([r["test_accuracy"] for r in group]),
            gap=Stat.of([r["generalization_gap"] for r in group]),
            epsilon=Stat.of([r.get("epsilon") for r in group]),
            delta=group[0].get("delta"),
            epsilon_lower_bound=Stat.of([_best_lower_bound(rep, r.get("delta"))
                                         for rep, r in zip(reports, group, strict=True)]),
        )
        for result in reports[0].results:
            same = [rep.result(result.attack, result.threshold_source) for rep in reports]
            row.attacks.append(AttackSummary(
                result.attack, result.threshold_source,
                accuracy=Stat.of([s.accuracy for s in same]),
                advantage=Stat.of([s.advantage for s in same]),
                achieved_advantage=Stat.of([s.achieved_advantage for s in same]),
                auc=Stat.of([s.auc for s in same]),
                tpr_at_1pct=Stat.of([s.tpr_at_fpr.get(0.01) for s in same]),
                tpr_at_01pct=Stat.of([s.tpr_at_fpr.get(0.001) for s in same]),
            ))
        rows.append(row)
    return rows


def _best_lower_bound(report: AttackReport, delta: float | None) -> float | None:
    """The largest epsilon any realistic attack of one cell proves, at the cell's DP delta if it has one."""
    bounds = [r.epsilon_lower_bound(delta if delta is not None else DEFAULT_DELTA) for r in report.results]
    bounds = [b for b in bounds if b is not None]
    return max(bounds) if bounds else None


SUMMARY_HEADERS = ("defense", "train acc", "test acc", "gap", "epsilon", "eps LB", "best attack",
                   "max adv.", "achieved adv.", "AUC", "TPR@1%FPR")
ATTACK_HEADERS = ("defense", "attack", "accuracy", "max adv.", "achieved adv.", "AUC", "TPR@0.1%FPR",
                  "TPR@1%FPR")


def summary_table_rows(rows: Sequence[DefenseRow]) -> list[list[object]]:
    """One line per defense setting: utility, epsilon, and the strongest realistic attack."""
    out = []
    for row in rows:
        best = row.best_attack()
        epsilon = row.epsilon.format(2)
        if epsilon is not None and row.delta is not None:
            epsilon += f" (δ {row.delta:.0e})"
        out.append([
            row.defense, row.train_accuracy.format(), row.test_accuracy.format(), row.gap.format(),
            epsilon if epsilon is not None else "-", row.epsilon_lower_bound.format(2),
            best.label if best else "-", best.advantage.format() if best else None,
            best.achieved_advantage.format() if best else None,
            best.auc.format() if best else None, best.tpr_at_1pct.format() if best else None,
        ])
    return out


def attack_table_rows(rows: Sequence[DefenseRow], include_oracle: bool = True) -> list[list[object]]:
    """One line per (defense setting, attack)."""
    return [
        [row.defense, a.label, a.accuracy.format(), a.advantage.format(), a.achieved_advantage.format(),
         a.auc.format(), a.tpr_at_01pct.format(), a.tpr_at_1pct.format()]
        for row in rows for a in row.attacks if include_oracle or a.threshold_source != "oracle"
    ]
