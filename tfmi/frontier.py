"""Privacy-utility frontiers of a benchmark's defense settings (e.g. from ``tfmi benchmark --sweep``).

Each benchmark row (one defense setting, averaged over its seeds) is a `FrontierPoint`: its mean test
accuracy (utility, higher is better) and two privacy metrics (lower is better), both taken from the
realistic attacks only (thresholds from shadow models, learned attacks, LiRA, RMIA; never the oracle
rows):

* ``tpr_at_1pct``: the highest mean TPR at 1 % FPR of any realistic attack, the low-FPR regime
  that matters for membership inference (None when no attack can measure it: fewer than 100
  non-members);
* ``advantage``: the highest mean max advantage (max TPR - FPR over thresholds) of any realistic
  attack, the row's *best attack* in the benchmark tables.

Per defense, over its settings:

* `pareto_front`: the settings no other setting of the defense beats on both axes (at least as
  accurate and at most as exposed, strictly better on one);
* `best_accuracy_at`: the best test accuracy among settings whose metric is at most a limit (the
  summary uses TPR@1%FPR <= 5 % and <= 2 %), None if no setting reaches it;
* `frontier_area`: the area under the step function ``f(x) = best test accuracy among settings with
  metric <= x`` (0 where no setting qualifies) for ``x`` in ``[0, x_max]``, divided by ``x_max``:
  the mean best accuracy over privacy budgets up to ``x_max``, in [0, 1], higher is better. The
  benchmark uses one ``x_max`` for all defenses, the largest value of the metric over all its rows
  (usually the undefended model's), so areas of one benchmark compare; they do not compare across
  benchmarks. A setting at ``x_max`` adds nothing (the undefended model scores 0): the area rewards
  accuracy kept at lower leakage than the worst measured. With ``x_max = 0`` it is the best
  accuracy at metric 0;
* `equal_utility_rows` (with `lowest_metric_at`): the frontiers read the other way, each defense's
  least exposed setting at the undefended model's test accuracy and `ACCURACY_COSTS` below it.

>>> points = [FrontierPoint("l2 (l2=0.1)", "l2", 0.5, 0.01, 0.05),
...           FrontierPoint("l2 (l2=0.01)", "l2", 0.8, 0.03, 0.20),
...           FrontierPoint("l2 (l2=0.001)", "l2", 0.7, 0.04, 0.25)]
>>> [p.label for p in pareto_front(points)]
['l2 (l2=0.1)', 'l2 (l2=0.01)']
>>> best_accuracy_at(points, 0.02), best_accuracy_at(points, 0.005)
(0.5, None)
>>> round(frontier_area(points, x_max=0.05), 6)  # (0.02 * 0.5 + 0.02 * 0.8) / 0.05
0.52
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tfmi.errors import TfmiError

if TYPE_CHECKING:
    from tfmi.benchmark import DefenseRow

#: the privacy metrics of a `FrontierPoint`, with how tables and plots name them
METRICS = {
    "tpr_at_1pct": "best attack's TPR@1%FPR",
    "advantage": "best attack's max advantage",
}
#: TPR@1%FPR limits at which the summary reports the best reachable test accuracy
TPR_LIMITS = (0.05, 0.02)
#: the undefended defense, marked apart in plots
UNDEFENDED = "none"
#: joins a defense to the run it comes from when frontiers of several benchmarks are compared
RUN_SEPARATOR = "@"


def split_run(defense: str) -> tuple[str, str | None]:
    """``"mmd@paper"`` -> ``("mmd", "paper")``; a defense of a single benchmark has no run.

    >>> split_run("dp-sgd@defaults"), split_run("none")
    (('dp-sgd', 'defaults'), ('none', None))
    """
    base, _, run = defense.partition(RUN_SEPARATOR)
    return base, run or None

FRONTIER_HEADERS = ("defense", "points", "on frontier", *(f"best test acc @ TPR@1% <= {limit:.0%}"
                                                          for limit in TPR_LIMITS),
                    "frontier area (TPR@1%)", "frontier area (max adv.)")


@dataclass(frozen=True)
class FrontierPoint:
    """One defense setting: mean test accuracy and mean privacy metrics over its seeds (None: unmeasured).

    From a benchmark (`frontier_points`) it also says which attack gives each privacy metric and that
    attack's standard deviation over the seeds (``*_attack``, ``*_spread``), and the test accuracy's.
    """

    label: str
    defense: str
    test_accuracy: float
    tpr_at_1pct: float | None
    advantage: float | None
    test_accuracy_spread: float | None = field(default=None, repr=False)
    tpr_at_1pct_attack: str | None = field(default=None, repr=False)
    tpr_at_1pct_spread: float | None = field(default=None, repr=False)
    advantage_attack: str | None = field(default=None, repr=False)
    advantage_spread: float | None = field(default=None, repr=False)

    def metric(self, name: str) -> float | None:
        return getattr(self, _check_metric(name))


@dataclass
class DefenseFrontier:
    """One defense's frontier summary over its settings (see the module docstring)."""

    defense: str
    points: list[FrontierPoint]
    front: list[FrontierPoint]
    front_advantage: list[FrontierPoint]
    best_at: dict[float, float | None]
    area: float | None
    area_advantage: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "defense": self.defense,
            "points": [p.label for p in self.points],
            "frontier_tpr_at_1pct": [p.label for p in self.front],
            "frontier_advantage": [p.label for p in self.front_advantage],
            "best_test_accuracy_at_tpr_at_1pct": {f"{limit:g}": acc for limit, acc in self.best_at.items()},
            "area_tpr_at_1pct": self.area,
            "area_advantage": self.area_advantage,
        }


