"""The MMD estimator, class-matched sampling, mixup, and the MMDMixupModel wrapper."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi.data import load_dataset, membership_split
from tfmi.defenses.mixup import mixup_batch, sample_mixup
from tfmi.defenses.mmd import ClassMatchedSampler, mmd2
from tfmi.defenses.mmd_mixup import MMDMixupModel, mmd_pass_batches
from tfmi.errors import TfmiError
from tfmi.models import build_model


def numpy_mmd2(x, y, bandwidths, unbiased=False):
    """Direct double loop over pairs: the definition, with no algebraic shortcuts."""
    def k(a, b):
        return sum(np.exp(-np.sum((a - b) ** 2) / (2 * s * s)) for s in bandwidths)

    def mean_pairs(u, v, skip_diagonal):
        total, count = 0.0, 0
        for i, a in enumerate(u):
            for j, b in enumerate(v):
                if skip_diagonal and i == j:
                    continue
                total += k(a, b)
                count += 1
        return total / count

    return (mean_pairs(x, x, unbiased) + mean_pairs(y, y, unbiased) - 2 * mean_pairs(x, y, False))


@pytest.mark.parametrize("bandwidths", [(1.0,), (0.2, 1.0, 5.0)])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd2_matches_the_definition(bandwidths, estimator):
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(5), size=9).astype(np.float32)
    y = rng.dirichlet(np.ones(5) * 0.3, size=7).astype(np.float32)
    got = float(mmd2(x, y, bandwidths, estimator))
    want = numpy_mmd2(x.astype(np.float64), y.astype(np.float64), bandwidths, estimator == "unbiased")
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_mmd2_is_zero_on_identical_sets_and_grows_with_separation():
    x = np.random.default_rng(1).dirichlet(np.ones(4), size=16).astype(np.float32)
    assert float(mmd2(x, x)) == pytest.approx(0.0, abs=1e-6)
    shifted = [float(mmd2(x, np.roll(x, 1, axis=1) * t + x * (1 - t))) for t in (0.1, 0.5, 1.0)]
    assert shifted[0] < shifted[1] < shifted[2]


def test_mmd2_is_stable_for_identical_near_one_hot_rows():
    x = np.tile(np.eye(10, dtype=np.float32)[:1], (64, 1))
    value = mmd2(x, x + 1e-7)
    assert np.isfinite(float(value)) and float(value) >= 0.0


def test_class_matched_sampler_reproduces_the_batch_histogram():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 7, size=500)
    sampler = ClassMatchedSampler(reference, num_classes=7)
    batch = tf.constant(rng.integers(0, 7, size=64))
    idx = sampler.sample(batch, seed=tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(reference[idx], batch.numpy())  # position by position
    again = sampler.sample(batch, seed=tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(idx, again)  # stateless: same seed, same draw


def test_class_matched_sampler_is_uniform_within_a_class():
    reference = np.array([0] * 4 + [1] * 1000)
    sampler = ClassMatchedSampler(reference, num_classes=2)
    idx = sampler.sample(tf.zeros(20000, tf.int32), seed=tf.constant([0, 0])).numpy()
    counts = np.bincount(idx, minlength=4)[:4]
    assert counts.sum() == 20000
    assert np.all(np.abs(counts - 5000) < 300)  # 4 records drawn ~equally, with replacement


def test_mixup_draws_convex_combinations():
    x = tf.constant(np.eye(6, dtype=np.float32))
    y = tf.range(6)
    mixed_x, mixed_y, draw = mixup_batch(x, y, 6, alpha=1.0, seed=tf.constant([5, 6]))
    lam, perm = float(draw.lam), draw.perm.numpy()
    np.testing.assert_allclose(mixed_x.numpy(), lam * np.eye(6) + (1 - lam) * np.eye(6)[perm], atol=1e-6)
    np.testing.assert_allclose(mixed_y.numpy(), mixed_x.numpy(), atol=1e-6)
    lams = [float(sample_mixup(4, 1.0, tf.constant([0, s])).lam) for s in range(400)]
    assert 0.45 < np.mean(lams) < 0.55 and 0.06 < np.var(lams) < 0.1  # Beta(1,1) = U(0,1): var 1/12


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    split = membership_split(data.y, 300, seed=0)
    return data, split


def _wrapper(data, split, **kwargs):
    inner = build_model("mlp", data.input_shape, 10, seed=0)
    reference = (data.x[split.reference], data.y[split.reference])
    model = MMDMixupModel(inner, reference, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


def test_gradients_flow_through_training_outputs_only(digits):
    data, split = digits
    model = _wrapper(data, split, mmd_weight=1.0)
    train = tf.constant(data.x[split.members[:32]])
    reference = tf.constant(data.x[split.reference[:32]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(train)
        tape.watch(reference)
        reference_probabilities = model._reference_probabilities(reference)
        mmd = mmd2(model.probabilities(model.inner(train, training=True)), reference_probabilities)
    assert float(mmd) > 0
    assert tape.gradient(mmd, reference) is None
    grad_train = tape.gradient(mmd, train)
    assert grad_train is not None and float(tf.reduce_max(tf.abs(grad_train))) > 0
    weight_grads = tape.gradient(mmd, model.inner.trainable_variables)
    assert all(g is not None for g in weight_grads)


def test_mmd_step_reduces_the_discrepancy():
    # random labels: the network memorizes its members, and its reference outputs stay at chance
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 20), np.float32), np.arange(200) % 4
    ref_x, ref_y = rng.random((200, 20), np.float32), np.arange(200) % 4
    model = MMDMixupModel(build_model("mlp", (20,), 4, seed=0), (ref_x, ref_y), mmd_weight=10.0,
                          mixup_alpha=None, gap_threshold=0.99)  # the gate never opens during fit
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    assert model.accuracy_on(x, y) > 0.9

    def discrepancy():
        reference = tf.gather(model.reference_probabilities(),
                              model.sampler.sample(tf.constant(y), tf.constant([0, 0])))
        return float(mmd2(model.probabilities(model.inner(x, training=False)), reference))

    before = discrepancy()
    reference_probabilities = model.reference_probabilities()
    for start in [*range(0, 200, 40)] * 2:  # two passes
        model.mmd_step(tf.constant(x[start:start + 40]), tf.constant(y[start:start + 40]),
                       reference_probabilities)
    assert discrepancy() < 0.5 * before
    assert model.accuracy_on(x, y) < 0.9  # matching chance-level reference outputs costs memorization


def test_joint_gate_stays_shut_below_the_gap_and_opens_above(digits):
    data, split = digits
    x, y = data.x[split.members], data.y[split.members]
    shut = _wrapper(data, split, schedule="joint", mmd_weight=1.0, gap_threshold=0.99)
    shut = shut.fit(x, y, epochs=3, verbose=0)
    assert shut.history["mmd_active"] == [0.0, 0.0, 0.0]
    assert shut.history["mmd"][2] > 0.0  # measured, but not part of the loss while shut
    np.testing.assert_allclose(shut.history["loss"], shut.history["ce_loss"], rtol=1e-6)
    opened = _wrapper(data, split, schedule="joint", mmd_weight=1.0, gap_threshold=0.0)
    opened = opened.fit(x, y, epochs=3, verbose=0)
    assert opened.history["mmd_active"] == [0.0, 1.0, 1.0]  # shut during the first epoch (warm-up)
    assert opened.history["loss"][1] > opened.history["ce_loss"][1]
    assert all(np.isfinite(opened.history["ce_loss"]))


@pytest.mark.parametrize("mmd_inputs", ["mixed", "clean"])
def test_joint_schedule_with_mixup_on_mixed_or_clean_outputs(digits, mmd_inputs):
    data, split = digits
    model = _wrapper(data, split, schedule="joint", mmd_inputs=mmd_inputs, mmd_weight=1.0, gap_threshold=0.0)
    history = model.fit(data.x[split.members], data.y[split.members], epochs=3, verbose=0).history
    assert history["mmd_active"][0] == 0.0 and history["mmd_active"][2] == 1.0
    assert history["mmd"][2] > 0.0 and history["loss"][2] > history["ce_loss"][2]
    # the gap comes from the running accuracies of the batches MMD compares
    assert history["mmd_train_accuracy"][2] > 0.5 and history["mmd_reference_accuracy"][2] > 0.5
    gaps = np.subtract(history["mmd_train_accuracy"], history["mmd_reference_accuracy"])
    np.testing.assert_allclose(history["mmd_gap"], gaps, atol=1e-6)


def test_gap_from_running_accuracies_matches_a_measured_gap(digits):
    data, split = digits
    x, y = data.x[split.members], data.y[split.members]
    model = _wrapper(data, split, schedule="joint", mixup_alpha=None, mmd_weight=1.0, gap_threshold=0.0)
    history = model.fit(x, y, epochs=6, batch_size=32, verbose=0).history
    measured = model.accuracy_on(x, y) - model.accuracy_on(data.x[split.reference], data.y[split.reference])
    assert abs(history["mmd_gap"][-1] - measured) < 0.1


def test_paper_schedule_gates_on_the_inference_mode_gap(digits):
    # the authors measure the gap in eval mode after the CE pass; a running accuracy would lag an MMD pass
    data, split = digits
    x, y = data.x[split.members], data.y[split.members]
    model = _wrapper(data, split, schedule="paper", mixup_alpha=None, mmd_weight=5.0, gap_threshold=0.99)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0).history  # the gate stays shut
    measured = model.accuracy_on(x, y) - model.accuracy_on(data.x[split.reference], data.y[split.reference])
    assert history["mmd_gap"][-1] == pytest.approx(measured, abs=1e-6)
    assert "mmd_train_accuracy" not in history


def test_paper_schedule_runs_the_mmd_pass_except_in_the_last_epoch(digits):
    data, split = digits
    x, y = data.x[split.members], data.y[split.members]
    history = _wrapper(data, split, schedule="paper", mmd_weight=5.0, gap_threshold=0.0).fit(
        x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["mmd_active"] == [1.0, 1.0, 0.0]
    never = _wrapper(data, split, schedule="paper", mmd_weight=5.0, gap_threshold=0.99)
    assert never.fit(x, y, epochs=2, verbose=0).history["mmd_active"] == [0.0, 0.0]


def test_paper_schedule_pass_changes_the_model(digits):
    data, split = digits
    x, y = data.x[split.members], data.y[split.members]
    runs = {}
    for threshold in (0.0, 0.99):  # same seed: only the MMD pass differs
        model = _wrapper(data, split, schedule="paper", mmd_weight=50.0, gap_threshold=threshold)
        keras.utils.set_random_seed(0)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
        runs[threshold] = model.inner.get_weights()[0]
    assert not np.allclose(runs[0.0], runs[0.99])


def test_fit_evaluate_predict_callbacks_and_class_weight(digits):
    data, split = digits
    model = _wrapper(data, split, schedule="joint", mmd_weight=1.0, mixup_alpha=1.0)
    x, y = data.x[split.members], data.y[split.members]
    seen = []
    history = model.fit(
        x, y, epochs=2, batch_size=32, verbose=0,
        validation_data=(data.x[split.non_members], data.y[split.non_members]),
        class_weight={c: 1.0 + c / 10 for c in range(10)},
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))],
    )
    assert seen == [0, 1]
    expected = {"loss", "ce_loss", "mmd", "accuracy", "val_loss", "val_accuracy", "mmd_gap"}
    assert expected <= set(history.history)
    x_test, y_test = data.x[split.non_members], data.y[split.non_members]
    results = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    predictions = model.predict(data.x[:5], verbose=0)
    np.testing.assert_allclose(predictions, model.inner(data.x[:5]).numpy(), atol=1e-5)


def test_probability_outputs_are_accepted(digits):
    data, split = digits
    inner = keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(10, activation="softmax")])
    model = MMDMixupModel(inner, (data.x[split.reference], data.y[split.reference]), mmd_weight=1.0)
    assert model.output_kind == "probabilities"
    model.compile(optimizer="adam", metrics=["accuracy"])
    history = model.fit(data.x[split.members], data.y[split.members], epochs=2, verbose=0)
    assert history.history["ce_loss"][1] < history.history["ce_loss"][0]


def test_config_round_trip_and_keras_file(digits, tmp_path):
    data, split = digits
    model = _wrapper(data, split, mmd_weight=2.5, mixup_alpha=0.4, bandwidths=(0.5, 1.0), schedule="paper")
    config = model.get_config()
    clone = MMDMixupModel.from_config(config)
    clone.set_weights(model.get_weights())
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone.reference_y.numpy(), model.reference_y.numpy())
    np.testing.assert_allclose(clone.predict(data.x[:8], verbose=0), model.predict(data.x[:8], verbose=0))
    model.save(tmp_path / "wrapped.keras")
    loaded = keras.models.load_model(tmp_path / "wrapped.keras")
    assert isinstance(loaded, MMDMixupModel) and loaded.mmd_weight == 2.5
    np.testing.assert_allclose(loaded.predict(data.x[:8], verbose=0), model.predict(data.x[:8], verbose=0))
    np.testing.assert_array_equal(loaded.reference_x.numpy(), model.reference_x.numpy())


def test_export_writes_the_plain_inner_network(digits, tmp_path):
    data, split = digits
    model = _wrapper(data, split, mmd_weight=1.0)
    model.fit(data.x[split.members], data.y[split.members], epochs=1, verbose=0)
    model.export(str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    variables = {v.name for v in served.variables}
    assert not any("reference" in name or "gate" in name for name in variables)
    logits = served.signatures["serving_default"](tf.constant(data.x[:16]))["output_0"].numpy()
    np.testing.assert_allclose(logits, model.inner(data.x[:16]).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mmd_weight": -1.0}, "mmd_weight must be a number >= 0"),
        ({"mixup_alpha": 0.0}, "mixup_alpha must be a positive number"),
        ({"schedule": "cosine"}, "unknown MMD schedule 'cosine'"),
        ({"bandwidths": (1.0, -2.0)}, "MMD bandwidth must be a positive number"),
        ({"estimator": "linear"}, "unknown MMD estimator"),
        ({"mmd_inputs": "noisy"}, "mmd_inputs must be 'clean' or 'mixed'"),
        ({"gap_threshold": 1.5}, r"gap_threshold must be in \[0, 1\)"),
        ({"reference": "wrong_shape"}, r"shape \(32,\) per example but the model takes \(8, 8, 1\)"),
        ({"reference": "too_many_classes"}, "reference labels go up to 11 but the model has 10 classes"),
        ({"reference": "missing_classes"}, "classes 3, 7 have no reference records"),
        ({"reference": "nan"}, "NaN"),
        ({"model": "sigmoid"}, "applies 'sigmoid'.* not a class distribution"),
        ({"model": "one_unit"}, r"outputs 1 value\(s\) per example"),
        ({"model": "rank3"}, r"outputs shape \(None, 10, 2\): a classifier must output \(batch, classes\)"),
        ({"outputs": "probabilities"}, "do not sum to 1"),
    ],
)
def test_bad_configurations_fail_at_construction(digits, change, message):
    data, split = digits
    ref_x, ref_y = data.x[split.reference].copy(), data.y[split.reference].copy()
    inner = build_model("mlp", data.input_shape, 10, seed=0)
    change = dict(change)
    kind = change.pop("reference", None)
    if kind == "wrong_shape":
        ref_x = ref_x.reshape(len(ref_x), -1)[:, :32]
    elif kind == "too_many_classes":
        ref_y[0] = 11
    elif kind == "missing_classes":
        keep = (ref_y != 3) & (ref_y != 7)
        ref_x, ref_y = ref_x[keep], ref_y[keep]
    elif kind == "nan":
        ref_x[2, 0, 0, 0] = np.nan
    model_kind = change.pop("model", None)
    if model_kind == "sigmoid":
        inner = keras.Sequential([keras.Input(data.input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(10, activation="sigmoid")])
    elif model_kind == "one_unit":
        inner = build_model("mlp", data.input_shape, 10)
        inner = keras.Model(inner.inputs, keras.layers.Dense(1)(inner.outputs[0]))
    elif model_kind == "rank3":
        flat = keras.layers.Flatten()(inner.inputs[0])
        reshaped = keras.layers.Reshape((10, 2))(keras.layers.Dense(20)(flat))
        inner = keras.Model(inner.inputs, reshaped)
    with pytest.raises(TfmiError, match=message):
        MMDMixupModel(inner, (ref_x, ref_y), **change)


def test_fit_needs_arrays_and_compile_refuses_a_loss(digits):
    data, split = digits
    model = _wrapper(data, split, mmd_weight=1.0)
    dataset = tf.data.Dataset.from_tensor_slices((data.x[:64], data.y[:64])).batch(32)
    with pytest.raises(TfmiError, match="needs x and y as numpy arrays"):
        model.fit(dataset, epochs=1, verbose=0)
    with pytest.raises(TfmiError, match="owns its loss"):
        model.compile(optimizer="adam", loss="mse")
    with pytest.raises(TfmiError, match=r"labels must be in 0..9"):
        model.fit(data.x[:10], np.full(10, 12), epochs=1, verbose=0)


def test_mirrored_strategy_on_two_logical_cpus():
    script = textwrap.dedent("""
        import keras, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfmi.data import load_dataset, membership_split
        from tfmi.defenses.mmd_mixup import MMDMixupModel
        from tfmi.models import build_model
        data = load_dataset("digits"); split = membership_split(data.y, 300, seed=0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        for schedule in ("joint", "paper"):
            with strategy.scope():
                model = MMDMixupModel(build_model("mlp", data.input_shape, 10, seed=0),
                                      (data.x[split.reference], data.y[split.reference]),
                                      mmd_weight=2.0, schedule=schedule, gap_threshold=0.0)
                model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
            h = model.fit(data.x[split.members], data.y[split.members], epochs=3, batch_size=64, verbose=0)
            assert all(np.isfinite(h.history["loss"])), h.history
            assert h.history["mmd_active"][1] == 1.0, h.history
            assert h.history["accuracy"][-1] > h.history["accuracy"][0], h.history
            print(schedule, "ok", round(h.history["accuracy"][-1], 3))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "joint ok" in result.stdout and "paper ok" in result.stdout


# --- the paper schedule's MMD pass: logging, its own optimizer, reference refresh ----------------------

def _clusters(per_class=16, classes=4, dim=6, seed=0):
    """Separable Gaussian clusters, and one reference record per class, all at the origin: class-matched
    reference sampling is then deterministic, and the reference accuracy is exactly 1 / classes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, dim)).astype(np.float32)
    y = np.repeat(np.arange(classes), per_class)
    x = (centers[y] + rng.normal(0, 0.3, (len(y), dim))).astype(np.float32)
    return x, y, (np.zeros((classes, dim), np.float32), np.arange(classes))


def _tiny(dim=6, classes=4, hidden=8):
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(hidden, activation="tanh")] if hidden else []
    return keras.Sequential([keras.Input((dim,)), *layers, keras.layers.Dense(classes)])


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_paper_schedule_logs_the_mmd_of_its_pass_and_whether_it_ran(digits):
    data, split = digits
    x, y = data.x[split.members], data.y[split.members]
    model = _wrapper(data, split, schedule="paper", mmd_weight=5.0, mixup_alpha=None, gap_threshold=0.0)
    keras.utils.set_random_seed(0)
    history = model.fit(x, y, epochs=6, batch_size=32, verbose=0).history
    gate = [float(g >= 0.0 and e < 5) for e, g in enumerate(history["mmd_gap"])]
    assert history["mmd_pass"] == gate and history["mmd_active"] == gate
    assert 1.0 in gate and gate[-1] == 0.0, history  # ran, and not in the last epoch
    for ran, mmd in zip(gate, history["mmd"], strict=True):
        assert (mmd > 1e-3) if ran else (mmd == 0.0)
    assert history["mmd_weight"] == [5.0] * 6


def test_paper_schedule_mmd_is_the_mean_over_the_pass_recomputed_independently():
    # batches of 16 over 4 classes x 16 class-sorted records: each MMD batch is one whole class; with a
    # zero learning rate the pass leaves the weights as they were when the epoch ended
    x, y, reference = _clusters()
    model = MMDMixupModel(_tiny(), reference, mmd_weight=3.0, mixup_alpha=None, gap_threshold=0.0,
                          mmd_optimizer=keras.optimizers.SGD(0.0))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    weights = []
    capture = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: weights.append(
        [w.copy() for w in model.inner.get_weights()]))
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[capture]).history
    assert history["mmd_pass"] == [1.0, 1.0, 0.0]
    for epoch in (0, 1):
        probe = _tiny()
        probe.set_weights(weights[epoch])
        train_p, ref_p = _softmax(probe(x).numpy()), _softmax(probe(reference[0]).numpy())
        want = np.mean([numpy_mmd2(train_p[y == c], ref_p[y[y == c]], (1.0,)) for c in range(4)])
        assert history["mmd"][epoch] == pytest.approx(want, rel=1e-4)
        assert history["mmd"][epoch] > 0.01


def _numeric_gradient(loss, weights, step=1e-5):
    grads = []
    for i, w in enumerate(weights):
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            shifted = [v.copy() for v in weights]
            shifted[i][idx] += step
            up = loss(shifted)
            shifted[i][idx] -= 2 * step
            g[idx] = (up - loss(shifted)) / (2 * step)
        grads.append(g)
    return grads


def test_separate_mmd_optimizer_steps_by_minus_lr_times_the_gradient():
    x, y, reference = _clusters(per_class=3, classes=2, dim=2, seed=1)
    inner = _tiny(dim=2, classes=2, hidden=0)  # logits = x W + b
    sgd = keras.optimizers.SGD(0.5, momentum=0.9)
    model = MMDMixupModel(inner, reference, mmd_weight=4.0, mixup_alpha=None, mmd_optimizer=sgd)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.astype(np.float64) for w in inner.get_weights()]
    ref_p = _softmax(reference[0].astype(np.float64) @ before[0] + before[1])[y]  # constants, class-matched

    def loss(weights):
        return 4.0 * numpy_mmd2(_softmax(x.astype(np.float64) @ weights[0] + weights[1]), ref_p, (1.0,))

    grads = _numeric_gradient(loss, before)
    assert max(np.abs(g).max() for g in grads) > 1e-3
    main_steps = int(model.optimizer.iterations.numpy())
    mmd = model.mmd_step(tf.constant(x), tf.constant(y), model.reference_probabilities())
    assert float(mmd) == pytest.approx(loss(before) / 4.0, rel=1e-5)
    for new, old, g in zip(inner.get_weights(), before, grads, strict=True):
        np.testing.assert_allclose(new - old, -0.5 * g, atol=2e-6)  # momentum's first step: -lr * grad
    assert int(model.optimizer.iterations.numpy()) == main_steps
    assert int(sgd.iterations.numpy()) == 1


@pytest.mark.parametrize("separate", [True, False])
def test_mmd_steps_advance_only_their_own_optimizer_during_fit(separate):
    x, y, reference = _clusters()
    sgd = keras.optimizers.SGD(0.01, momentum=0.9) if separate else None
    model = MMDMixupModel(_tiny(), reference, mmd_weight=1.0, mixup_alpha=None, gap_threshold=0.0,
                          mmd_optimizer=sgd)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    mmd_steps = 4 * int(sum(history["mmd_pass"]))
    assert mmd_steps == 8
    if separate:
        assert int(model.optimizer.iterations.numpy()) == 3 * 4
        assert int(sgd.iterations.numpy()) == mmd_steps
    else:  # shared (the default): the compiled optimizer takes the MMD steps too
        assert int(model.optimizer.iterations.numpy()) == 3 * 4 + mmd_steps


def test_separate_mmd_optimizer_draws_fresh_reference_samples_per_step():
    x, y, _ = _clusters()
    reference = (np.random.default_rng(0).random((40, 6), np.float32), np.arange(40) % 4)
    model = MMDMixupModel(_tiny(), reference, mmd_weight=1.0, mmd_optimizer=keras.optimizers.SGD(0.0))
    model.compile(optimizer="adam")
    seeds = []
    for _ in range(2):
        seeds.append(model._mmd_step_seed().numpy().tolist())
        model.mmd_step(tf.constant(x[:16]), tf.constant(y[:16]))
    assert seeds[0] != seeds[1]  # the main optimizer's step count stands still during MMD steps


@pytest.mark.parametrize("refresh", ["per_batch", "per_pass"])
def test_per_batch_reference_outputs_use_the_weights_after_the_previous_step(refresh):
    x, y, reference = _clusters(seed=2)
    model = MMDMixupModel(_tiny(), reference, mmd_weight=50.0, mixup_alpha=None, reference_refresh=refresh,
                          mmd_optimizer=keras.optimizers.SGD(1.0))
    model.compile(optimizer="adam")
    before = model.inner.get_weights()
    pass_reference = model.reference_probabilities()  # what a per-pass MMD step compares with
    first, second = slice(0, 32), slice(32, 64)  # classes 0-1, then 2-3
    model.mmd_step(tf.constant(x[first]), tf.constant(y[first]), pass_reference)
    after_first = model.inner.get_weights()
    got = float(model.mmd_step(tf.constant(x[second]), tf.constant(y[second]), pass_reference))

    def expected(reference_weights):
        probe = _tiny()
        probe.set_weights(after_first)
        train_p = _softmax(probe(x[second]).numpy())
        probe.set_weights(reference_weights)
        return numpy_mmd2(train_p, _softmax(probe(reference[0]).numpy())[y[second]], (1.0,))

    fresh, stale = expected(after_first), expected(before)
    assert abs(fresh - stale) > 0.01  # the first step moved the reference outputs
    assert got == pytest.approx(fresh if refresh == "per_batch" else stale, rel=1e-4)


def test_mmd_optimizer_and_target_gap_survive_the_config_and_a_keras_file(tmp_path):
    x, y, reference = _clusters()
    model = MMDMixupModel(_tiny(), reference, mmd_weight=2.0, mmd_optimizer=keras.optimizers.SGD(0.3),
                          reference_refresh="per_batch", target_gap=0.1)
    model.compile(optimizer="adam")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    config = model.get_config()
    clone = MMDMixupModel.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.mmd_optimizer, keras.optimizers.SGD)
    assert clone.mmd_optimizer is not model.mmd_optimizer
    assert clone.reference_refresh == "per_batch" and clone.target_gap == 0.1
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.current_mmd_weight == pytest.approx(model.current_mmd_weight)
    assert float(loaded.mmd_optimizer.learning_rate.numpy()) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "change, message",
    [({"reference_refresh": "never"}, "reference_refresh must be one of per_pass, per_batch"),
     ({"mmd_optimizer": "sgd"}, "mmd_optimizer must be a Keras optimizer or None, got str"),
     ({"target_gap": 1.0}, r"target_gap must be in \[0, 1\)"),
     ({"target_gap": 0.1, "mmd_weight": 0.0}, "give mmd_weight > 0")],
)
def test_bad_mmd_step_options_fail_at_construction(change, message):
    _, _, reference = _clusters()
    with pytest.raises(TfmiError, match=message):
        MMDMixupModel(_tiny(), reference, **change)


@pytest.mark.parametrize("mode", ["class_sorted", "shuffled"])
def test_mmd_pass_batches_cover_every_member_once_sorted_or_mixed(mode):
    labels = np.repeat(np.arange(10), 30)  # 10 classes x 30 records, batches of 20
    order, starts = mmd_pass_batches(labels, 20, mode, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(300)) and sorted(starts.tolist()) == list(range(0, 300, 20))
    classes_per_batch = [len(np.unique(labels[order[s:s + 20]])) for s in starts]
    if mode == "class_sorted":
        assert max(classes_per_batch) <= 2
    else:
        assert min(classes_per_batch) >= 4  # 20 draws from 10 classes: many classes per batch


def test_mmd_batches_option_is_checked_and_saved(digits):
    data, split = digits
    with pytest.raises(TfmiError, match="mmd_batches must be one of class_sorted, shuffled"):
        _wrapper(data, split, mmd_batches="sorted")
    model = _wrapper(data, split, mmd_batches="shuffled")
    assert MMDMixupModel.from_config(model.get_config()).mmd_batches == "shuffled"
