"""tfmi.plots: valid image files, atomic writes, clear errors, labels and log axes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest

from tfmi.attacks.metrics import AttackResult, evaluate_scores
from tfmi.errors import TfmiError
from tfmi.plots import (
    DPI,
    FIGSIZE,
    PrivacyUtilityPoint,
    _histogram_figure,
    _privacy_utility_figure,
    _roc_figure,
    plot_privacy_utility,
    plot_roc,
    plot_signal_histograms,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(name: str = "loss", n: int = 400, shift: float = 1.0, seed: int = 0) -> AttackResult:
    rng = np.random.default_rng(seed)
    return evaluate_scores(rng.normal(shift, 1, n), rng.normal(0, 1, n), attack=name)


def _signals(n: int, confident: bool, seed: int) -> SimpleNamespace:
    """A stand-in for Signals (same field names), without importing TensorFlow."""
    rng = np.random.default_rng(seed)
    loss = rng.exponential(0.05 if confident else 1.0, n)
    p = np.exp(-loss)
    return SimpleNamespace(loss=loss, max_confidence=p, true_class_probability=p,
                           entropy=rng.exponential(0.1 if confident else 0.8, n),
                           modified_entropy=rng.exponential(0.1 if confident else 0.8, n),
                           correct=(rng.random(n) < (0.95 if confident else 0.7)).astype(float),
                           logit_confidence=np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-12)))


def _check_png(path, expected_pixels=None) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    if expected_pixels is not None:
        w, h = expected_pixels
        assert abs(image.shape[1] - w) <= 2 and abs(image.shape[0] - h) <= 2, image.shape


def _only(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_plot_roc_writes_png_of_expected_size(tmp_path):
    out = plot_roc([_result("loss"), _result("entropy", shift=0.5)], tmp_path / "sub" / "roc.png",
                   title="two attacks")
    assert out == tmp_path / "sub" / "roc.png"
    _check_png(out, (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI))
    assert _only(out.parent) == ["roc.png"]  # no temp file left behind


def test_plot_roc_overwrites_existing_file(tmp_path):
    path = tmp_path / "roc.png"
    path.write_bytes(b"old")
    plot_roc([_result()], path)
    _check_png(path)
    assert _only(tmp_path) == ["roc.png"]


def test_roc_labels_scales_and_limits():
    small = evaluate_scores(np.array([0.9, 0.8, 0.4]), np.array([0.5, 0.3, 0.1]), attack="loss")
    big = _result("confidence", n=20000)
    fig = _roc_figure([small, big])
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0] == f"loss (oracle): AUC {small.auc:.3f}, TPR@1% n/a"
    assert texts[1] == f"confidence (oracle): AUC {big.auc:.3f}, TPR@1% {big.tpr_at_fpr[0.01]:.3f}"
    assert texts[2] == "chance"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlim() == pytest.approx((1 / 20000, 1.0))  # below 1e-4: the finest measurable FPR
    marks = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert sorted(marks) == [0.001, 0.01]
    assert {t.get_text() for t in ax.texts} == {"FPR 0.1%", "FPR 1%"}


def test_roc_zero_rates_are_clipped_to_axis_bound(tmp_path):
    r = _result(n=100)  # ROC starts at (0, 0) and has points with FPR 0
    assert r.roc[0][0] == 0 and r.roc[1][0] == 0
    ax = _roc_figure([r]).axes[0]
    lo = ax.get_xlim()[0]
    assert lo == pytest.approx(1e-4)
    x, y = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert np.all(x >= lo) and np.all(y >= lo) and np.all(np.isfinite(x))
    # a perfect attack: TPR 1 at FPR 0
    perfect = evaluate_scores(np.ones(50), np.zeros(50), attack="perfect")
    _check_png(plot_roc([perfect], tmp_path / "perfect.png"))


@pytest.mark.parametrize("bad", [[], "nan_auc", "nan_roc", "not_a_result"])
def test_plot_roc_bad_input_leaves_nothing(tmp_path, bad):
    r = _result()
    if bad == "nan_auc":
        bad = [AttackResult(**{**r.__dict__, "auc": math.nan})]
    elif bad == "nan_roc":
        fpr = r.roc[0].copy()
        fpr[3] = np.nan
        bad = [AttackResult(**{**r.__dict__, "roc": (fpr, r.roc[1])})]
    elif bad == "not_a_result":
        bad = [object()]
    with pytest.raises(TfmiError) as e:
        plot_roc(bad, tmp_path / "out" / "roc.png")
    assert "\n" not in str(e.value)
    assert _only(tmp_path) == []  # not even the parent folder


def test_unknown_suffix_is_an_error(tmp_path):
    with pytest.raises(TfmiError, match="format"):
        plot_roc([_result()], tmp_path / "roc.jpeg2")
    assert _only(tmp_path) == []


def test_svg_and_pdf_suffixes(tmp_path):
    assert plot_roc([_result()], tmp_path / "roc.svg").read_bytes().lstrip()[:5] in (b"<?xml", b"<svg ")
    assert plot_roc([_result()], tmp_path / "roc.pdf").read_bytes()[:4] == b"%PDF"


def test_signal_histograms(tmp_path):
    members, others = _signals(500, True, 0), _signals(500, False, 1)
    out = plot_signal_histograms(members, others, tmp_path / "hist.png", title="signals")
    _check_png(out)
    assert _only(tmp_path) == ["hist.png"]
    fig = _histogram_figure(members, others, signals=("loss", "max_confidence", "logit_confidence"))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    assert visible[0].get_xlabel() == "log10(loss + 1e-12)"
    assert visible[1].get_xlabel() == "max_confidence" and visible[1].get_yscale() == "log"
    assert visible[2].get_xlabel() == "logit_confidence" and visible[2].get_yscale() == "linear"
    assert [t.get_text() for t in visible[0].get_legend().get_texts()] == ["non-members", "members"]


def test_signal_histograms_with_real_signals(tmp_path):
    from tfmi.attacks.signals import compute_signals

    rng = np.random.default_rng(0)
    members = compute_signals(rng.normal(size=(300, 4)) + [3, 0, 0, 0], np.zeros(300, int), kind="logits")
    others = compute_signals(rng.normal(size=(300, 4)), np.zeros(300, int), kind="logits")
    _check_png(plot_signal_histograms(members, others, tmp_path / "h.png", signals=("loss", "correct")))


@pytest.mark.parametrize("problem", ["empty_signals", "empty_array", "nan", "unknown"])
def test_signal_histograms_bad_input_leaves_nothing(tmp_path, problem):
    members, others = _signals(100, True, 0), _signals(100, False, 1)
    kwargs = {}
    if problem == "empty_signals":
        kwargs["signals"] = ()
    elif problem == "empty_array":
        members.entropy = np.array([])
    elif problem == "nan":
        others.loss[5] = np.nan
    else:
        kwargs["signals"] = ("loss", "no_such_signal")
    with pytest.raises(TfmiError):
        plot_signal_histograms(members, others, tmp_path / "hist.png", **kwargs)
    assert _only(tmp_path) == []


def test_privacy_utility(tmp_path):
    points = [PrivacyUtilityPoint("baseline", 0.3, 0.85, 0.02, 0.01), PrivacyUtilityPoint("dp", 0.05, 0.7)]
    out = plot_privacy_utility(points, tmp_path / "pu.png", title="trade-off", x_label="loss advantage")
    _check_png(out, (FIGSIZE[0] * DPI, FIGSIZE[1] * DPI))
    ax = _privacy_utility_figure(points, x_label="loss advantage").axes[0]
    assert {t.get_text() for t in ax.texts} == {"baseline", "dp"}
    assert ax.get_xlabel().startswith("loss advantage") and ax.get_ylabel() == "test accuracy"


@pytest.mark.parametrize("points", [
    [],
    [PrivacyUtilityPoint("a", math.nan, 0.8)],
    [PrivacyUtilityPoint("a", 0.1, 0.8, accuracy_spread=math.nan)],
    [PrivacyUtilityPoint("a", 0.1, 0.8, advantage_spread=-0.1)],
])
def test_privacy_utility_bad_input_leaves_nothing(tmp_path, points):
    with pytest.raises(TfmiError):
        plot_privacy_utility(points, tmp_path / "pu.png")
    assert _only(tmp_path) == []


def test_failed_save_removes_temp_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_roc([_result()], tmp_path / "roc.png")
    assert _only(tmp_path) == []


def test_no_pyplot_figures_left_open(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_roc([_result()], tmp_path / "roc.png")
    assert plt.get_fignums() == before
