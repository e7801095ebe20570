"""Frontiers of several benchmarks side by side: each defense at each training recipe.

One ``tfmi benchmark`` has one training configuration, but a defense's best recipe is not another's
(DP-SGD wants few epochs; the authors trained MMD with 100 epochs of SGD). `compare_frontiers` puts the
frontier points of several finished benchmarks of the *same* data and attack setup into one frontier
summary, each defense named ``DEFENSE@RUN`` (``mmd@paper``, ``dp-sgd@defaults``), with one shared
privacy axis so the areas compare, and the overall Pareto front: which setting of which run holds
each stretch of the privacy/utility plane.

Only the results file's summary is read (``meta.spec`` and ``frontier.points`` of ``results.json``),
as data: a hostile file can make the comparison fail with a `TfmiError`, never run code. Runs compare
only when they measured privacy the same way: same dataset (by fingerprint), member count, attacks
and shadow count; their seeds and training may differ.

>>> import json, tempfile
>>> from pathlib import Path
>>> def run(name, points):
...     folder = Path(tempfile.mkdtemp()) / name
...     folder.mkdir()
...     spec = {"dataset": "d", "data_fingerprint": "f", "target_size": 10, "attacks": ["loss"],
...             "num_shadows": 2, "seeds": [0], "train": {"model": "mlp", "optimizer": "adam"}}
...     pts = [{"label": l, "defense": l.split()[0], "test_accuracy": a, "tpr_at_1pct": t,
...             "advantage": t} for l, a, t in points]
...     (folder / "results.json").write_text(json.dumps({"meta": {"spec": spec},
...                                                      "frontier": {"points": pts}}))
...     return folder
>>> a = run("a", [("none", 0.9, 0.5), ("l2 (l2=1)", 0.7, 0.1)])
>>> b = run("b", [("none", 0.8, 0.4), ("dp-sgd (noise_multiplier=1)", 0.75, 0.1)])
>>> comparison = compare_frontiers({"a": a, "b": b})
>>> [p.label for p in comparison.overall_front]
['dp-sgd@b (noise_multiplier=1)', 'none@b', 'none@a']
>>> [f.defense for f in comparison.frontiers]
['none@a', 'l2@a', 'none@b', 'dp-sgd@b']
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfmi.errors import TfmiError, first_line
from tfmi.frontier import (
    METRICS,
    DefenseFrontier,
    FrontierPoint,
    equal_utility_headers,
    equal_utility_rows,
    pareto_front,
    summarize_frontiers,
)

#: the spec fields that decide how privacy was measured: runs compare only when they agree on all
COMPARABLE_FIELDS = ("dataset", "data_fingerprint", "target_size", "attacks", "num_shadows")
#: how a run may be named on the command line and in row names
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
RESULTS_FILE = "results.json"
#: larger results files are refused unread (a 63-cell benchmark's, every ROC curve included, is ~30 MB)
MAX_RESULTS_BYTES = 512 * 2**20


@dataclass(frozen=True)
class ComparedRun:
    """One benchmark of a comparison: its name, where it was read, and what it ran."""

    name: str
    path: Path
    spec: dict[str, Any]

    def recipe(self) -> str:
        """The training recipe in one phrase, e.g. ``mlp3, sgd lr 0.1, batch 100, 100 epochs``."""
        train = self.spec.get("train") or {}
        parts = [str(train.get("model", "?"))]
        if "optimizer" in train:
            parts.append(f"{train['optimizer']} lr {train.get('learning_rate', '?'):g}"
                         if isinstance(train.get("learning_rate"), (int, float))
                         else str(train["optimizer"]))
        if "batch_size" in train:
            parts.append(f"batch {train['batch_size']}")
        if "epochs" in train:
            parts.append(f"{train['epochs']} epochs")
        seeds = self.spec.get("seeds")
        if isinstance(seeds, list):
            parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
        return ", ".join(parts)


@dataclass
class FrontierComparison:
    """The merged frontier points of several runs, their per-defense summaries and the overall front."""

    runs: list[ComparedRun]
    points: list[FrontierPoint]
    frontiers: list[DefenseFrontier]
    overall_front: list[FrontierPoint] = field(default_factory=list)
    overall_front_advantage: list[FrontierPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"name": r.name, "path": str(r.path), "recipe": r.recipe(), "spec": r.spec}
                     for r in self.runs],
            "points": [dataclasses.asdict(p) for p in self.points],
            "defenses": [f.to_dict() for f in self.frontiers],
            "overall_frontier_tpr_at_1pct": [p.label for p in self.overall_front],
            "overall_frontier_advantage": [p.label for p in self.overall_front_advantage],
            "equal_utility": {
                metric: [dict(zip(equal_utility_headers(self.frontiers), row, strict=True))
                         for row in equal_utility_rows(self.frontiers, metric)]
                for metric in METRICS},
        }


def results_path(path: str | Path) -> Path:
    """The ``results.json`` of a benchmark folder (or ``path`` itself if it names a file)."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def load_run(name: str, path: str | Path) -> tuple[ComparedRun, list[FrontierPoint]]:
    """Read one finished benchmark's spec and frontier points; `TfmiError` naming the file if unusable."""
    if not RUN_NAME.fullmatch(name):
        raise TfmiError(f"run name {name!r} must be 1-40 letters, digits, '.', '_' or '-' (starting with a "
                        "letter or digit), e.g. paper=tfmi-benchmarks/location30-paper")
    file = results_path(path)
    if not file.exists():
        hint = ("it has no results.json: let `tfmi benchmark` finish there (a run writes it at the end)"
                if Path(path).is_dir() else "no such file or folder")
        raise TfmiError(f"{name}={path}: {hint}")
    if not file.is_file():
        raise TfmiError(f"{name}={path}: {file} is not a regular file: point at a benchmark folder or its "
                        "results.json")
    if file.stat().st_size > MAX_RESULTS_BYTES:
        raise TfmiError(f"{file} is larger than {MAX_RESULTS_BYTES >> 20} MB, too large for a tfmi results "
                        "file: point at the folder `tfmi benchmark` wrote")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise TfmiError(f"{file} is not a readable tfmi results file ({first_line(error)}): "
                        "point at the folder `tfmi benchmark` wrote") from None
    spec = data.get("meta", {}).get("spec") if isinstance(data, dict) and isinstance(data.get("meta"), dict) \
        else None
    frontier = data.get("frontier") if isinstance(data, dict) else None
    raw_points = frontier.get("points") if isinstance(frontier, dict) else None
    if not isinstance(spec, dict) or not isinstance(raw_points, list):
        raise TfmiError(f"{file} has no benchmark spec or frontier points (meta.spec, frontier.points): "
                        "it is not the results.json of a `tfmi benchmark` run, or one from before "
                        "frontiers; re-run that benchmark (its cached cells are reused)")
    missing = [k for k in COMPARABLE_FIELDS if k not in spec]
    if missing:
        raise TfmiError(f"{file}: its benchmark spec lacks {', '.join(missing)}: re-run that benchmark")
    points = [_point(file, i, raw, name) for i, raw in enumerate(raw_points)]
    if not points:
        raise TfmiError(f"{file} holds no frontier points (no row has a test accuracy): nothing to compare")
    return ComparedRun(name, Path(path), spec), points