def _check_metric(name: str) -> str:
    if name not in METRICS:
        raise TfmiError(f"unknown privacy metric {name!r}: use one of {', '.join(METRICS)}")
    return name


def frontier_points(rows: Sequence[DefenseRow]) -> list[FrontierPoint]:
    """One `FrontierPoint` per benchmark row (from `tfmi.benchmark.summarize`) with a test accuracy.

    >>> from tfmi.benchmark import AttackSummary, DefenseRow, Stat
    >>> def attack(name, source, adv, tpr):
    ...     s = Stat(None, 0.0)
    ...     return AttackSummary(name, source, s, Stat(adv, 0.0), s, s, Stat(tpr, 0.0), s)
    >>> row = DefenseRow("l2 (l2=0.01)", 2, Stat(1.0, 0), Stat(0.8, 0), Stat(0.2, 0), Stat(None, 0), None,
    ...                  attacks=[attack("loss", "shadow", 0.3, 0.02), attack("lira", "lira", 0.2, 0.06),
    ...                           attack("loss", "oracle", 0.9, 0.9)], name="l2")
    >>> frontier_points([row])
    [FrontierPoint(label='l2 (l2=0.01)', defense='l2', test_accuracy=0.8, tpr_at_1pct=0.06, advantage=0.3)]
    """
    points = []
    for row in rows:
        if row.test_accuracy.mean is None:
            continue
        realistic = [a for a in row.attacks if a.threshold_source != "oracle"]
        by_tpr = _strongest(realistic, "tpr_at_1pct")
        by_advantage = _strongest(realistic, "advantage")
        points.append(FrontierPoint(
            row.defense, row.name, row.test_accuracy.mean,
            by_tpr.tpr_at_1pct.mean if by_tpr else None,
            by_advantage.advantage.mean if by_advantage else None,
            test_accuracy_spread=row.test_accuracy.spread,
            tpr_at_1pct_attack=by_tpr.label if by_tpr else None,
            tpr_at_1pct_spread=by_tpr.tpr_at_1pct.spread if by_tpr else None,
            advantage_attack=by_advantage.label if by_advantage else None,
            advantage_spread=by_advantage.advantage.spread if by_advantage else None))
    return points


def _strongest(attacks, metric: str):
    """The attack with the highest mean ``metric`` (the first of equals), or None if none measures it."""
    measured = [a for a in attacks if getattr(a, metric).mean is not None]
    return max(measured, key=lambda a: getattr(a, metric).mean) if measured else None


def _measured(points: Sequence[FrontierPoint], metric: str) -> list[tuple[float, float, FrontierPoint]]:
    out = []
    for p in points:
        x = p.metric(metric)
        if x is None:
            continue
        if not (math.isfinite(x) and math.isfinite(p.test_accuracy)):
            raise TfmiError(f"{p.label} has a NaN or infinite {metric} or test accuracy: fix the values")
        out.append((float(x), float(p.test_accuracy), p))
    return out


def pareto_front(points: Sequence[FrontierPoint], metric: str = "tpr_at_1pct") -> list[FrontierPoint]:
    """The Pareto-optimal points (maximize test accuracy, minimize ``metric``), by increasing ``metric``.

    Points without ``metric`` are left out; equal points are all kept.
    """
    measured = _measured(points, _check_metric(metric))
    front = [
        (x, acc, p) for x, acc, p in measured
        if not any(x2 <= x and a2 >= acc and (x2 < x or a2 > acc) for x2, a2, _ in measured)
    ]
    return [p for _, _, p in sorted(front, key=lambda t: (t[0], -t[1]))]


