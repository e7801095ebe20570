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
from scipy.special import logsumexp

from tfmi import compat
from tfmi.data import load_dataset
from tfmi.defenses.dp_native import NativeDPModel
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
        pytest.param(
            lambda: small_net(dropout=0.5), DPSGDConfig(path="fast"), {}, "Dropout",
            marks=pytest.mark.skipif(compat.KERAS_3, reason="Keras 3's native fast path takes Dropout: "
                                     "test_fast_path_takes_dropout_only_on_keras_3 checks it"),
        ),
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
    """Keras 2: "auto" is "fast" where tensorflow-privacy's registry (plus tfmi's Conv2D) covers the
    model and it has no random layer, else "dpmodel". Keras 3: the native fast path takes Dense and
    Conv2D, Dropout included; every other path runs as "vectorized"."""
    fallback = "vectorized" if compat.KERAS_3 else "dpmodel"
    assert resolve_path(build_model("mlp", (8, 8, 1), 10)) == "fast"
    assert resolve_path(build_model("cnn", (8, 8, 1), 10)) == "fast"  # Conv2D: tfmi's registry entry
    assert resolve_path(build_model("alexnet", (32, 32, 3), 10)) == "fast"
    assert resolve_path(small_net(dropout=0.5)) == ("fast" if compat.KERAS_3 else "dpmodel")
    inputs = keras.Input((5, 3))
    recurrent = keras.Model(inputs, layers.Dense(2)(layers.SimpleRNN(4)(inputs)))
    assert resolve_path(recurrent) == fallback
    for path in ("dpmodel", "vectorized", "microbatched"):
        assert resolve_path(recurrent, path) == ("vectorized" if compat.KERAS_3 else path)
    with pytest.raises(TfmiError, match=f"SimpleRNN.*{fallback!r}"):
        resolve_path(recurrent, "fast")


def dropout_net(seed: int = 5) -> keras.Model:
    """Dense layers around a seeded Dropout: two nets built alike draw the same first mask."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = layers.Dense(32, activation="tanh")(layers.Flatten()(inputs))
    return keras.Model(inputs, layers.Dense(10)(layers.Dropout(0.5, seed=11)(x)))


def per_example_gradients(model, x, y, groups) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """Brute force: each group of rows' mean-loss gradient, from ONE training-mode forward pass of
    the whole batch (the same Dropout mask for every group)."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    with tf.GradientTape(persistent=True) as tape:
        logits = model(x, training=True)
        losses = loss(y, logits)
        means = [tf.reduce_mean(tf.gather(losses, rows)) for rows in groups]
    grads = [[g.numpy() for g in tape.gradient(m, model.trainable_variables)] for m in means]
    del tape
    return logits.numpy(), grads


def flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])


def gradient_norms(grads: list[list[np.ndarray]]) -> np.ndarray:
    return np.array([np.linalg.norm(flat(group)) for group in grads])


def clipped_sum(grads: list[list[np.ndarray]], clip: float) -> np.ndarray:
    """Sum over the groups of each gradient scaled to an L2 norm of at most ``clip``."""
    norms = gradient_norms(grads)
    return sum(flat(group) * min(1.0, clip / norm) for group, norm in zip(grads, norms, strict=True))


def test_fast_path_takes_dropout_only_on_keras_3(digits):
    """Keras 2 (tensorflow-privacy) takes norms and gradients from two forward passes, whose Dropout
    masks differ: fast is refused. Keras 3's native ghost clipping takes both from one pass: its norms
    and clipped sum are those of the per-example gradients under that pass's mask."""
    settings = {"num_examples": 300, "batch_size": 32, "epochs": 1}
    if not compat.KERAS_3:
        with pytest.raises(TfmiError, match=r"Dropout .*random at training time"):
            make_dp_model(dropout_net(), DPSGDConfig(path="fast"), **settings)
        return
    x, y = digits[0][:8], digits[1][:8]
    model, accounting = make_dp_model(dropout_net(), DPSGDConfig(path="fast", noise_multiplier=0.0),
                                      **settings)
    assert accounting.path == "fast" and isinstance(model, NativeDPModel) and model.method == "fast"
    ours = model.clipped_gradients(x, y)  # the first training-mode call: the Dropout's first mask
    twin = dropout_net()
    logits, grads = per_example_gradients(twin, x, y, [[i] for i in range(8)])
    np.testing.assert_array_equal(ours.logits.numpy(), logits)  # the same mask...
    assert np.abs(twin(x, training=False).numpy() - logits).max() > 0.1  # ...and a real one
    expected = gradient_norms(grads)
    np.testing.assert_allclose(ours.norms.numpy(), expected, rtol=1e-4)
    assert min(expected) > model.l2_norm_clip  # every example clipped: the directions count
    np.testing.assert_allclose(flat(ours.sums), clipped_sum(grads, model.l2_norm_clip), rtol=1e-4, atol=1e-6)


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


