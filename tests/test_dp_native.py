"""Native DP-SGD (`tfmi.defenses.dp_native`), against tensorflow-privacy on the reference stack and
against its own definition (noise, clipping, plain SGD) on both stacks."""

from __future__ import annotations

import contextlib
import io
import math
import re
import sys

import keras
import numpy as np
import pytest

from tfmi import compat
from tfmi.data import load_dataset
from tfmi.defenses.dp_native import NativeDPModel
from tfmi.defenses.dp_sgd import DPSGDConfig, default_delta, dp_epsilon, make_dp_model, resolve_path
from tfmi.errors import TfmiError
from tfmi.inference import accuracy
from tfmi.models import build_model

layers = keras.layers


@pytest.fixture(scope="module")
def tf_privacy():
    """tensorflow-privacy's modules used here; skips where it does not import (the current stack)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib
            from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads, layer_registry
            from tensorflow_privacy.privacy.keras_models import dp_keras_model
    except Exception as err:  # ImportError, or a Keras 3 incompatibility raised while importing
        pytest.skip(f"tensorflow_privacy cannot be imported on this stack ({type(err).__name__}): "
                    "the comparison runs on the reference stack")
    return dp_keras_model, clip_grads, layer_registry, compute_dp_sgd_privacy_lib


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return data.x.astype(np.float32), data.y.astype(np.int64)


def dense_net(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = layers.Dense(32, activation="tanh")(layers.Flatten()(inputs))
    return keras.Model(inputs, layers.Dense(10)(x))


def conv_net(seed: int = 0) -> keras.Model:
    """Conv2D with bias and relu, strided valid Conv2D without bias and with elu (the generic
    activation case of the ghost norms), then Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    h = layers.Conv2D(3, (3, 2), strides=(2, 1), padding="valid", use_bias=False, activation="elu")(h)
    return keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h)))


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a)) for a in arrays])


def native(net, **kwargs) -> NativeDPModel:
    return NativeDPModel(net, **{"seed": 0, "noise_multiplier": 0.0, **kwargs})


# -- against tensorflow-privacy (reference stack) --------------------------------------------------