def _point(file: Path, index: int, raw: Any, run: str) -> FrontierPoint:
    where = f"{file}: frontier point {index}"
    if not isinstance(raw, dict):
        raise TfmiError(f"{where} is not an object: the file is damaged; re-run that benchmark")
    label, defense = raw.get("label"), raw.get("defense")
    if not (isinstance(label, str) and label and isinstance(defense, str) and defense):
        raise TfmiError(f"{where} has no label or defense name: the file is damaged; re-run that benchmark")
    values = {}
    for key in ("test_accuracy", *METRICS):
        value = raw.get(key)
        if value is None and key != "test_accuracy":
            values[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 1.0:
            raise TfmiError(f"{where} ({label}) has {key} {value!r}; it must be a number in [0, 1]: the file "
                            "is damaged; re-run that benchmark")
        values[key] = float(value)
    # "mmd (mmd_weight=2)" of run paper -> "mmd@paper (mmd_weight=2)": the setting stays a suffix
    renamed = f"{defense}@{run}{label[len(defense):]}" if label.startswith(defense) else f"{label}@{run}"
    details = {}
    for key in ("test_accuracy_spread", "tpr_at_1pct_spread", "advantage_spread"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise TfmiError(f"{where} ({label}) has {key} {value!r}; it must be a number >= 0: the file is "
                            "damaged; re-run that benchmark")
        details[key] = None if value is None else float(value)
    for key in ("tpr_at_1pct_attack", "advantage_attack"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise TfmiError(f"{where} ({label}) has {key} {value!r}; it must be an attack's name: the file "
                            "is damaged; re-run that benchmark")
        details[key] = value
    return FrontierPoint(renamed, f"{defense}@{run}", values["test_accuracy"],
                         values["tpr_at_1pct"], values["advantage"], **details)


def _check_comparable(runs: Sequence[ComparedRun]) -> None:
    first = runs[0]
    for run in runs[1:]:
        differ = [k for k in COMPARABLE_FIELDS if run.spec.get(k) != first.spec.get(k)]
        if differ:
            details = "; ".join(f"{k}: {first.name} {_short(first.spec.get(k))}, {run.name} "
                                f"{_short(run.spec.get(k))}" for k in differ)
            raise TfmiError(f"runs {first.name} and {run.name} did not measure privacy the same way "
                            f"({details}): "
                            "frontiers compare only on the same data, members, attacks and shadows; "
                            "re-run one benchmark with the other's settings")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 24 else text[:12] + "..."


def _select(points: list[FrontierPoint], rows: Sequence[str],
            runs: Sequence[ComparedRun]) -> list[FrontierPoint]:
    """The points of the defenses ``rows`` names: ``DEFENSE@RUN``, or ``DEFENSE`` for every run's."""
    available = list(dict.fromkeys(p.defense for p in points))
    chosen: list[str] = []
    for row in rows:
        matches = [d for d in available if d == row or ("@" not in row and d.rsplit("@", 1)[0] == row)]
        if not matches:
            raise TfmiError(f"no defense {row!r} in the runs compared: choose among {', '.join(available)} "
                            f"(DEFENSE@RUN, or DEFENSE for every run's; runs: "
                            f"{', '.join(r.name for r in runs)})")
        chosen += [d for d in matches if d not in chosen]
    return [p for p in points if p.defense in chosen]


def compare_frontiers(runs: Mapping[str, str | Path],
                      rows: Sequence[str] | None = None) -> FrontierComparison:
    """Merge the frontiers of finished benchmarks ``{name: folder or results.json}`` (see module doc).

    ``rows``: keep only these defenses, each ``DEFENSE@RUN`` or ``DEFENSE`` (every run's); default all.
    Raises `TfmiError` for fewer than two runs, an unreadable or damaged results file, runs that did
    not measure privacy the same way, or a row no run has.
    """
    if len(runs) < 2:
        raise TfmiError("compare needs at least two benchmarks, e.g. defaults=tfmi-benchmarks/a "
                        "paper=tfmi-benchmarks/b")
    loaded = [load_run(name, path) for name, path in runs.items()]
    compared = [run for run, _ in loaded]
    seen: dict[Path, str] = {}
    for run in compared:
        file = results_path(run.path).resolve()
        if file in seen:
            raise TfmiError(f"runs {seen[file]} and {run.name} are the same benchmark ({file}): give each "
                            "benchmark once")
        seen[file] = run.name
    _check_comparable(compared)
    points = [p for _, pts in loaded for p in pts]
    if rows:
        points = _select(points, rows, compared)
    return FrontierComparison(
        runs=compared, points=points, frontiers=summarize_frontiers(points),
        overall_front=pareto_front(points, "tpr_at_1pct"),
        overall_front_advantage=pareto_front(points, "advantage"),
    )