def best_accuracy_at(points: Sequence[FrontierPoint], limit: float,
                     metric: str = "tpr_at_1pct") -> float | None:
    """The best test accuracy among points whose ``metric`` is <= ``limit``; None if there is none."""
    accuracies = [acc for x, acc, _ in _measured(points, _check_metric(metric)) if x <= limit]
    return max(accuracies) if accuracies else None


def frontier_area(points: Sequence[FrontierPoint], x_max: float | None = None,
                  metric: str = "tpr_at_1pct") -> float | None:
    """Normalized area under the frontier's step function on ``[0, x_max]`` (see the module docstring).

    ``x_max`` defaults to the largest ``metric`` of ``points``; None when no point has the metric.

    >>> pts = [FrontierPoint("a", "d", 0.6, 0.0, None), FrontierPoint("b", "d", 0.9, 0.5, None)]
    >>> frontier_area(pts), frontier_area(pts, x_max=1.0)
    (0.6, 0.75)
    """
    measured = _measured(points, _check_metric(metric))
    if not measured:
        return None
    if x_max is None:
        x_max = max(x for x, _, _ in measured)
    if not (math.isfinite(x_max) and x_max >= 0):
        raise TfmiError(f"x_max must be a finite number >= 0, got {x_max!r}")
    if x_max == 0:
        return best_accuracy_at(points, 0.0, metric) or 0.0
    steps = sorted((x, acc) for x, acc, _ in measured if x <= x_max)
    area, best = 0.0, 0.0
    for i, (x, acc) in enumerate(steps):  # f(x) is the best accuracy so far, from x to the next point
        best = max(best, acc)
        end = steps[i + 1][0] if i + 1 < len(steps) else x_max
        area += best * (end - x)
    return area / x_max


def summarize_frontiers(points: Sequence[FrontierPoint]) -> list[DefenseFrontier]:
    """One `DefenseFrontier` per defense, in first-seen order; areas share the largest metric of all points.

    >>> pts = [FrontierPoint("none", "none", 0.9, 0.10, 0.40),
    ...        FrontierPoint("l2 (l2=1)", "l2", 0.6, 0.01, 0.05),
    ...        FrontierPoint("l2 (l2=0.1)", "l2", 0.8, 0.04, 0.20)]
    >>> l2 = summarize_frontiers(pts)[1]
    >>> l2.best_at, round(l2.area, 4)  # (0.03 * 0.6 + 0.06 * 0.8) / 0.1
    ({0.05: 0.8, 0.02: 0.6}, 0.66)
    """
    x_max = {m: max((x for x, _, _ in _measured(points, m)), default=None) for m in METRICS}
    by_defense: dict[str, list[FrontierPoint]] = {}
    for p in points:
        by_defense.setdefault(p.defense, []).append(p)
    return [
        DefenseFrontier(
            defense=name, points=group, front=pareto_front(group, "tpr_at_1pct"),
            front_advantage=pareto_front(group, "advantage"),
            best_at={limit: best_accuracy_at(group, limit) for limit in TPR_LIMITS},
            area=frontier_area(group, x_max["tpr_at_1pct"], "tpr_at_1pct"),
            area_advantage=frontier_area(group, x_max["advantage"], "advantage"),
        )
        for name, group in by_defense.items()
    ]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def frontier_table_rows(frontiers: Sequence[DefenseFrontier]) -> list[list[object]]:
    """One line per defense, under `FRONTIER_HEADERS` (``-``: unreachable or unmeasured)."""
    return [
        [f.defense, len(f.points), len(f.front), *(_fmt(f.best_at[limit]) for limit in TPR_LIMITS),
         _fmt(f.area), _fmt(f.area_advantage)]
        for f in frontiers
    ]


FRONTIER_POINT_HEADERS = ("setting", "test acc", "TPR@1%FPR", "its attack", "max adv.", "its attack",
                          "on frontier")


def with_spread(value: float | None, spread: float | None) -> str:
    """``0.085 ± 0.036``; the spread left out when 0 or unknown, ``-`` for no value.

    >>> with_spread(0.0846, 0.0361), with_spread(0.5, None), with_spread(None, None)
    ('0.085 ± 0.036', '0.500', '-')
    """
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ± {spread:.3f}" if spread else "")


