"""Adversarial regularization (AdvRegModel) and RelaxLoss (RelaxLossModel) as DefendedModel wrappers."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi.data import load_dataset, membership_split
from tfmi.defenses.advreg import AdvRegModel, build_attack_model
from tfmi.defenses.relaxloss import RelaxLossModel
from tfmi.errors import TfmiError
from tfmi.models import build_model


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    split = membership_split(data.y, 300, seed=0)
    return data, split


def _members(data, split):
    return data.x[split.members], data.y[split.members]


def _advreg(data, split, **kwargs):
    inner = build_model("mlp", data.input_shape, 10, seed=0)
    model = AdvRegModel(inner, (data.x[split.reference], data.y[split.reference]), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


def _relax(data, **kwargs):
    model = RelaxLossModel(build_model("mlp", data.input_shape, 10, seed=0), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


def _true_class(model, x, y):
    """Mean true-class probability and mean cross-entropy of the inner model in inference mode."""
    log_p = tf.nn.log_softmax(model.inner(x, training=False)).numpy()[np.arange(len(y)), y]
    return float(np.mean(np.exp(log_p))), float(-np.mean(log_p))


# --- AdvReg ----------------------------------------------------------------------------------------


def test_attack_model_takes_softmax_and_label_through_separate_branches():
    attack = build_attack_model(7, (32, 16), seed=3)
    assert [t.shape[-1] for t in attack.inputs] == [7, 7] and attack.output_shape == (None, 1)
    dense = {layer.name: layer.units for layer in attack.layers if isinstance(layer, keras.layers.Dense)}
    assert dense == {"softmax_0": 32, "softmax_1": 16, "label_0": 16, "combine_0": 16, "member_logit": 1}
    again = build_attack_model(7, (32, 16), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(attack.get_weights(), again.get_weights(), strict=True))


def test_advreg_fit_evaluate_predict_with_validation_and_callbacks(digits):
    data, split = digits
    model = _advreg(data, split, adv_weight=1.0, attack_steps=2)
    x, y = _members(data, split)
    seen = []
    history = model.fit(
        x, y, epochs=2, batch_size=32, verbose=0,
        validation_data=(data.x[split.non_members], data.y[split.non_members]),
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))],
    )
    assert seen == [0, 1]
    assert set(history.history) == {"loss", "ce_loss", "adv_gain", "attack_accuracy", "accuracy",
                                    "val_loss", "val_accuracy"}
    gains = history.history["adv_gain"]
    assert all(g <= 0 for g in gains) and all(0 <= a <= 1 for a in history.history["attack_accuracy"])
    np.testing.assert_allclose(  # loss = CE + lambda * gain, averaged over the same steps
        history.history["loss"], np.add(history.history["ce_loss"], gains), rtol=1e-4, atol=1e-5)
    x_out, y_out = data.x[split.non_members], data.y[split.non_members]
    results = model.evaluate(x_out, y_out, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    np.testing.assert_allclose(model.predict(x_out[:5], verbose=0), model.inner(x_out[:5]).numpy(), atol=1e-5)
    probs = tf.nn.softmax(model.inner(x_out[:5]))
    direct = model.attack_model([probs, tf.one_hot(y_out[:5], 10)]).numpy()[:, 0]
    np.testing.assert_allclose(model.membership_logits(probs, y_out[:5]).numpy(), direct, rtol=1e-6)


def test_advreg_trains_both_models_reproducibly_and_the_penalty_changes_the_classifier(digits):
    data, split = digits
    x, y = _members(data, split)
    weights = {}
    for name, weight in (("a", 1.0), ("b", 1.0), ("zero", 0.0)):
        model = _advreg(data, split, adv_weight=weight, attack_steps=2)
        attack_before = [w.copy() for w in model.attack_model.get_weights()]
        inner_before = [w.copy() for w in model.inner.get_weights()]
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
        attack_after, inner_after = model.attack_model.get_weights(), model.inner.get_weights()
        assert all(not np.allclose(u, v) for u, v in zip(attack_before, attack_after, strict=True))
        assert all(not np.allclose(u, v) for u, v in zip(inner_before, inner_after, strict=True))
        assert int(model.attack_optimizer.iterations.numpy()) == 2 * 10  # k steps per batch, 10 batches
        assert int(model.optimizer.iterations.numpy()) == 10
        weights[name] = (inner_after[0], attack_after[0])
    np.testing.assert_array_equal(weights["a"][0], weights["b"][0])  # stateless reference draws
    np.testing.assert_array_equal(weights["a"][1], weights["b"][1])
    assert not np.allclose(weights["a"][0], weights["zero"][0])


def test_large_adv_weight_lowers_train_confidence_and_the_gap(digits):
    data, split = digits
    x, y = _members(data, split)
    x_out, y_out = data.x[split.non_members], data.y[split.non_members]
    measured = {}
    for weight in (0.0, 5.0):
        model = _advreg(data, split, adv_weight=weight, attack_steps=3)
        model.fit(x, y, epochs=12, batch_size=32, verbose=0, shuffle=False)
        train_conf, _ = _true_class(model, x, y)
        test_conf, _ = _true_class(model, x_out, y_out)
        measured[weight] = (train_conf, train_conf - test_conf)
    # seen: train confidence 0.99 -> 0.69, confidence gap 0.086 -> 0.059
    assert measured[5.0][0] < measured[0.0][0] - 0.15, measured
    assert measured[5.0][1] < 0.85 * measured[0.0][1], measured


# --- RelaxLoss -------------------------------------------------------------------------------------


def test_flattened_targets_keep_the_clamped_true_class_and_level_the_rest():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model = RelaxLossModel(inner, alpha=0.5, upper=0.6)
    logits = tf.math.log(tf.constant([[0.7, 0.1, 0.15, 0.05],     # correct, p_y = 0.7 > upper
                                      [0.1, 0.5, 0.3, 0.1],       # correct, p_y = 0.5 kept
                                      [0.6, 0.2, 0.1, 0.1]]))     # label 3: misclassified
    y = tf.constant([0, 1, 3])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        targets = model.flattened_targets(y, logits)
    np.testing.assert_allclose(targets.numpy(), [[0.6, 0.4 / 3, 0.4 / 3, 0.4 / 3],
                                                 [0.5 / 3, 0.5, 0.5 / 3, 0.5 / 3],
                                                 [0.0, 0.0, 0.0, 1.0]], atol=1e-6)
    assert tape.gradient(targets, logits) is None  # constants


def test_relaxloss_fit_evaluate_predict_and_branch_fractions(digits):
    data, split = digits
    model = _relax(data, alpha=0.5)
    x, y = _members(data, split)
    history = model.fit(x, y, epochs=12, batch_size=32, verbose=0,
                        validation_data=(data.x[split.non_members], data.y[split.non_members]))
    h = history.history
    assert {"loss", "ce_loss", "ascent_fraction", "flatten_fraction", "accuracy", "val_loss",
            "val_accuracy"} == set(h)
    assert all(f == 0 for f in h["flatten_fraction"][0::2])  # even epochs: ascent or descent
    assert all(f == 0 for f in h["ascent_fraction"][1::2])  # odd epochs: flattening or descent
    assert max(h["ascent_fraction"][0::2]) > 0.3 and max(h["flatten_fraction"][1::2]) > 0.3
    assert int(model.epochs_seen.numpy()) == 12
    x_out, y_out = data.x[split.non_members], data.y[split.non_members]
    results = model.evaluate(x_out, y_out, verbose=0, return_dict=True)
    assert set(results) == {"loss", "accuracy"} and results["accuracy"] > 0.5
    np.testing.assert_allclose(model.predict(x_out[:5], verbose=0), model.inner(x_out[:5]).numpy(), atol=1e-5)


def test_relaxloss_holds_the_training_loss_near_alpha(digits):
    data, split = digits
    x, y = _members(data, split)
    plain = build_model("mlp", data.input_shape, 10, seed=0)
    plain.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, epochs=20, batch_size=64, verbose=0)
    plain_ce = float(plain.evaluate(x, y, verbose=0))
    relaxed = _relax(data, alpha=0.5)
    history = relaxed.fit(x, y, epochs=20, batch_size=64, verbose=0)
    _, relaxed_ce = _true_class(relaxed, x, y)
    assert plain_ce < 0.05  # seen: 0.008
    assert 0.25 < relaxed_ce < 0.75, relaxed_ce  # seen: 0.42
    assert 0.3 < np.mean(history.history["ce_loss"][-10:]) < 0.8, history.history["ce_loss"]


def test_relaxloss_descends_above_alpha_and_ascends_below(digits):
    data, split = digits
    x, y = _members(data, split)
    model = _relax(data, alpha=0.5)
    _, untrained = _true_class(model, x, y)
    first = model.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    _, trained = _true_class(model, x, y)
    assert trained < untrained and first["ascent_fraction"][0] < 0.5  # CE starts above alpha: descent
    # the same network, now asked for a loss level above its current one: epoch 0 ascends
    above = RelaxLossModel(model.inner, alpha=trained + 1.0)
    above.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = above.fit(x, y, epochs=1, batch_size=32, verbose=0).history
    _, raised = _true_class(above, x, y)
    assert history["ascent_fraction"][0] > 0.2 and raised > trained + 0.3


# --- both ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["advreg", "relaxloss"])
def trained(request, digits):
    """One model of each kind, fitted for an epoch with non-default settings."""
    data, split = digits
    if request.param == "advreg":
        model = _advreg(data, split, adv_weight=2.5, attack_steps=2, attack_hidden=(16, 8),
                        attack_learning_rate=5e-4, seed=4)
    else:
        model = _relax(data, alpha=0.7, upper=0.9, seed=4)
    model.fit(*_members(data, split), epochs=1, batch_size=64, verbose=0)
    return model


def test_config_round_trip_and_keras_file(digits, trained, tmp_path):
    data, _ = digits
    model = trained
    config = model.get_config()
    clone = type(model).from_config(config)
    clone.set_weights(model.get_weights())
    assert clone.get_config() == config
    np.testing.assert_allclose(clone.predict(data.x[:8], verbose=0), model.predict(data.x[:8], verbose=0))
    model.save(tmp_path / "wrapped.keras")
    loaded = keras.models.load_model(tmp_path / "wrapped.keras")
    assert type(loaded) is type(model)
    assert {k: v for k, v in loaded.get_config().items() if k != "model"} == {
        k: v for k, v in config.items() if k != "model"}
    np.testing.assert_allclose(loaded.predict(data.x[:8], verbose=0), model.predict(data.x[:8], verbose=0))
    if isinstance(model, AdvRegModel):
        assert (loaded.attack_hidden, loaded.attack_steps, loaded.adv_weight) == ((16, 8), 2, 2.5)
        for a, b in zip(loaded.attack_model.get_weights(), model.attack_model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(loaded.reference_x.numpy(), model.reference_x.numpy())
        np.testing.assert_array_equal(loaded.reference_y.numpy(), model.reference_y.numpy())
    else:
        assert (loaded.alpha, loaded.upper) == (0.7, 0.9) and int(loaded.epochs_seen.numpy()) == 1


def test_export_writes_the_plain_inner_network(digits, trained, tmp_path):
    data, _ = digits
    trained.export(str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    assert len(served.variables) == len(trained.inner.variables)  # no attack model, reference, counter
    logits = served.signatures["serving_default"](tf.constant(data.x[:16]))["output_0"].numpy()
    np.testing.assert_allclose(logits, trained.inner(data.x[:16]).numpy(), atol=1e-5)


def _bad_reference(data, split, kind):
    ref_x, ref_y = data.x[split.reference].copy(), data.y[split.reference].copy()
    if kind == "wrong_shape":
        return ref_x.reshape(len(ref_x), -1)[:, :32], ref_y
    if kind == "too_many_classes":
        ref_y[0] = 11
    elif kind == "missing_classes":
        keep = (ref_y != 3) & (ref_y != 7)
        return ref_x[keep], ref_y[keep]
    elif kind == "rows":
        return ref_x, ref_y[:-1]
    elif kind == "not_a_pair":
        return ref_x
    return ref_x, ref_y


@pytest.mark.parametrize(
    "change, message",
    [
        ({"adv_weight": -1.0}, "adv_weight must be a number >= 0"),
        ({"adv_weight": float("nan")}, "adv_weight must be a number >= 0"),
        ({"adv_weight": "1"}, "adv_weight must be a number >= 0"),
        ({"attack_steps": 0}, "attack_steps must be a positive integer"),
        ({"attack_steps": 1.5}, "attack_steps must be a positive integer"),
        ({"attack_steps": True}, "attack_steps must be a positive integer"),
        ({"attack_hidden": ()}, "attack_hidden must be positive layer widths"),
        ({"attack_hidden": (64, 0)}, "attack_hidden must be positive layer widths"),
        ({"attack_hidden": "64"}, "attack_hidden must be positive layer widths"),
        ({"attack_learning_rate": 0.0}, "attack_learning_rate must be a positive number"),
        ({"reference": "wrong_shape"}, r"shape \(32,\) per example but the model takes \(8, 8, 1\)"),
        ({"reference": "too_many_classes"}, "reference labels go up to 11 but the model has 10 classes"),
        ({"reference": "missing_classes"}, "classes 3, 7 have no reference records"),
        ({"reference": "rows"}, "reference features have 300 rows but reference labels 299"),
        ({"reference": "not_a_pair"}, r"reference_data must be a pair \(x_ref, y_ref\)"),
        ({"reference": "none"}, r"give reference_data=\(x_ref, y_ref\)"),
        ({"outputs": "probabilities"}, "do not sum to 1"),
    ],
)
def test_bad_advreg_configurations_fail_at_construction(digits, change, message):
    data, split = digits
    change = dict(change)
    kind = change.pop("reference", None)
    reference = None if kind == "none" else _bad_reference(data, split, kind)
    with pytest.raises(TfmiError, match=message):
        AdvRegModel(build_model("mlp", data.input_shape, 10, seed=0), reference, **change)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"alpha": 0.0}, r"alpha \(the target training loss\) must be a positive number"),
        ({"alpha": -1.0}, "must be a positive number"),
        ({"alpha": float("inf")}, "must be a positive number"),
        ({"alpha": None}, "must be a positive number"),
        ({"upper": 0.0}, r"upper \(a confidence cap\) must be in \(0, 1\]"),
        ({"upper": 1.5}, r"must be in \(0, 1\]"),
        ({"upper": float("nan")}, r"must be in \(0, 1\]"),
        ({"outputs": "softmax"}, "outputs must be 'auto', 'logits' or 'probabilities'"),
    ],
)
def test_bad_relaxloss_configurations_fail_at_construction(digits, change, message):
    data, _ = digits
    with pytest.raises(TfmiError, match=message):
        RelaxLossModel(build_model("mlp", data.input_shape, 10, seed=0), **change)


def test_compile_refuses_a_loss_and_a_non_model_is_refused(digits, trained):
    data, split = digits
    with pytest.raises(TfmiError, match="owns its loss"):
        trained.compile(optimizer="adam", loss="mse")
    with pytest.raises(TfmiError, match="expected a Keras model to defend, got str"):
        AdvRegModel("mlp", (data.x[split.reference], data.y[split.reference]))
    with pytest.raises(TfmiError, match="expected a Keras model to defend, got str"):
        RelaxLossModel("mlp")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus():
    script = textwrap.dedent("""
        import keras, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfmi.data import load_dataset, membership_split
        from tfmi.defenses.advreg import AdvRegModel
        from tfmi.defenses.relaxloss import RelaxLossModel
        from tfmi.models import build_model
        data = load_dataset("digits"); split = membership_split(data.y, 300, seed=0)
        x, y = data.x[split.members], data.y[split.members]
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            adv = AdvRegModel(build_model("mlp", data.input_shape, 10, seed=0),
                              (data.x[split.reference], data.y[split.reference]), attack_steps=2)
            relax = RelaxLossModel(build_model("mlp", data.input_shape, 10, seed=0), alpha=0.5)
        for model in (adv, relax):
            model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        before = adv.attack_model.get_weights()[0].copy()
        h = adv.fit(x, y, epochs=3, batch_size=64, verbose=0).history
        assert all(np.isfinite(h["loss"])) and h["accuracy"][-1] > h["accuracy"][0], h
        assert not np.allclose(before, adv.attack_model.get_weights()[0])
        assert int(adv.attack_optimizer.iterations.numpy()) == 2 * 15
        h = relax.fit(x, y, epochs=4, batch_size=64, verbose=0).history
        assert all(np.isfinite(h["loss"])) and int(relax.epochs_seen.numpy()) == 4, h
        print("mirrored ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored ok" in result.stdout
