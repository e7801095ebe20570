"""DP-SGD defense: configuration checks, privacy accounting, and real training on every path."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi.data import load_dataset
from tfmi.defenses.dp_sgd import (
    DPAccounting,
    DPSGDConfig,
    dp_epsilon,
    make_dp_model,
    make_layer_registry,
    noise_for_epsilon,
    resolve_path,
)
from tfmi.errors import TfmiError
from tfmi.inference import accuracy
from tfmi.models import build_model

layers = keras.layers
TRAIN_PATHS = ("fast", "dpmodel", "vectorized", "microbatched")


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data.x[:300], data.y[:300]


def small_net(seed: int = 0, dropout: float = 0.0) -> keras.Model:
    """A small dense classifier for the 8x8 digits, quick to trace on every path."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = layers.Dense(64, activation="tanh")(layers.Flatten()(inputs))
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def flat_weights(model: keras.Model) -> np.ndarray:
    return np.concatenate([w.ravel() for w in model.get_weights()])


def dp(model, config, *, num_examples=300, batch_size=32, epochs=2, learning_rate=1e-2):
    return make_dp_model(
        model, config, num_examples=num_examples, batch_size=batch_size, epochs=epochs,
        learning_rate=learning_rate,
    )


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"l2_norm_clip": 0.0}, "l2_norm_clip must be a positive number"),
        ({"l2_norm_clip": -1.0}, "l2_norm_clip"),
        ({"l2_norm_clip": float("nan")}, "l2_norm_clip"),
        ({"l2_norm_clip": True}, "l2_norm_clip"),
        ({"noise_multiplier": -0.1}, "noise_multiplier must be a number >= 0"),
        ({"noise_multiplier": float("inf")}, "noise_multiplier"),
        ({"target_epsilon": 3.0}, "not both"),
        ({"noise_multiplier": None}, "give a noise_multiplier"),
        ({"noise_multiplier": None, "target_epsilon": 0.0}, "target_epsilon must be a positive"),
        ({"noise_multiplier": None, "target_epsilon": -2.0}, "target_epsilon"),
        ({"delta": 0.0}, "delta must be a number strictly between 0 and 1"),
        ({"delta": 1.0}, "delta"),
        ({"delta": "1e-5"}, "delta"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        ({"path": "turbo"}, "unknown DP-SGD path 'turbo'"),
        ({"num_microbatches": 0}, "num_microbatches must be a positive integer"),
        ({"num_microbatches": 2.5}, "num_microbatches"),
        ({"accountant": "zcdp"}, "unknown accountant"),
    ],
)
def test_config_rejects_bad_input(kwargs, message):
    with pytest.raises(TfmiError, match=re.escape(message)) as err:
        DPSGDConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_config_accepts_a_target_epsilon_instead_of_noise():
    config = DPSGDConfig(noise_multiplier=None, target_epsilon=2.0, path="vectorized", optimizer="sgd")
    assert config.to_dict()["target_epsilon"] == 2.0


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = layers.Dense(10)

    def call(self, x):
        return self.dense(layers.Flatten()(x))


def softmax_net():
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.Flatten()(inputs)))


def batchnorm_net():
    inputs = keras.Input((8, 8, 1))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, layers.Dense(10)(layers.Flatten()(x)))


@pytest.mark.parametrize(
    "make_model, config, overrides, message",
    [
        (small_net, DPSGDConfig(num_microbatches=10), {"batch_size": 64}, "does not divide the batch size"),
        (small_net, DPSGDConfig(num_microbatches=128), {"batch_size": 64}, "does not divide"),
        (small_net, DPSGDConfig(), {"batch_size": 400}, "exceeds the 300 training examples"),
        (small_net, DPSGDConfig(), {"batch_size": 0}, "batch size must be a positive integer"),
        (small_net, DPSGDConfig(), {"num_examples": 0}, "num examples must be a positive integer"),
        (small_net, DPSGDConfig(), {"epochs": 0}, "epochs must be a positive number"),
        (small_net, DPSGDConfig(), {"learning_rate": 0.0}, "learning rate must be a positive number"),
        (small_net, {"noise_multiplier": 1.0}, {}, "config must be a DPSGDConfig"),
        (lambda: small_net(dropout=0.5), DPSGDConfig(path="fast"), {}, "Dropout"),
        (batchnorm_net, DPSGDConfig(), {}, "BatchNormalization"),
        (softmax_net, DPSGDConfig(), {}, "expects logits"),
        (Subclassed, DPSGDConfig(), {}, "functional Keras model"),
    ],
)
def test_make_dp_model_rejects_bad_input_before_training(make_model, config, overrides, message):
    model = make_model()
    settings = {"num_examples": 300, "batch_size": 32, "epochs": 2, "learning_rate": 1e-3, **overrides}
    with pytest.raises(TfmiError, match=re.escape(message)) as err:
        make_dp_model(model, config, **settings)
    assert "\n" not in str(err.value)


