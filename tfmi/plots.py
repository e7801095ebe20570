"""Figures for membership inference results: ROC curves, signal histograms, privacy-utility scatter
and frontiers.

Figures are built as ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, without
``pyplot``: no global backend is selected (other users of matplotlib are unaffected), nothing is
shown and no figure is kept alive in pyplot's registry. matplotlib is imported only when a plot is
made, so importing this module is cheap.

Every ``plot_*`` function validates its input first (raising `tfmi.errors.TfmiError` for empty
input or NaN values, before touching the file system), creates the parent folders, writes the
figure to a temporary file in the destination folder and moves it into place with ``os.replace``,
so the destination is either the old file or the complete new one. The format follows the suffix
(``.png``, ``.pdf`` or ``.svg``); PNGs are written at 120 dpi.

>>> import os, tempfile
>>> import numpy as np
>>> from tfmi.attacks.metrics import evaluate_scores
>>> rng = np.random.default_rng(0)
>>> r = evaluate_scores(rng.normal(1, 1, 500), rng.normal(0, 1, 500), attack="loss")
>>> out = plot_roc([r], os.path.join(tempfile.mkdtemp(), "figs", "roc.png"), title="demo")
>>> out.name, out.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
('roc.png', True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfmi.errors import TfmiError
from tfmi.safe_write import atomic_file

if TYPE_CHECKING:  # Signals lives in a module that imports TensorFlow: keep this import cheap
    from matplotlib.figure import Figure

    from tfmi.attacks.metrics import AttackResult
    from tfmi.attacks.signals import Signals
    from tfmi.frontier import FrontierPoint

__all__ = ["PrivacyUtilityPoint", "plot_frontier", "plot_privacy_utility", "plot_roc",
           "plot_signal_histograms"]

FIGSIZE = (6.0, 4.5)
DPI = 120
#: The ROC axes start at ``min(ROC_MIN, 1 / num_non_members)``; zero rates are clipped to that bound.
ROC_MIN = 1e-4
#: Vertical reference lines on the ROC plot.
ROC_MARKED_FPRS = (0.001, 0.01)
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
DEFAULT_SIGNALS = ("loss", "max_confidence", "entropy", "modified_entropy", "logit_confidence")
#: Non-negative signals spanning orders of magnitude: histogrammed as ``log10(value + LOG_EPS)``.
LOG_X_SIGNALS = frozenset({"loss", "entropy", "modified_entropy"})
#: Probabilities piled up near 1 for members: linear x, log-scaled density.
LOG_Y_SIGNALS = frozenset({"max_confidence", "true_class_probability", "correct"})
LOG_EPS = 1e-12
HISTOGRAM_BINS = 50


@dataclass(frozen=True)
class PrivacyUtilityPoint:
    """One model (or defense setting) on the privacy-utility plane.

    ``advantage`` is the (best) attack advantage, lower = more private; ``test_accuracy`` the
    utility; the spreads (e.g. standard deviations over seeds, >= 0) are drawn as error bars.
    """

    label: str
    advantage: float
    test_accuracy: float
    advantage_spread: float = 0.0
    accuracy_spread: float = 0.0


# ------------------------------------------------------------------------------------------- helpers


def _format_for(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TfmiError(
            f"cannot tell the figure format of {str(path)!r}: end the file name with "
            f"{', '.join(FORMATS)}"
        )
    return fmt


def _save_atomically(make_figure: Callable[[], Figure], path: str | os.PathLike) -> Path:
    """Check the path, build the figure, write it to a temp file beside ``path`` and os.replace it."""
    target = Path(path)
    fmt = _format_for(target)
    fig = make_figure()  # input errors surface here, before anything is written
    with atomic_file(target, "wb") as f:
        fig.savefig(f, format=fmt, dpi=DPI)
    return target


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _finite_array(values: Any, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise TfmiError(f"{what} is empty: nothing to plot")
    bad = ~np.isfinite(x)
    if bad.any():
        raise TfmiError(f"{what} has {int(bad.sum())} NaN or infinite value(s), first at index "
                        f"{int(np.argmax(bad))}: fix the values before plotting")
    return x


def _finite_number(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TfmiError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise TfmiError(f"{what} is {v}: only finite values can be plotted")
    return v


def _percent(f: float) -> str:
    return f"{f * 100:g}%"


# ----------------------------------------------------------------------------------------------- ROC


def _roc_label(r: AttackResult) -> str:
    tpr = r.tpr_at_fpr.get(0.01)
    return (f"{r.attack} ({r.threshold_source}): AUC {r.auc:.3f}, TPR@1% "
            + ("n/a" if tpr is None else f"{tpr:.3f}"))


def _roc_figure(results: Sequence[AttackResult], *, title: str = "") -> Figure:
    """The ROC figure of `plot_roc` (log-log axes, one line per result), not yet saved."""
    results = list(results)
    if not results:
        raise TfmiError("no attack results to plot: pass at least one AttackResult")
    curves = []
    for i, r in enumerate(results):
        what = f"result {i} ({getattr(r, 'attack', '?')})"
        if not hasattr(r, "roc") or not hasattr(r, "num_non_members"):
            raise TfmiError(f"{what} is not an AttackResult (got {type(r).__name__})")
        fpr = _finite_array(r.roc[0], f"{what} ROC FPRs")
        tpr = _finite_array(r.roc[1], f"{what} ROC TPRs")
        if len(fpr) != len(tpr):
            raise TfmiError(f"{what} has {len(fpr)} ROC FPRs but {len(tpr)} TPRs: they must match")
        _finite_number(r.auc, f"{what} AUC")
        tpr1 = r.tpr_at_fpr.get(0.01)
        if tpr1 is not None:
            _finite_number(tpr1, f"{what} TPR at 1% FPR")
        if int(r.num_non_members) < 1:
            raise TfmiError(f"{what} has no non-members: its ROC is undefined")
        curves.append((fpr, tpr))

    lower = min(ROC_MIN, 1.0 / max(int(r.num_non_members) for r in results))
    fig = _new_figure()
    ax = fig.add_subplot()
    for r, (fpr, tpr) in zip(results, curves, strict=True):
        ax.plot(np.clip(fpr, lower, 1.0), np.clip(tpr, lower, 1.0), lw=1.4, label=_roc_label(r))
    ax.plot([lower, 1.0], [lower, 1.0], ls=":", color="gray", lw=1.0, label="chance")
    for f in ROC_MARKED_FPRS:
        ax.axvline(f, ls="--", color="black", lw=0.8, alpha=0.6)
        ax.text(f * 1.12, 0.98, f"FPR {_percent(f)}", transform=ax.get_xaxis_transform(), rotation=90,
                va="top", ha="left", fontsize=7, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lower, 1.0)
    ax.set_ylim(lower, 1.0)
    ax.set_xlabel(f"false positive rate (0 drawn at {lower:.0e})")
    ax.set_ylabel("true positive rate")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_roc(results: Sequence[AttackResult], path: str | os.PathLike, *, title: str = "") -> Path:
    """ROC curves of attack results on log-log axes, saved to ``path`` (returned).

    One line per result, labelled ``"name (source): AUC 0.xxx, TPR@1% 0.xxx"`` (``n/a`` when the
    1% FPR is not measurable), the chance diagonal and dashed lines at FPR 0.1% and 1%. Axes span
    ``min(1e-4, 1 / num_non_members)`` to 1; zero rates are clipped to that lower bound.
    """
    return _save_atomically(lambda: _roc_figure(results, title=title), path)


# ---------------------------------------------------------------------------------------- histograms


def _signal_values(signals: Signals, name: str, side: str) -> np.ndarray:
    if not hasattr(signals, name):
        raise TfmiError(f"unknown signal {name!r} for the {side}: use fields of Signals such as "
                        f"{', '.join(DEFAULT_SIGNALS)}")
    return _finite_array(getattr(signals, name), f"{side} signal {name!r}")


def _histogram_figure(member_signals: Signals, non_member_signals: Signals, *,
                      signals: Sequence[str] = DEFAULT_SIGNALS, title: str = "") -> Figure:
    """The figure of `plot_signal_histograms`, not yet saved."""
    names = [signals] if isinstance(signals, str) else list(signals)
    if not names:
        raise TfmiError("no signals to plot: name at least one, e.g. signals=('loss',)")
    data = []
    for name in names:
        m = _signal_values(member_signals, name, "members")
        n = _signal_values(non_member_signals, name, "non-members")
        if name in LOG_X_SIGNALS:
            m, n = np.log10(np.maximum(m, 0.0) + LOG_EPS), np.log10(np.maximum(n, 0.0) + LOG_EPS)
        data.append((name, m, n))

    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure((max(FIGSIZE[0], 3.3 * ncols), max(FIGSIZE[1], 2.8 * nrows)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, m, n) in zip(axes, data, strict=False):
        edges = np.histogram_bin_edges(np.concatenate([m, n]), bins=HISTOGRAM_BINS)
        ax.hist(n, bins=edges, density=True, histtype="stepfilled", alpha=0.45, label="non-members")
        ax.hist(m, bins=edges, density=True, histtype="stepfilled", alpha=0.45, label="members")
        ax.set_xlabel(f"log10({name} + 1e-12)" if name in LOG_X_SIGNALS else name, fontsize=8)
        if name in LOG_Y_SIGNALS:
            ax.set_yscale("log")
            ax.set_ylabel("density (log scale)", fontsize=8)
        else:
            ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(data):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_signal_histograms(
    member_signals: Signals,
    non_member_signals: Signals,
    path: str | os.PathLike,
    *,
    signals: Sequence[str] = DEFAULT_SIGNALS,
    title: str = "",
) -> Path:
    """Normalized histograms of members' vs non-members' signals (same bins), saved to ``path``.

    One subplot per signal name (fields of `tfmi.attacks.signals.Signals`). Loss, entropy and
    modified entropy span orders of magnitude and are drawn as ``log10(value + 1e-12)``; the
    probability signals use a log-scaled density axis.
    """
    return _save_atomically(
        lambda: _histogram_figure(member_signals, non_member_signals, signals=signals, title=title), path)


# ---------------------------------------------------------------------------------- privacy-utility


def _privacy_utility_figure(points: Sequence[PrivacyUtilityPoint], *, title: str = "",
                            x_label: str = "best attack advantage") -> Figure:
    """The figure of `plot_privacy_utility`, not yet saved."""
    points = list(points)
    if not points:
        raise TfmiError("no privacy-utility points to plot: pass at least one PrivacyUtilityPoint")
    rows = []
    for i, p in enumerate(points):
        what = f"point {i} ({getattr(p, 'label', '?')})"
        values = [_finite_number(getattr(p, k, None), f"{what} {k}")
                  for k in ("advantage", "test_accuracy", "advantage_spread", "accuracy_spread")]
        if values[2] < 0 or values[3] < 0:
            raise TfmiError(f"{what} has a negative spread: spreads are error-bar half-widths, >= 0")
        rows.append((str(p.label), *values))

    fig = _new_figure()
    ax = fig.add_subplot()
    for label, adv, acc, adv_spread, acc_spread in rows:
        ax.errorbar(adv, acc, xerr=adv_spread or None, yerr=acc_spread or None, fmt="o", ms=5,
                    capsize=3, lw=1)
        ax.annotate(label, (adv, acc), xytext=(5, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel(f"{x_label} (lower = more private)")
    ax.set_ylabel("test accuracy")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_privacy_utility(
    points: Sequence[PrivacyUtilityPoint],
    path: str | os.PathLike,
    *,
    title: str = "",
    x_label: str = "best attack advantage",
) -> Path:
    """Scatter of attack advantage (x) vs test accuracy (y), one labelled point per model, saved to ``path``.

    >>> import os, tempfile
    >>> pts = [PrivacyUtilityPoint("baseline", 0.30, 0.85, 0.02, 0.01),
    ...        PrivacyUtilityPoint("dp-sgd eps=8", 0.05, 0.78)]
    >>> plot_privacy_utility(pts, os.path.join(tempfile.mkdtemp(), "pu.png")).stat().st_size > 1000
    True
    """
    return _save_atomically(lambda: _privacy_utility_figure(points, title=title, x_label=x_label), path)


# ----------------------------------------------------------------------------------------- frontier


def _frontier_figure(points: Sequence[FrontierPoint], *, title: str = "") -> Figure:
    """The two-panel figure of `plot_frontier`, not yet saved.

    Each line's ``gid`` names what it draws: ``"<defense>:points"`` (every setting of the defense) and
    ``"<defense>:frontier"`` (its Pareto-optimal settings joined, by increasing privacy metric).
    """
    from tfmi.frontier import METRICS, UNDEFENDED, pareto_front, split_run

    points = list(points)
    if not points:
        raise TfmiError("no frontier points to plot: pass at least one FrontierPoint")
    for i, p in enumerate(points):
        what = f"point {i} ({getattr(p, 'label', '?')})"
        if not all(hasattr(p, k) for k in ("label", "defense", "test_accuracy", *METRICS)):
            raise TfmiError(f"{what} is not a FrontierPoint (got {type(p).__name__})")
        _finite_number(p.test_accuracy, f"{what} test accuracy")
        for metric in METRICS:
            if getattr(p, metric) is not None:
                _finite_number(getattr(p, metric), f"{what} {metric}")
    defenses = list(dict.fromkeys(p.defense for p in points))
    # one colour per defense, one line style per run (frontiers of several benchmarks compared)
    bases = list(dict.fromkeys(split_run(d)[0] for d in defenses if split_run(d)[0] != UNDEFENDED))
    runs = list(dict.fromkeys(split_run(d)[1] for d in defenses))
    color_of = {base: f"C{i % 10}" for i, base in enumerate(bases)}
    style_of = {run: ("-", "--", ":", "-.")[i % 4] for i, run in enumerate(runs)}
    star_of = {run: ("*", "P", "X", "D")[i % 4] for i, run in enumerate(runs)}

    fig = _new_figure((2 * FIGSIZE[0], FIGSIZE[1]))
    axes = fig.subplots(1, len(METRICS), squeeze=False).ravel()
    for ax, (metric, name) in zip(axes, METRICS.items(), strict=True):
        drawn = 0
        for defense in defenses:
            group = [p for p in points if p.defense == defense and getattr(p, metric) is not None]
            if not group:
                continue
            drawn += len(group)
            xs = [getattr(p, metric) for p in group]
            ys = [p.test_accuracy for p in group]
            base, run = split_run(defense)
            if base == UNDEFENDED:
                ax.plot(xs, ys, ls="none", marker=star_of[run], ms=13 if star_of[run] == "*" else 9,
                        color="black", label=f"{defense} (undefended)", gid=f"{defense}:points", zorder=3)
                continue
            color = color_of[base]
            ax.plot(xs, ys, ls="none", marker="o", ms=5, alpha=0.45, color=color, gid=f"{defense}:points")
            for p, x, y in zip(group, xs, ys, strict=True):
                setting = p.label.removeprefix(defense).strip(" ()")
                if setting:
                    ax.annotate(setting, (x, y), xytext=(4, 3), textcoords="offset points", fontsize=6,
                                color=color)
            front = pareto_front(group, metric)
            ax.plot([getattr(p, metric) for p in front], [p.test_accuracy for p in front], marker="o", ms=6,
                    lw=1.5, ls=style_of[run], color=color, label=defense, gid=f"{defense}:frontier")
        if not drawn:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center")
        ax.set_xlabel(f"{name} (lower = more private)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_frontier(points: Sequence[FrontierPoint], path: str | os.PathLike, *, title: str = "") -> Path:
    """Test accuracy vs the best attack's TPR@1%FPR (left) and max advantage (right), saved to ``path``.

    Every point is drawn, annotated with its setting (its label without the defense's name); one line
    per defense joins its Pareto-optimal points (`tfmi.frontier`); the undefended model (defense
    ``none``) is a black star. Points without a metric are left out of that panel. Defenses of compared
    runs (``mmd@paper``, see `tfmi.frontier_comparison`) share their defense's colour and take one line
    style (and undefended marker) per run.

    >>> import os, tempfile
    >>> from tfmi.frontier import FrontierPoint
    >>> pts = [FrontierPoint("none", "none", 0.9, 0.10, 0.40),
    ...        FrontierPoint("l2 (l2=1)", "l2", 0.6, 0.01, 0.05),
    ...        FrontierPoint("l2 (l2=0.1)", "l2", 0.8, 0.04, 0.20)]
    >>> plot_frontier(pts, os.path.join(tempfile.mkdtemp(), "frontier.png")).stat().st_size > 1000
    True
    """
    return _save_atomically(lambda: _frontier_figure(points, title=title), path)
