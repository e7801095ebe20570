"""Membership signals: each one against a naive computation, stability at huge logit margins, the
logits-vs-probabilities decision for every kind of model, and bad input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi.attacks.signals import (
    SIGNAL_NAMES,
    ModelOutputs,
    Signals,
    compute_signals,
    model_outputs,
    signals_for,
)
from tfmi.errors import TfmiError

NUM_CLASSES = 5


def naive_signals(probs: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The textbook formulas, straight from the probabilities, with explicit per-class sums."""
    rows = np.arange(len(y))
    p_y = probs[rows, y]
    others = np.ones_like(probs, dtype=bool)
    others[rows, y] = False
    return {
        "loss": -np.log(p_y),
        "max_confidence": probs.max(axis=1),
        "true_class_probability": p_y,
        "entropy": -(probs * np.log(probs)).sum(axis=1),
        "modified_entropy": -(1 - p_y) * np.log(p_y)
        - (np.where(others, probs * np.log(1 - probs), 0.0)).sum(axis=1),
        "correct": (probs.argmax(axis=1) == y).astype(float),
        "logit_confidence": np.log(p_y) - np.log(1 - p_y),
    }


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture()
def random_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(200, NUM_CLASSES))
    y = rng.integers(0, NUM_CLASSES, size=200)
    return logits, y


def test_each_signal_matches_naive_formula(random_logits):
    logits, y = random_logits
    signals = compute_signals(logits, y, kind="logits")
    expected = naive_signals(softmax(logits), y)
    assert set(signals.as_dict()) == set(SIGNAL_NAMES) == set(expected)
    for name in SIGNAL_NAMES:
        value = getattr(signals, name)
        assert value.shape == (len(y),) and value.dtype == np.float64, name
        np.testing.assert_allclose(value, expected[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert 0 < signals.correct.mean() < 1  # both branches exercised


def test_logits_and_probabilities_agree(random_logits):
    logits, y = random_logits
    from_logits = compute_signals(logits, y, kind="logits")
    from_probs = compute_signals(softmax(logits), y, kind="probabilities")
    auto_probs = compute_signals(softmax(logits), y)  # detected as probabilities
    auto_logits = compute_signals(logits, y)  # detected as logits
    for name in SIGNAL_NAMES:
        np.testing.assert_allclose(getattr(from_probs, name), getattr(from_logits, name), rtol=1e-8,
                                   atol=1e-10, err_msg=name)
        np.testing.assert_array_equal(getattr(auto_probs, name), getattr(from_probs, name))
        np.testing.assert_array_equal(getattr(auto_logits, name), getattr(from_logits, name))
    # float32 probabilities (what models emit) still agree closely
    from_f32 = compute_signals(softmax(logits).astype(np.float32), y)
    np.testing.assert_allclose(from_f32.loss, from_logits.loss, rtol=1e-4, atol=1e-6)


def test_huge_margins_stay_finite_and_exact():
    margin = 1000.0
    logits = np.array([[margin, 0.0, 0.0], [0.0, margin, 0.0], [margin, 0.0, -margin]])
    y = np.array([0, 0, 0])  # right, wrong, right
    s = compute_signals(logits, y, kind="logits")
    for name, value in s.as_dict().items():
        assert np.all(np.isfinite(value)), name
    np.testing.assert_allclose(s.loss, [0.0, margin, 0.0], atol=1e-9)
    np.testing.assert_allclose(s.logit_confidence, [margin - np.log(2), -margin, margin], rtol=1e-12)
    np.testing.assert_allclose(s.modified_entropy, [0.0, 2 * margin - np.log(2), 0.0], atol=1e-9)
    np.testing.assert_array_equal(s.correct, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(s.max_confidence, 1.0)
    # probabilities that saturate are clipped: large but finite
    sp = compute_signals(np.array([[1.0, 0.0, 0.0]]), [1], kind="probabilities")
    assert all(np.all(np.isfinite(v)) for v in sp.as_dict().values())
    assert sp.loss[0] > 20 and sp.logit_confidence[0] < -20


def linear_model(activation: str | None) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation)])


def test_auto_detection_on_keras_models():
    x = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    logit_out = model_outputs(linear_model(None), x, batch_size=16)
    assert logit_out.kind == "logits" and logit_out.values.shape == (50, 3)
    prob_out = model_outputs(linear_model("softmax"), x, batch_size=7)
    assert prob_out.kind == "probabilities"
    np.testing.assert_allclose(prob_out.values.sum(axis=1), 1.0, atol=1e-5)
    # the same weights give the same signals either way
    np.testing.assert_allclose(compute_signals(logit_out, np.zeros(50, int)).loss,
                               compute_signals(prob_out, np.zeros(50, int)).loss, rtol=1e-4, atol=1e-6)
    with pytest.raises(TfmiError, match="sum to 1"):
        model_outputs(linear_model(None), x, outputs="probabilities")
    assert model_outputs(linear_model("softmax"), x, outputs="logits").kind == "logits"  # user decides
    with pytest.raises(TfmiError, match="sigmoid"):
        model_outputs(linear_model("sigmoid"), x)