def test_auto_path_is_fast_where_the_registry_covers_the_model():
    assert resolve_path(build_model("mlp", (8, 8, 1), 10)) == "fast"
    assert resolve_path(build_model("cnn", (8, 8, 1), 10)) == "fast"  # Conv2D: tfmi's registry entry
    assert resolve_path(build_model("alexnet", (32, 32, 3), 10)) == "fast"
    assert resolve_path(small_net(dropout=0.5)) == "dpmodel"
    inputs = keras.Input((5, 3))
    recurrent = keras.Model(inputs, layers.Dense(2)(layers.SimpleRNN(4)(inputs)))
    assert resolve_path(recurrent) == "dpmodel"
    assert resolve_path(recurrent, "vectorized") == "vectorized"
    with pytest.raises(TfmiError, match="SimpleRNN"):
        resolve_path(recurrent, "fast")


# -- privacy accounting ----------------------------------------------------------------------------


def tf_privacy_epsilon(n, batch, epochs, noise, delta, used_microbatching):
    """Epsilon from tensorflow-privacy's own statement (the Poisson-sampling line, 3 decimals), for
    the steps `fit` takes: tfmi counts epochs * ceil(n / batch) steps, tensorflow-privacy
    ceil(epochs * n / batch), so it is given the epochs that make the two counts equal."""
    from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib

    epochs = epochs * math.ceil(n / batch) * batch / n - 1e-9

    statement = compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy_statement(
        n, batch, epochs, noise, delta, used_microbatching=used_microbatching
    )
    return float(re.search(r"Poisson sampling \(\*\):\s+([0-9.]+)", statement).group(1))


def test_epsilon_decreases_with_noise_and_matches_tf_privacy():
    noises = [0.7, 1.0, 2.0, 4.0]
    epsilons = [dp_epsilon(1500, 64, 30, noise, 1e-5) for noise in noises]
    assert all(a > b for a, b in zip(epsilons, epsilons[1:], strict=False))
    for noise, epsilon in zip(noises[1:3], epsilons[1:3], strict=True):
        assert epsilon == pytest.approx(tf_privacy_epsilon(1500, 64, 30, noise, 1e-5, False), abs=6e-4)
    # Microbatches of several examples double the sensitivity: the epsilon of half the noise.
    micro = dp_epsilon(1500, 64, 30, 2.0, 1e-5, used_microbatching=True)
    assert micro == pytest.approx(epsilons[1], rel=1e-9)
    assert micro == pytest.approx(tf_privacy_epsilon(1500, 64, 30, 2.0, 1e-5, True), abs=6e-4)
    assert dp_epsilon(1500, 64, 30, 0.0, 1e-5) == math.inf
    assert dp_epsilon(1500, 64, 5, 1.0, 1e-5, accountant="PLD") < dp_epsilon(1500, 64, 5, 1.0, 1e-5)


def test_noise_for_epsilon_round_trips_and_agrees_with_tf_privacy():
    from tensorflow_privacy.privacy.analysis import compute_noise_from_budget_lib

    for target in (1.0, 8.0):
        noise = noise_for_epsilon(1500, 64, 30, target, 1e-5)
        reached = dp_epsilon(1500, 64, 30, noise, 1e-5)
        assert target * 0.995 <= reached <= target
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its conclusion
            theirs = compute_noise_from_budget_lib.compute_noise(1500, 64, target, 30, 1e-5, 0.1)
        assert noise == pytest.approx(theirs, rel=0.03)  # same accountant, other RDP orders
    with pytest.raises(TfmiError, match="batch size 64 exceeds"):
        noise_for_epsilon(50, 64, 30, 1.0, 1e-5)


def test_accounting_of_a_target_epsilon_run_goes_to_json():
    model, accounting = dp(small_net(), DPSGDConfig(noise_multiplier=None, target_epsilon=2.0),
                           num_examples=1500, batch_size=64, epochs=30)
    assert isinstance(accounting, DPAccounting)
    assert accounting.epsilon <= 2.0 and accounting.epsilon == pytest.approx(2.0, rel=0.01)
    assert accounting.noise_multiplier == pytest.approx(noise_for_epsilon(1500, 64, 30, 2.0, 1e-5))
    record = json.loads(json.dumps(accounting.to_dict()))
    assert record["path"] == "fast" and record["delta"] == 1e-5 and record["accountant"] == "RDP"
    assert record["batch_size"] == 64 and record["used_microbatching"] is False
    _, no_noise = dp(small_net(), DPSGDConfig(noise_multiplier=0.0))
    assert json.loads(json.dumps(no_noise.to_dict()))["epsilon"] is None