# dp_accounting's RdpAccountant orders, which tensorflow-privacy's statement uses
RDP_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]


def exact_epsilon(n, batch, epochs, noise, delta, used_microbatching=False):
    """DP-SGD's RDP epsilon computed independently of dp_accounting: the Poisson-subsampled Gaussian's
    Renyi divergence of order a (Mironov et al. 2019) is log(E_{z~N(0,s^2)}[(1 - q + q exp((2z - 1) /
    (2 s^2)))^a]) / (a - 1), the expectation a trapezoid sum on a fine grid (in log space); composed
    over fit's epochs * ceil(n / batch) steps, converted to (epsilon, delta) as Canonne, Kamath and
    Steinke (2020, Prop. 12) do, minimized over the orders."""
    q, steps = batch / n, epochs * math.ceil(n / batch)
    sigma = noise / 2 if used_microbatching else noise
    best = math.inf
    for order in RDP_ORDERS:
        lo, hi = -12 * sigma - 1, order + 12 * sigma + 1  # where the integrand is not negligible
        z = np.linspace(lo, hi, int((hi - lo) * 40 / sigma) + 1)
        log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
        log_density = -(z**2) / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi))
        log_moment = logsumexp(log_density + order * log_ratio) + math.log(z[1] - z[0])
        rdp = steps * log_moment / (order - 1)
        best = min(best, rdp + math.log1p(-1 / order) - math.log(delta * order) / (order - 1))
    return best


# dp-accounting 0.4.3 (the reference stack) sums the series of a fractional order's RDP with the signs
# of its binomial coefficients: exact. 0.6.0 (the current stack) adds every term's absolute value, an
# upper bound: where the best order is small and fractional (low noise), its epsilon is a little larger
# (8.4086 for 8.4044 at noise 1 below), never smaller.
def assert_exact_epsilon(epsilon, *args, **kwargs):
    exact = exact_epsilon(*args, **kwargs)
    assert epsilon >= exact - 1e-9  # never an optimistic guarantee
    assert epsilon == pytest.approx(exact, rel=1e-6 if not compat.KERAS_3 else 2.5e-3)


def test_epsilon_decreases_with_noise_and_matches_tf_privacy():
    noises = [0.7, 1.0, 2.0, 4.0]
    epsilons = [dp_epsilon(1500, 64, 30, noise, 1e-5) for noise in noises]
    assert all(a > b for a, b in zip(epsilons, epsilons[1:], strict=False))
    for noise, epsilon in zip(noises, epsilons, strict=True):
        assert_exact_epsilon(epsilon, 1500, 64, 30, noise, 1e-5)
    # At noise 2 and 4 the best orders (7.5, 15) are exact on both stacks: fit's step count, tightly.
    assert epsilons[2:] == pytest.approx([exact_epsilon(1500, 64, 30, s, 1e-5) for s in (2, 4)], rel=1e-6)
    # Microbatches of several examples double the sensitivity: the epsilon of half the noise.
    micro = dp_epsilon(1500, 64, 30, 2.0, 1e-5, used_microbatching=True)
    assert micro == pytest.approx(epsilons[1], rel=1e-9)
    assert_exact_epsilon(micro, 1500, 64, 30, 2.0, 1e-5, used_microbatching=True)
    if not compat.KERAS_3:  # tensorflow-privacy runs on Keras 2 only
        for noise, epsilon in zip(noises[1:3], epsilons[1:3], strict=True):
            assert epsilon == pytest.approx(tf_privacy_epsilon(1500, 64, 30, noise, 1e-5, False), abs=6e-4)
        assert micro == pytest.approx(tf_privacy_epsilon(1500, 64, 30, 2.0, 1e-5, True), abs=6e-4)
    assert dp_epsilon(1500, 64, 30, 0.0, 1e-5) == math.inf
    assert dp_epsilon(1500, 64, 5, 1.0, 1e-5, accountant="PLD") < dp_epsilon(1500, 64, 5, 1.0, 1e-5)


