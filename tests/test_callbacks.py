"""MembershipInferenceCallback: logged values match independent computations on real training."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from tfmi.callbacks import MembershipInferenceCallback
from tfmi.defenses.mmd_mixup import MMDMixupModel
from tfmi.errors import TfmiError

ATTACKS = ("loss", "confidence", "entropy", "modified_entropy")
EPOCHS = 30


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    members, others, reference = order[:300], order[300:600], order[600:800]
    return (x[members], y[members]), (x[others], y[others]), (x[reference], y[reference])


def _mlp(softmax: bool = False) -> keras.Model:
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10, activation="softmax" if softmax else None),
    ])
    model.compile(keras.optimizers.Adam(3e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
    return model


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def trained(digits):
    (mx, my), (ox, oy), _ = digits
    keras.utils.set_random_seed(0)
    model = _mlp()
    monitor = MembershipInferenceCallback((mx, my), (ox, oy))
    history = model.fit(mx, my, epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[monitor])
    return model, monitor, history


def test_history_has_every_key_for_every_epoch(trained):
    _, monitor, history = trained
    keys = ["mi_train_accuracy", "mi_test_accuracy", "mi_gap", "mi_gap_attack_accuracy", "mi_best_advantage"]
    keys += [f"mi_{a}_{m}" for a in ATTACKS for m in ("auc", "advantage")]
    assert set(keys) == set(monitor.keys)
    for key in keys:
        assert len(history.history[key]) == EPOCHS, key
        assert all(isinstance(v, float) and math.isfinite(v) for v in history.history[key])
    assert [h["epoch"] for h in monitor.history] == list(range(EPOCHS))
    assert [h["mi_gap"] for h in monitor.history] == history.history["mi_gap"]
    best = [max(h[f"mi_{a}_advantage"] for a in ATTACKS) for h in monitor.history]
    assert best == history.history["mi_best_advantage"]
    assert monitor.stopped_epoch is None


def test_gap_grows_and_matches_numpy(trained, digits):
    model, monitor, history = trained
    (mx, my), (ox, oy), _ = digits
    gaps = history.history["mi_gap"]
    assert gaps[-1] > gaps[0]
    train_acc = float(np.mean(np.argmax(model.predict(mx, verbose=0), axis=1) == my))
    test_acc = float(np.mean(np.argmax(model.predict(ox, verbose=0), axis=1) == oy))
    assert history.history["mi_train_accuracy"][-1] == pytest.approx(train_acc, abs=1e-12)
    assert history.history["mi_test_accuracy"][-1] == pytest.approx(test_acc, abs=1e-12)
    assert gaps[-1] == pytest.approx(train_acc - test_acc, abs=1e-12)
    assert history.history["mi_gap_attack_accuracy"][-1] == pytest.approx(0.5 + (train_acc - test_acc) / 2)


def test_loss_auc_matches_sklearn(trained, digits):
    model, _, history = trained
    (mx, my), (ox, oy), _ = digits
    x, y = np.concatenate([mx, ox]), np.concatenate([my, oy])
    log_p = _log_softmax(model.predict(x, verbose=0).astype(np.float64))
    loss = -log_p[np.arange(len(y)), y]
    is_member = np.r_[np.ones(len(mx)), np.zeros(len(ox))]
    assert history.history["mi_loss_auc"][-1] == pytest.approx(roc_auc_score(is_member, -loss), abs=1e-6)
    assert history.history["mi_loss_auc"][-1] > 0.5


def test_every_logs_nan_on_skipped_epochs(digits):
    (mx, my), (ox, oy), _ = digits
    keras.utils.set_random_seed(1)
    monitor = MembershipInferenceCallback((mx, my), (ox, oy), every=3, attacks=["loss"])
    history = _mlp().fit(mx, my, epochs=7, batch_size=64, verbose=0, callbacks=[monitor])
    gaps = history.history["mi_gap"]
    assert len(gaps) == 7
    evaluated = [i for i, v in enumerate(gaps) if not math.isnan(v)]
    assert evaluated == [2, 5]
    assert [h["epoch"] for h in monitor.history] == [2, 5]
    assert "mi_confidence_auc" not in history.history
    assert math.isnan(history.history["mi_loss_auc"][0]) and not math.isnan(history.history["mi_loss_auc"][2])


def test_advantage_budget_stops_training(digits):
    # an untrained model's oracle advantage on 300 vs 300 records is already ~0.06 (noise), so a
    # budget of 0.1 is crossed after a few epochs rather than at the first one
    (mx, my), (ox, oy), _ = digits
    keras.utils.set_random_seed(2)
    monitor = MembershipInferenceCallback((mx, my), (ox, oy), advantage_budget=0.1)
    history = _mlp().fit(mx, my, epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[monitor])
    assert len(history.epoch) < EPOCHS
    assert monitor.stopped_epoch == history.epoch[-1] >= 1
    assert history.history["mi_best_advantage"][-1] > 0.1
    assert all(v <= 0.1 for v in history.history["mi_best_advantage"][:-1])


def test_softmax_outputs(digits):
    (mx, my), (ox, oy), _ = digits
    keras.utils.set_random_seed(3)
    model = _mlp(softmax=True)
    monitor = MembershipInferenceCallback((mx, my), (ox, oy), attacks=["loss", "entropy"])
    history = model.fit(mx, my, epochs=3, batch_size=32, verbose=0, callbacks=[monitor])
    probs = model.predict(np.concatenate([mx, ox]), verbose=0).astype(np.float64)
    y = np.concatenate([my, oy])
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))
    is_member = np.r_[np.ones(len(mx)), np.zeros(len(ox))]
    assert history.history["mi_loss_auc"][-1] == pytest.approx(roc_auc_score(is_member, -loss), abs=1e-6)
    assert len(history.history["mi_entropy_advantage"]) == 3


def test_defended_model(digits):
    (mx, my), (ox, oy), (rx, ry) = digits
    keras.utils.set_random_seed(4)
    inner = _mlp()
    model = MMDMixupModel(inner, (rx, ry), mmd_weight=1.0, mixup_alpha=1.0)
    model.compile(optimizer="adam", metrics=["accuracy"])
    monitor = MembershipInferenceCallback((mx, my), (ox, oy))
    history = model.fit(mx, my, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    assert len(history.history["mi_gap"]) == 2 and len(history.history["mi_best_advantage"]) == 2
    train_acc = float(np.mean(np.argmax(inner(mx, training=False).numpy(), axis=1) == my))
    assert history.history["mi_train_accuracy"][-1] == pytest.approx(train_acc, abs=1e-12)


def test_one_hot_labels_and_subsampling(digits):
    (mx, my), (ox, oy), _ = digits
    one_hot = np.eye(10, dtype=np.float32)[my]
    a = MembershipInferenceCallback((mx, one_hot), (ox, oy), max_examples=100, seed=7)
    b = MembershipInferenceCallback((mx, my), (ox, oy), max_examples=100, seed=7)
    assert len(a.member_x) == len(a.non_member_x) == 100
    np.testing.assert_array_equal(a.member_x, b.member_x)
    np.testing.assert_array_equal(a.member_y, b.member_y)
    c = MembershipInferenceCallback((mx[:50], my[:50]), (ox, oy), max_examples=100)
    assert (len(c.member_x), len(c.non_member_x)) == (50, 100)


@pytest.mark.parametrize("members, non_members, kwargs, message", [
    ((np.zeros((5, 4)), np.zeros(4, int)), (np.zeros((3, 4)), np.zeros(3, int)), {}, "must match"),
    ((np.zeros((5, 4)), np.zeros(5, int)), (np.zeros((3, 6)), np.zeros(3, int)), {}, "feature shape"),
    ((np.zeros((0, 4)), np.zeros(0, int)), (np.zeros((3, 4)), np.zeros(3, int)), {}, "empty"),
    ((np.zeros((5, 4)), np.zeros(5, int)), (np.zeros((3, 4)), -np.ones(3, int)), {}, ">= 0"),
    ((np.zeros((5, 4)), np.zeros(5, int)), (np.zeros((3, 4)), np.zeros(3, int)),
     {"advantage_budget": 1.5}, r"\[0, 1\]"),
    ((np.zeros((5, 4)), np.zeros(5, int)), (np.zeros((3, 4)), np.zeros(3, int)),
     {"advantage_budget": -0.1}, r"\[0, 1\]"),
    ((np.zeros((5, 4)), np.zeros(5, int)), (np.zeros((3, 4)), np.zeros(3, int)), {"every": 0}, "every"),
    ((np.zeros((5, 4)), np.zeros(5, int)), (np.zeros((3, 4)), np.zeros(3, int)),
     {"attacks": ["lira"]}, "unknown threshold attack"),
])
def test_bad_input(members, non_members, kwargs, message):
    with pytest.raises(TfmiError, match=message):
        MembershipInferenceCallback(members, non_members, **kwargs)


def test_tensorboard_after_the_callback_writes_the_keys(digits, tmp_path):
    (mx, my), (ox, oy), _ = digits
    monitor = MembershipInferenceCallback((mx, my), (ox, oy), attacks=["loss"])
    board = keras.callbacks.TensorBoard(str(tmp_path), write_graph=False, profile_batch=0)
    _mlp().fit(mx, my, epochs=1, batch_size=64, verbose=0, callbacks=[monitor, board])
    tags = set()
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_mi_gap", "epoch_mi_loss_auc", "epoch_mi_best_advantage"} <= tags