def test_auto_detection_on_saved_model(tmp_path):
    x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    for activation, kind in ((None, "logits"), ("softmax", "probabilities")):
        keras_model = linear_model(activation)
        path = str(tmp_path / f"model-{kind}")
        keras_model.export(path)
        loaded = tf.saved_model.load(path)
        out = model_outputs(loaded, x, batch_size=8)
        assert out.kind == kind
        np.testing.assert_allclose(out.values, keras_model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_auto_detection_on_numpy_callable():
    weights = np.random.default_rng(3).normal(size=(4, 3))
    x = np.random.default_rng(4).normal(size=(20, 4))

    def logits_fn(batch: np.ndarray) -> np.ndarray:
        assert isinstance(batch, np.ndarray)
        return batch @ weights

    assert model_outputs(logits_fn, x, batch_size=6).kind == "logits"
    out = model_outputs(lambda b: softmax(logits_fn(b)), x, batch_size=6)
    assert out.kind == "probabilities" and len(out) == 20 and out.num_classes == 3
    np.testing.assert_allclose(out.values, softmax(x.astype(np.float32) @ weights), rtol=1e-6)


def test_trained_model_has_lower_member_loss():
    from tfmi.data import load_dataset, membership_split
    from tfmi.models import build_model

    data = load_dataset("digits")
    split = membership_split(data.y, 300, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model("mlp", (8, 8, 1), 10, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.x[split.members], data.y[split.members], epochs=3, batch_size=32, verbose=0)
    members = signals_for(model, data.x[split.members], data.y[split.members])
    others = signals_for(model, data.x[split.non_members], data.y[split.non_members])
    assert isinstance(members, Signals) and len(members) == len(split.members)
    assert members.loss.mean() < others.loss.mean()
    # the signal's loss is Keras's own cross-entropy
    keras_loss = keras.losses.sparse_categorical_crossentropy(
        data.y[split.members], model(data.x[split.members]), from_logits=True).numpy()
    np.testing.assert_allclose(members.loss, keras_loss, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("outputs", "y", "kind", "match"),
    [
        (np.zeros((3, 4)), [0, 1], None, "3 rows but labels have 2"),
        (np.zeros((3, 4)), [0, 1, 4], None, "0..3"),
        (np.zeros((3, 4)), [0, 1, -1], None, ">= 0"),
        (np.zeros((3, 4)), [0, 1, 1.5], None, "integer"),
        (np.zeros((3, 4)), ["a", "b", "c"], None, "integer"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), [0, 1], None, "NaN or infinity"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), [0, 1], None, "NaN or infinity"),
        (np.zeros(4), [0, 1, 1, 0], None, "shape"),
        (np.zeros((2, 3, 4)), [0, 1], None, "shape"),
        (np.zeros((3, 1)), [0, 0, 0], None, "num_classes >= 2"),
        (np.zeros((0, 4)), np.zeros(0, int), None, "empty"),
        (np.zeros((2, 3)), [0, 1], "probabilities", "sum to 1"),
        (np.zeros((2, 3)), [0, 1], "softmax", "must be one of"),
        (ModelOutputs(np.zeros((2, 3)), "logits"), [0, 1], "probabilities", "contradicts"),
    ],
)
def test_bad_signal_input_raises(outputs, y, kind, match):
    with pytest.raises(TfmiError, match=match):
        compute_signals(outputs, np.asarray(y), kind=kind)


def test_bad_model_input_raises():
    x = np.zeros((5, 4), np.float32)
    model = linear_model(None)
    with pytest.raises(TfmiError, match="5 rows but labels have 4"):
        signals_for(model, x, [0, 1, 2, 0])
    with pytest.raises(TfmiError, match="empty"):
        model_outputs(model, np.zeros((0, 4), np.float32))
    with pytest.raises(TfmiError, match="NaN or infinity"):
        model_outputs(model, np.full((5, 4), np.nan))
    with pytest.raises(TfmiError, match="0..2"):
        signals_for(model, x, [0, 1, 2, 3, 0])
    with pytest.raises(TfmiError, match="NaN or infinity"):
        model_outputs(lambda b: np.full((len(b), 3), np.nan), x)
    with pytest.raises(TfmiError, match="shape"):
        model_outputs(lambda b: b[:, 0], x)
    with pytest.raises(TfmiError, match="one row per example"):
        model_outputs(lambda b: np.zeros((1, 3)), x)
    with pytest.raises(TfmiError, match="batch size"):
        model_outputs(model, x, batch_size=0)
    with pytest.raises(TfmiError, match="must be one of"):
        model_outputs(model, x, outputs="softmax")
    with pytest.raises(TfmiError, match="cannot compute outputs"):
        model_outputs(object(), x)
    with pytest.raises(TfmiError, match="output kind"):
        ModelOutputs(np.zeros((2, 3)), "scores")