def test_noise_for_epsilon_round_trips_and_agrees_with_tf_privacy():
    for target in (1.0, 8.0):
        noise = noise_for_epsilon(1500, 64, 30, target, 1e-5)
        reached = dp_epsilon(1500, 64, 30, noise, 1e-5)
        assert target * 0.995 <= reached <= target
        # the smallest such noise, by the independent computation: 0.5% less overshoots the target
        assert exact_epsilon(1500, 64, 30, noise, 1e-5) <= target
        assert exact_epsilon(1500, 64, 30, noise * 0.995, 1e-5) > target
        if not compat.KERAS_3:  # tensorflow-privacy runs on Keras 2 only
            from tensorflow_privacy.privacy.analysis import compute_noise_from_budget_lib

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
    # Keras 3: every path but fast runs (and is recorded) as the native "vectorized"
    taken = "vectorized" if compat.KERAS_3 and path != "fast" else path
    assert accounting.path == taken and 0 < accounting.epsilon < math.inf
    assert isinstance(model, NativeDPModel) == compat.KERAS_3
    if compat.KERAS_3:
        assert model.method == taken
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
    """The fast path's Conv2D norms against brute-force per-example (per-microbatch) gradients: tfmi's
    registry entry in tensorflow-privacy's ghost clipping (Keras 2 only), and tfmi's native ghost
    clipping, norms and clipped sum (both stacks; the fast path of make_dp_model on Keras 3)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    h = layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = layers.Conv2D(5, (3, 2), strides=(2, 1), padding="valid", use_bias=False)(h)
    model = keras.Model(inputs, layers.Dense(10)(layers.Flatten()(h)))
    x, y = digits[0][:8], digits[1][:8]
    for microbatches in (None, 4):
        groups = np.split(np.arange(8), microbatches or 8)
        _, grads = per_example_gradients(model, x, y, groups)
        expected = gradient_norms(grads)
        assert np.ptp(expected) > 0.05 * np.max(expected)  # spread out: the median clip below clips
        clip = float(np.median(expected))  # half the microbatches, not the others
        native = NativeDPModel(model, l2_norm_clip=clip, noise_multiplier=0.0,
                               num_microbatches=microbatches, method="fast", seed=0)
        ours = native.clipped_gradients(x, y)
        np.testing.assert_allclose(ours.norms.numpy(), expected, rtol=1e-4)
        np.testing.assert_allclose(flat(ours.sums), clipped_sum(grads, clip), rtol=1e-4, atol=1e-6)
        if compat.KERAS_3:
            continue
        from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads

        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        fast = clip_grads.compute_gradient_norms(
            model, make_layer_registry(), x, y, num_microbatches=microbatches
        ).numpy()
        np.testing.assert_allclose(fast, expected, rtol=1e-4)
    if compat.KERAS_3:  # no tensorflow-privacy registry there: the native path needs none
        with pytest.raises(TfmiError, match="needs Keras 2"):
            make_layer_registry()


def test_fit_with_a_final_partial_batch_on_the_default_path():
    data = load_dataset("digits")
    x, y = data.x[:1500], data.y[:1500]  # batch 64: 23 full batches and one of 28
    model, accounting = make_dp_model(small_net(), DPSGDConfig(), num_examples=1500, batch_size=64, epochs=1)
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert accounting.path == "fast" and np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("path", ["fast", "dpmodel", "vectorized", "microbatched"])
def test_a_partial_batch_gets_the_noise_of_a_full_batch(digits, path):
    """2 examples of a nominal batch of 32: the noise is divided by 32, not by 2 (16x the noise, once
    an epoch, collapsed DP-SGD shadows of 1,502 records on Location30)."""
    x, y = digits
    net = small_net(seed=5)
    start = flat_weights(net)
    config = DPSGDConfig(noise_multiplier=1.0, l2_norm_clip=1.0, optimizer="sgd", path=path)
    model, _ = dp(net, config, epochs=1, learning_rate=1.0)
    model.fit(x[:2], y[:2], batch_size=32, epochs=1, shuffle=False, verbose=0)
    change = flat_weights(net) - start  # one SGD step: the noise, plus clipped gradients of norm <= 2/32
    assert np.std(change) == pytest.approx(1.0 / 32, rel=0.1)


@pytest.mark.parametrize("path", ["fast", "dpmodel", "vectorized"])
def test_a_partial_batch_adds_its_clipped_gradients_over_the_nominal_batch(digits, path):
    """No noise, a clip no gradient reaches: DP-SGD is plain SGD whose final partial batch of 12 (300
    examples, batch 32) counts as 32 examples, the padding adding nothing."""
    x, y = digits
    reference = small_net(seed=6)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    for start in range(0, 300, 32):
        with tf.GradientTape() as tape:
            batch_loss = loss(y[start:start + 32], reference(x[start:start + 32], training=True)) / 32
        grads = tape.gradient(batch_loss, reference.trainable_variables)
        optimizer.apply_gradients(zip(grads, reference.trainable_variables, strict=True))
    net = small_net(seed=6)
    config = DPSGDConfig(noise_multiplier=0.0, l2_norm_clip=1e6, optimizer="sgd", path=path)
    model, _ = dp(net, config, epochs=1, learning_rate=0.1)
    model.fit(x[:300], y[:300], batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert np.linalg.norm(flat_weights(reference) - flat_weights(small_net(seed=6))) > 0.05
    np.testing.assert_allclose(flat_weights(net), flat_weights(reference), atol=2e-5)


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
