"""Defenses against attacks, over seeds: one resumable cell per (defense, seed).

A `BenchmarkSpec` fixes the dataset, model, training, attacks and shadow count; its cells are the
(defense, seed) pairs. `run_cell` trains the target with the defense, trains its shadows the same
way (same model, training and defense, on random halves of the target's members and non-members:
the online LiRA setting) and runs every attack. A `CellStore` keeps each finished cell as one JSON
file named by the hash of its full configuration (and of the data), written atomically, so an
interrupted benchmark re-run skips the cells it finished. `summarize` turns the cells into one row
per defense: mean and spread (sample standard deviation) over seeds.

>>> spec = BenchmarkSpec(dataset="digits", data_fingerprint="abc", train=TrainConfig("mlp", epochs=2),
...                      defenses=(DefenseConfig("none"), DefenseConfig("l2")), seeds=(0, 1),
...                      attacks=("gap", "loss"), num_shadows=0, target_size=200)
>>> [(c.defense.name, c.seed) for c in spec.cells()]
[('none', 0), ('none', 1), ('l2', 0), ('l2', 1)]
>>> spec.cells()[0].key() == spec.cells()[0].key() != spec.cells()[1].key()
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfmi.attacks.metrics import DEFAULT_DELTA
from tfmi.attacks.suite import SHADOW_ONLY_ATTACKS, AttackReport
from tfmi.data.dataset import Dataset
from tfmi.defenses.config import DefenseConfig
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

MANIFEST_FILE = "benchmark.json"
CELLS_DIR = "cells"
#: bumped when a cell's computation changes, so stale cached cells are not reused
CELL_FORMAT = 2  # 2: results carry the counts at their own threshold (achieved advantage, eps LB)
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
    """One (defense, seed) run of a benchmark."""

    spec: BenchmarkSpec
    defense: DefenseConfig
    seed: int

    def to_dict(self) -> dict[str, Any]:
        base = self.spec.to_dict()
        del base["defenses"], base["seeds"]
        return {"format": CELL_FORMAT, **base, "defense": self.defense.to_dict(), "seed": self.seed}

    def key(self) -> str:
        """Hash of the full configuration: the cell's cache file name."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class BenchmarkSpec:
    """What a benchmark runs: every defense on every seed, each attacked with ``attacks``."""

    dataset: str
    data_fingerprint: str
    train: TrainConfig
    defenses: tuple[DefenseConfig, ...]
    seeds: tuple[int, ...]
    attacks: tuple[str, ...]
    num_shadows: int
    target_size: int
    reference_size: int | None = None

    def __post_init__(self) -> None:
        names = [d.name for d in self.defenses]
        if not names:
            raise TfmiError("no defense given: use e.g. --defenses none,mmd-mixup,dp-sgd")
        if len(set(names)) != len(names):
            raise TfmiError(f"a defense is listed twice in {','.join(names)}: list each once")
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
        }

    def cells(self) -> list[Cell]:
        return [Cell(self, d, s) for d in self.defenses for s in self.seeds]