@pytest.mark.parametrize("make_net", [dense_net, conv_net])
@pytest.mark.parametrize("microbatches", [None, 4])
def test_clipped_gradient_sum_equals_tensorflow_privacy(tf_privacy, digits, make_net, microbatches):
    """tensorflow-privacy's DPModel (no noise, SGD at learning rate 1) moves the weights by minus
    the clipped sum over the microbatches count: both native methods compute that sum."""
    dp_keras_model, clip_grads, layer_registry, _ = tf_privacy
    x, y = digits[0][:16], digits[1][:16]
    net = make_net()
    unclipped = native(net, l2_norm_clip=1e6, num_microbatches=microbatches).clipped_gradients(x, y)
    clip = float(np.median(unclipped.norms))  # half the microbatches clipped, half not
    start = flat(net.get_weights())
    ours = {method: native(net, l2_norm_clip=clip, num_microbatches=microbatches, method=method)
            .clipped_gradients(x, y) for method in ("fast", "vectorized")}

    theirs = dp_keras_model.DPModel(l2_norm_clip=clip, noise_multiplier=0.0, num_microbatches=microbatches,
                                    use_xla=False, inputs=net.inputs, outputs=net.outputs)
    theirs.compile(optimizer=keras.optimizers.SGD(1.0),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if make_net is dense_net:  # tensorflow-privacy's own ghost norms (its registry has Dense)
        their_norms = clip_grads.compute_gradient_norms(
            theirs, layer_registry.make_default_layer_registry(), x, y, num_microbatches=microbatches)
        for result in ours.values():
            np.testing.assert_allclose(result.norms, their_norms, rtol=1e-4)
    theirs.train_on_batch(x, y)
    count = microbatches or len(y)
    their_sum = (start - flat(net.get_weights())) * count

    assert 0 < np.mean(unclipped.norms.numpy() > clip) < 1
    assert np.linalg.norm(flat(unclipped.sums) - their_sum) > 0.05 * np.linalg.norm(their_sum)
    for result in ours.values():
        assert int(result.microbatches) == count
        np.testing.assert_allclose(flat(result.sums), their_sum, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize(
    "n, batch, epochs, noise, delta, microbatching",
    [(1500, 64, 30, 1.1, 1e-5, False), (60000, 256, 15, 0.8, 1e-5, True), (1024, 64, 3, 2.0, 1e-4, False)],
)
def test_epsilon_equals_tensorflow_privacy_statement(tf_privacy, n, batch, epochs, noise, delta,
                                                     microbatching):
    """Same epsilon for the same optimizer steps; tensorflow-privacy's own step count (ceil(epochs *
    n / batch), fewer than fit's epochs * ceil(n / batch) unless batch divides n) gives at most ours."""
    statement_lib = tf_privacy[3]

    def theirs(num_epochs: float) -> float:
        statement = statement_lib.compute_dp_sgd_privacy_statement(
            n, batch, num_epochs, noise, delta, used_microbatching=microbatching)
        return float(re.search(r"Poisson sampling \(\*\):\s+([0-9.]+)", statement).group(1))

    ours = dp_epsilon(n, batch, epochs, noise, delta, used_microbatching=microbatching)
    same_steps = epochs * math.ceil(n / batch) * batch / n - 1e-9  # their ceil() then counts fit's steps
    assert ours == pytest.approx(theirs(same_steps), abs=6e-4)
    assert theirs(epochs) <= ours + 6e-4
    if n % batch == 0:
        assert ours == pytest.approx(theirs(epochs), abs=6e-4)
    else:
        assert theirs(epochs) < ours - 1e-3


# -- both stacks -------------------------------------------------------------------------------------


def wide_net(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((64,))
    return keras.Model(inputs, layers.Dense(10)(layers.Dense(64, activation="relu")(inputs)))


def noise_of_one_step(seed: int, steps: int = 1, **kwargs) -> list[np.ndarray]:
    """The weight changes of ``steps`` single-batch SGD steps (learning rate 1) whose clipped
    gradients are all zero (every example weighs 0): minus the noise over the microbatch count."""
    net = wide_net()
    model = NativeDPModel(net, l2_norm_clip=0.5, noise_multiplier=2.0, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(1.0), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 64)).astype(np.float32), rng.integers(0, 10, 32)
    changes, before = [], flat(net.get_weights())
    for _ in range(steps):
        model.fit(x, y, sample_weight=np.zeros(32, np.float32), batch_size=32, epochs=1, verbose=0)
        after = flat(net.get_weights())
        changes.append(after - before)
        before = after
    return changes


@pytest.mark.parametrize("method, microbatches", [("fast", None), ("vectorized", 4)])
def test_noise_std_is_noise_multiplier_times_clip_over_microbatches(method, microbatches):
    first, second = noise_of_one_step(seed=7, steps=2, method=method, num_microbatches=microbatches)
    expected = 2.0 * 0.5 / (microbatches or 32)  # 4810 weights: the std estimate is within ~1%
    for change in (first, second):
        assert np.std(change) == pytest.approx(expected, rel=0.05)
        assert abs(np.mean(change)) < 4 * expected / math.sqrt(change.size)
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.1  # a fresh draw every step
    again = noise_of_one_step(seed=7, method=method, num_microbatches=microbatches)[0]
    np.testing.assert_array_equal(again, first)  # the seed and the step fix the noise
    other = noise_of_one_step(seed=8, method=method, num_microbatches=microbatches)[0]
    assert abs(np.corrcoef(other, first)[0, 1]) < 0.1


@pytest.mark.parametrize("method, microbatches, rows", [("fast", None, 300), ("vectorized", None, 300),
                                                        ("fast", 8, 288)])
def test_no_noise_and_a_huge_clip_is_plain_sgd(digits, method, microbatches, rows):
    """Batch 32 on 300 rows ends each epoch with a partial batch of 12 (microbatches: 288 rows)."""
    x, y = digits[0][:rows], digits[1][:rows]
    plain = dense_net(seed=1)
    start = flat(plain.get_weights())
    plain.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    expected = plain.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history

    net = dense_net(seed=1)
    model = native(net, l2_norm_clip=1e6, method=method, num_microbatches=microbatches)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    logs = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history

    assert np.linalg.norm(flat(plain.get_weights()) - start) > 0.1
    np.testing.assert_allclose(flat(net.get_weights()), flat(plain.get_weights()), atol=2e-5)
    assert sorted(logs) == ["accuracy", "loss"]
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(logs[name], expected[name], rtol=1e-4)


def test_make_dp_model_trains_on_digits_and_records_epsilon(digits):
    x, y = digits
    train, test = slice(0, 1200), slice(1200, None)
    net = build_model("mlp", x.shape[1:], 10, seed=0)
    model, accounting = make_dp_model(net, DPSGDConfig(noise_multiplier=1.0), num_examples=1200,
                                      batch_size=64, epochs=4, learning_rate=5e-3, seed=0)
    assert isinstance(model, NativeDPModel) == compat.KERAS_3
    assert accounting.path == "fast" and accounting.delta == default_delta(1200)
    assert accounting.epsilon == pytest.approx(dp_epsilon(1200, 64, 4, 1.0, 1e-5))
    assert 0 < accounting.epsilon < 10

    logs = model.fit(x[train], y[train], batch_size=64, epochs=4, verbose=0).history
    assert {"loss", "accuracy"} <= set(logs)
    assert all(np.isfinite(logs["loss"])) and 0 < min(logs["loss"]) < max(logs["loss"]) < 5
    assert logs["loss"][-1] < logs["loss"][0]
    assert all(0 <= a <= 1 for a in logs["accuracy"]) and logs["accuracy"][-1] > 0.5  # chance: 0.1
    assert accuracy(net, x[test], y[test]) > 0.5  # `net` holds the trained weights
    scores = model.evaluate(x[test], y[test], verbose=0, return_dict=True)
    predicted = np.argmax(model.predict(x[test], verbose=0), axis=1)
    assert scores["accuracy"] == pytest.approx(np.mean(predicted == y[test]), abs=1e-6)
    assert 0 < scores["loss"] < 5


def test_paths_and_refusals_on_this_stack():
    recurrent_in = keras.Input((5, 3))
    recurrent = keras.Model(recurrent_in, layers.Dense(2)(layers.SimpleRNN(4)(recurrent_in)))
    fallback = "vectorized" if compat.KERAS_3 else "dpmodel"
    assert resolve_path(build_model("cnn", (8, 8, 1), 10)) == "fast"
    assert resolve_path(recurrent) == fallback
    with pytest.raises(TfmiError, match=f"SimpleRNN.*'{fallback}'"):
        resolve_path(recurrent, "fast")
    for path in ("dpmodel", "vectorized", "microbatched"):
        assert resolve_path(recurrent, path) == ("vectorized" if compat.KERAS_3 else path)
    with pytest.raises(TfmiError, match="SimpleRNN"):
        NativeDPModel(recurrent, method="fast")
    assert NativeDPModel(recurrent, seed=0).method == "vectorized"
    with pytest.raises(TfmiError, match="unknown DP-SGD method 'dpmodel'"):
        NativeDPModel(dense_net(), method="dpmodel")

    inputs = keras.Input((8, 8, 1))
    normed = layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs))
    batch_norm_net = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(normed)))
    for build in (lambda: NativeDPModel(batch_norm_net),
                  lambda: make_dp_model(batch_norm_net, num_examples=100, batch_size=10, epochs=1)):
        with pytest.raises(TfmiError, match="BatchNormalization"):
            build()
    if compat.KERAS_3:
        model, accounting = make_dp_model(dense_net(), DPSGDConfig(path="microbatched"),
                                          num_examples=100, batch_size=10, epochs=1)
        assert accounting.path == "vectorized" and model.method == "vectorized"
        assert "tensorflow_privacy" not in sys.modules


@pytest.mark.filterwarnings("ignore:`compile\\(\\)` was not called")  # Keras 3: compile is custom
def test_native_model_saves_and_loads(tmp_path, digits):
    x, y = digits[0][:64], digits[1][:64]
    model = NativeDPModel(conv_net(), l2_norm_clip=0.7, noise_multiplier=1.3, num_microbatches=4, seed=5,
                          batch_size=16)
    model.compile(optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "dp.keras")
    loaded = keras.models.load_model(tmp_path / "dp.keras")
    assert isinstance(loaded, NativeDPModel) and loaded.method == "fast"
    options = (loaded.l2_norm_clip, loaded.noise_multiplier, loaded.num_microbatches, loaded.seed,
               loaded.batch_size)
    assert options == (0.7, 1.3, 4, 5, 16)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