# -- training --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TRAIN_PATHS)
def test_each_path_learns_under_dp_noise(path, digits):
    x, y = digits  # 300 examples, batch 32: the last batch of each epoch has 12
    net = small_net()
    model, accounting = dp(net, DPSGDConfig(noise_multiplier=0.5, path=path))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert accounting.path == path and 0 < accounting.epsilon < math.inf
    assert history.history["loss"][1] < history.history["loss"][0]
    assert accuracy(net, x, y) > 0.5  # chance is 0.1; `net` shares the trained weights


def test_paths_compute_the_same_clipped_gradients(digits):
    """Without noise, every path takes the same steps (SGD, per-example clipping at 1.0)."""
    x, y = digits
    weights = {}
    for path in TRAIN_PATHS:
        net = small_net(seed=1)
        model, _ = dp(net, DPSGDConfig(noise_multiplier=0.0, optimizer="sgd", path=path), epochs=1)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights[path] = flat_weights(net)
    start = flat_weights(small_net(seed=1))
    assert np.linalg.norm(weights["fast"] - start) > 0.02
    for path in TRAIN_PATHS[1:]:
        np.testing.assert_allclose(weights[path], weights["fast"], atol=2e-5)


def test_clipping_bounds_every_step():
    """With clip C, SGD lr and momentum 0.9, k steps move the weights by at most k * lr * C / 0.1."""
    data = load_dataset("digits")
    x, y = data.x[:256], data.y[:256]
    clip, lr, steps = 1e-3, 0.5, 8
    net = small_net(seed=2)
    start = flat_weights(net)
    model, _ = dp(net, DPSGDConfig(l2_norm_clip=clip, noise_multiplier=0.0, optimizer="sgd"),
                  num_examples=256, epochs=1, learning_rate=lr)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    moved = np.linalg.norm(flat_weights(net) - start)
    assert 0 < moved <= steps * lr * clip / (1 - 0.9) * 1.0001
    plain = small_net(seed=2)
    plain.compile(keras.optimizers.SGD(lr, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.linalg.norm(flat_weights(plain) - start) > 50 * moved


def test_huge_noise_keeps_accuracy_near_chance(digits):
    x, y = digits
    net = small_net()
    model, accounting = dp(net, DPSGDConfig(noise_multiplier=1000.0))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert accounting.epsilon < 0.01
    assert accuracy(net, x, y) < 0.3  # the same run at noise 0.5 reaches > 0.5


def test_conv2d_fast_clipping_norms_match_per_example_gradients(digits):
    from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads

    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = layers.Conv2D(5, (3, 2), strides=(2, 1), padding="valid", use_bias=False)(h)
    model = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h)))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = digits[0][:8], digits[1][:8]
    for microbatches in (None, 4):
        fast = clip_grads.compute_gradient_norms(
            model, make_layer_registry(), x, y, num_microbatches=microbatches
        ).numpy()
        groups = np.split(np.arange(8), microbatches or 8)
        expected = []
        for rows in groups:
            with tf.GradientTape() as tape:
                value = tf.reduce_mean(loss(y[rows], model(x[rows], training=True)))
            grads = tape.gradient(value, model.trainable_variables)
            expected.append(np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads)))
        np.testing.assert_allclose(fast, expected, rtol=1e-4)


def test_fit_with_a_final_partial_batch_on_the_default_path():
    data = load_dataset("digits")
    x, y = data.x[:1500], data.y[:1500]  # batch 64: 23 full batches and one of 28
    model, accounting = make_dp_model(small_net(), DPSGDConfig(), num_examples=1500, batch_size=64, epochs=1)
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert accounting.path == "fast" and np.isfinite(history.history["loss"][0])


def test_microbatches_pad_an_uneven_final_batch(digits):
    """300 examples, batch 32, 8 microbatches: the final 12 are padded to 16 with zero-weight rows."""
    x, y = digits
    weights = {}
    for path in ("fast", "microbatched"):
        net = small_net(seed=4)
        config = DPSGDConfig(noise_multiplier=0.0, optimizer="sgd", path=path, num_microbatches=8)
        model, accounting = dp(net, config, epochs=1)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights[path] = flat_weights(net)
        assert accounting.used_microbatching
    assert np.linalg.norm(weights["fast"] - flat_weights(small_net(seed=4))) > 0.02
    np.testing.assert_allclose(weights["microbatched"], weights["fast"], atol=2e-5)