def run_cell(
    data: Dataset, cell: Cell, *, shadow_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Train the cell's target and shadows, attack, and return the JSON-ready record."""
    import tensorflow as tf

    from tfmi.attacks.shadow import train_shadows
    from tfmi.attacks.suite import run_attacks, shadow_pool
    from tfmi.data.splits import membership_split
    from tfmi.training import train_target

    spec = cell.spec
    start = time.perf_counter()
    tf.keras.backend.clear_session()
    split = membership_split(data.y, spec.target_size, spec.reference_size, seed=cell.seed)
    config = dataclasses.replace(spec.train, seed=cell.seed)
    target = train_target(data, split, config, cell.defense, verbose=0)
    shadows = None
    if spec.num_shadows > 0:
        shadows = train_shadows(data, shadow_pool(split, "online"), config, num_shadows=spec.num_shadows,
                                seed=cell.seed + 1, defense=cell.defense, progress=shadow_progress)
    report = run_attacks(target.model, data, split.members, split.non_members, attacks=spec.attacks,
                         shadows=shadows, seed=cell.seed, population=rmia_population(split))
    accounting = target.defense.get("accounting") or {}
    return {
        "cell": cell.to_dict(),
        "key": cell.key(),
        "defense": cell.defense.name,
        "seed": cell.seed,
        "train_accuracy": target.train_accuracy,
        "test_accuracy": target.test_accuracy,
        "generalization_gap": target.generalization_gap,
        "epsilon": accounting.get("epsilon"),
        "delta": accounting.get("delta"),
        "defense_record": target.defense,
        "report": report.to_dict(),
        "seconds": time.perf_counter() - start,
    }


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
        """Create the output, or check it holds this very benchmark (``force`` starts it afresh).

        Call it with every option already validated and `output_lock` held on ``out``.
        """
        check_output_dir(self.out, "benchmark", force=force, reuse=True)
        manifest = self.out / MANIFEST_FILE
        if self.out.exists() and any(self.out.iterdir()):
            stored = self._read_manifest(manifest)
            if stored != spec.to_dict():
                if not force:
                    what = _difference(stored, spec.to_dict()) if stored else "it holds no benchmark.json"
                    raise TfmiError(
                        f"{self.out} holds results of a different benchmark ({what}): use another --out, "
                        "or --force to discard them"
                    )
                self._discard()
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(manifest, json.dumps(spec.to_dict(), indent=2, sort_keys=True))
        add_to_marker(self.out, "benchmark", [MANIFEST_FILE, CELLS_DIR])

    def record_written(self, names: Sequence[str]) -> None:
        """Note in the marker that the benchmark wrote ``names`` (results, plots) into ``out``."""
        add_to_marker(self.out, "benchmark", names)

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
        """The finished record of ``cell``, or None (missing or unreadable: it will be recomputed)."""
        path = self.cells_dir / f"{cell.key()}.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record if record.get("cell") == cell.to_dict() else None

    def save(self, cell: Cell, record: dict[str, Any]) -> Path:
        return write_text_atomic(self.cells_dir / f"{cell.key()}.json", json.dumps(record, indent=1))


def _difference(stored: dict, wanted: dict) -> str:
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    return "differs in " + ", ".join(keys)


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
    """One defense over its seeds."""

    defense: str
    seeds: int
    train_accuracy: Stat
    test_accuracy: Stat
    gap: Stat
    epsilon: Stat
    delta: float | None
    epsilon_lower_bound: Stat = field(default_factory=lambda: Stat(None, 0.0))
    attacks: list[AttackSummary] = field(default_factory=list)

    def best_attack(self) -> AttackSummary | None:
        """The realistic (non-oracle) attack with the highest mean max advantage (threshold-free)."""
        realistic = [a for a in self.attacks
                     if a.threshold_source != "oracle" and a.advantage.mean is not None]
        return max(realistic, key=lambda a: a.advantage.mean, default=None)


def summarize(records: Sequence[dict[str, Any]]) -> list[DefenseRow]:
    """One `DefenseRow` per defense, in first-seen order, from `run_cell` records."""
    by_defense: dict[str, list[dict]] = {}
    for r in records:
        by_defense.setdefault(r["defense"], []).append(r)
    rows = []
    for name, group in by_defense.items():
        reports = [AttackReport.from_dict(r["report"]) for r in group]
        row = DefenseRow(
            defense=name, seeds=len(group),
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
    """One line per defense: utility, epsilon, and the strongest realistic attack."""
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
    """One line per (defense, attack)."""
    return [
        [row.defense, a.label, a.accuracy.format(), a.advantage.format(), a.achieved_advantage.format(),
         a.auc.format(), a.tpr_at_01pct.format(), a.tpr_at_1pct.format()]
        for row in rows for a in row.attacks if include_oracle or a.threshold_source != "oracle"
    ]