def frontier_point_rows(frontiers: Sequence[DefenseFrontier]) -> list[list[object]]:
    """One line per setting, under `FRONTIER_POINT_HEADERS`: the coordinates `frontier.png` plots, the
    attack behind each privacy metric (± its spread over seeds), and on which axes the setting is on its
    defense's frontier (``TPR``, ``adv.``, both, or ``-``)."""
    rows = []
    for f in frontiers:
        on_tpr, on_advantage = {p.label for p in f.front}, {p.label for p in f.front_advantage}
        for p in f.points:
            axes = [name for name, front in (("TPR", on_tpr), ("adv.", on_advantage)) if p.label in front]
            rows.append([p.label, with_spread(p.test_accuracy, p.test_accuracy_spread),
                         with_spread(p.tpr_at_1pct, p.tpr_at_1pct_spread), p.tpr_at_1pct_attack or "-",
                         with_spread(p.advantage, p.advantage_spread), p.advantage_attack or "-",
                         ", ".join(axes) or "-"])
    return rows


#: test-accuracy points below the undefended model at which `equal_utility_rows` gives each defense's
#: lowest leakage (the dual of `best_accuracy_at`: privacy bought for a given cost in accuracy)
ACCURACY_COSTS = (0.0, 0.025, 0.05, 0.10, 0.15, 0.20)


def lowest_metric_at(points: Sequence[FrontierPoint], min_accuracy: float,
                     metric: str = "tpr_at_1pct") -> FrontierPoint | None:
    """The point with the lowest ``metric`` among those at least ``min_accuracy`` accurate (the more
    accurate of equals); None if there is none.

    >>> pts = [FrontierPoint("a", "d", 0.60, 0.30, None), FrontierPoint("b", "d", 0.55, 0.10, None)]
    >>> lowest_metric_at(pts, 0.58).label, lowest_metric_at(pts, 0.5).label, lowest_metric_at(pts, 0.7)
    ('a', 'b', None)
    """
    eligible = [(x, -acc, p) for x, acc, p in _measured(points, _check_metric(metric))
                if acc >= min_accuracy]
    return min(eligible, key=lambda t: (t[0], t[1]))[2] if eligible else None


def reference_accuracy(points: Sequence[FrontierPoint]) -> tuple[float, str] | None:
    """The accuracy costs' zero: the undefended model's test accuracy (the best, when several runs have
    one), else the best of all points; with its name (``undefended`` or ``best``)."""
    undefended = [p.test_accuracy for p in points if split_run(p.defense)[0] == UNDEFENDED]
    if undefended:
        return max(undefended), "undefended"
    return (max(p.test_accuracy for p in points), "best") if points else None


def _setting(p: FrontierPoint) -> str:
    """``dp-sgd (noise_multiplier=0.5)`` -> ``noise_multiplier=0.5``; a defense without parameters: ''."""
    start = p.label.find(" (")
    return p.label[start + 2:-1] if start >= 0 and p.label.endswith(")") else ""


def equal_utility_headers(frontiers: Sequence[DefenseFrontier]) -> tuple[str, ...]:
    return ("test acc at least", *(f.defense for f in frontiers))


def equal_utility_rows(frontiers: Sequence[DefenseFrontier], metric: str = "tpr_at_1pct",
                       costs: Sequence[float] = ACCURACY_COSTS) -> list[list[object]]:
    """One line per accuracy cost, under `equal_utility_headers`: each defense's lowest ``metric``
    (and the setting reaching it) among its settings at least as accurate as the undefended model
    (`reference_accuracy`) minus the cost; ``-`` where no setting is that accurate.

    >>> none = FrontierPoint("none", "none", 0.55, 0.80, 0.90)
    >>> dp = [FrontierPoint("dp (noise=0.3)", "dp", 0.56, 0.15, 0.5),
    ...       FrontierPoint("dp (noise=1)", "dp", 0.41, 0.04, 0.2)]
    >>> for row in equal_utility_rows(summarize_frontiers([none, *dp]), costs=(0.0, 0.15)):
    ...     print(row)
    ['0.550 (undefended)', '0.800', '0.150 (noise=0.3)']
    ['0.400 (undefended - 0.15)', '0.800', '0.040 (noise=1)']
    """
    reference = reference_accuracy([p for f in frontiers for p in f.points])
    if reference is None:
        return []
    accuracy, name = reference
    rows = []
    for cost in costs:
        level = accuracy - cost
        cells: list[object] = [f"{level:.3f} ({name}{f' - {cost:g}' if cost else ''})"]
        for f in frontiers:
            best = lowest_metric_at(f.points, level - 1e-9, metric)
            if best is None:
                cells.append("-")
                continue
            setting = _setting(best)
            cells.append(f"{best.metric(metric):.3f}" + (f" ({setting})" if setting else ""))
        rows.append(cells)
    return rows
