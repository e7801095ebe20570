"""Loading classifiers written by plain Keras / TensorFlow scripts (tfmi.model_loading)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi import compat
from tfmi.errors import TfmiError
from tfmi.inference import export_saved_model
from tfmi.model_loading import LoadedModel, check_output_width, list_signatures, load_model

PLAIN_KERAS_SCRIPT = textwrap.dedent(
    """
    # A user's training script: plain Keras, never imports tfmi.
    import sys

    import numpy as np
    import keras
    import tensorflow as tf

    out = sys.argv[1]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.integers(0, 4, size=32)
    for activation in ("linear", "softmax"):
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
             keras.layers.Dense(4, activation=activation)]
        )
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=activation == "linear")
        model.compile("adam", loss)
        model.fit(x, y, epochs=1, verbose=0)
        model.export(f"{out}/export_{activation}")
        tf.saved_model.save(model, f"{out}/tfsave_{activation}")
        np.savez(f"{out}/{activation}.npz", x=x, pred=model.predict(x, verbose=0))
    assert "tfmi" not in sys.modules
    """
)


@pytest.fixture(scope="module")
def plain_keras_dir(tmp_path_factory) -> Path:
    """SavedModels and reference predictions written by a subprocess that never imports tfmi."""
    out = tmp_path_factory.mktemp("plain_keras")
    script = out / "train.py"
    script.write_text(PLAIN_KERAS_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "HOME": str(out)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def _tiny_model(activation: str = "softmax") -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation=activation)])


class _TwoSignatures(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def a(self, x):
        return {"scores_a": x + 1.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def b(self, x):
        return {"scores_b": 2.0 * x}


@pytest.fixture(scope="module")
def two_signature_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two_sigs") / "sm"
    module = _TwoSignatures()
    tf.saved_model.save(module, str(path), signatures={"a": module.a, "b": module.b})
    return path


@pytest.mark.parametrize("exporter", ["export", "tfsave"])
@pytest.mark.parametrize("activation", ["linear", "softmax"])
def test_saved_model_from_plain_keras_script_reproduces_predictions(plain_keras_dir, exporter, activation):
    reference = np.load(plain_keras_dir / f"{activation}.npz")
    loaded = load_model(plain_keras_dir / f"{exporter}_{activation}")
    assert loaded.format == "saved_model"
    assert loaded.signature == "serving_default"
    assert loaded.input_shape == (5,)
    assert loaded.num_outputs == 4
    assert loaded.keras_model is None
    predictions = loaded.predict(reference["x"])
    assert predictions.shape == (32, 4)
    np.testing.assert_allclose(predictions, reference["pred"], atol=1e-5)
    if activation == "softmax":
        np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    # float64 batches are cast to the signature's dtype
    np.testing.assert_allclose(
        loaded.predict(reference["x"].astype(np.float64)), reference["pred"], atol=1e-5
    )


def test_list_signatures_of_exported_model(plain_keras_dir):
    signatures = list_signatures(plain_keras_dir / "export_linear")
    assert set(signatures) == {"serve", "serving_default"}
    assert signatures["serving_default"].startswith("inputs ")
    assert "float32 (None, 5) -> outputs " in signatures["serving_default"]
    assert signatures["serving_default"].endswith("float32 (None, 4)")


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")
@pytest.mark.parametrize(("suffix", "fmt"), [(".keras", "keras"), (".h5", "h5")])
@pytest.mark.parametrize("activation", ["linear", "softmax"])
def test_keras_files_round_trip(tmp_path, suffix, fmt, activation):
    model = _tiny_model(activation)
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = load_model(path)
    assert (loaded.format, loaded.input_shape, loaded.num_outputs) == (fmt, (3,), 4)
    assert loaded.output_activation == activation
    assert loaded.signature is None
    assert isinstance(loaded.keras_model, keras.Model)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=1e-6)


def test_tfmi_model_dir_loads_inner_saved_model(tmp_path):
    model = _tiny_model()
    export_saved_model(model, tmp_path / "run" / "saved_model")
    loaded = load_model(tmp_path / "run")
    assert loaded.format == "saved_model"
    assert Path(loaded.path) == tmp_path / "run" / "saved_model"
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x, verbose=0), atol=1e-6)


def test_several_signatures_without_serving_default_need_a_choice(two_signature_dir):
    with pytest.raises(TfmiError, match=r"several signatures.*a, b.*--signature NAME"):
        load_model(two_signature_dir)
    loaded = load_model(two_signature_dir, signature="b")
    assert loaded.signature == "b"
    assert (loaded.input_shape, loaded.num_outputs) == ((3,), 3)
    np.testing.assert_allclose(loaded.predict(np.ones((2, 3), np.float32)), np.full((2, 3), 2.0))
    assert list_signatures(two_signature_dir) == {
        "a": "inputs x: float32 (None, 3) -> outputs scores_a: float32 (None, 3)",
        "b": "inputs x: float32 (None, 3) -> outputs scores_b: float32 (None, 3)",
    }


def test_unknown_signature_lists_available_keys(two_signature_dir):
    with pytest.raises(TfmiError, match=r"no signature 'nope'; available: a, b"):
        load_model(two_signature_dir, signature="nope")


def test_saved_model_without_signatures_is_refused(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "bare"))
    with pytest.raises(TfmiError, match=r"no serving signature.*model\.export\(path\)"):
        load_model(tmp_path / "bare")


def test_wrong_input_shape_is_reported(plain_keras_dir):
    loaded = load_model(plain_keras_dir / "export_linear")
    with pytest.raises(TfmiError, match=r"expects examples of shape \(5,\) but got \(3,\)"):
        loaded.predict(np.zeros((2, 3), np.float32))


def test_missing_path(tmp_path):
    with pytest.raises(TfmiError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_empty_directory(tmp_path):
    with pytest.raises(TfmiError, match=r"directory but not a SavedModel \(no saved_model\.pb"):
        load_model(tmp_path)


def test_corrupt_keras_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("this is not a model\n")
    with pytest.raises(TfmiError, match=r"model\.keras is not a model: it is neither a Keras zip") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_truncated_keras_zip(tmp_path):
    model = _tiny_model()
    whole = tmp_path / "whole.keras"
    model.save(whole)
    path = tmp_path / "model.keras"
    path.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(TfmiError, match=r"cannot load .*model\.keras as a Keras model") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_corrupt_saved_model(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(TfmiError, match="cannot load SavedModel"):
        load_model(tmp_path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("1 2 3\n")
    with pytest.raises(TfmiError, match=r"not a model: it is neither a Keras zip \(\.keras\), an HDF5 file"):
        load_model(path)


def test_lambda_layer_refused_before_deserializing(tmp_path):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Lambda(lambda t: 2 * t), keras.layers.Dense(4)]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    pattern = r"refusing to load .*layer 'lambda' \(Lambda\) stores Python code"
    with pytest.raises(TfmiError, match=pattern) as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_check_output_width():
    loaded = LoadedModel(
        predict=lambda x: x,
        path="m.keras",
        format="keras",
        input_shape=(3,),
        num_outputs=4,
        output_activation="linear",
        signature=None,
    )
    check_output_width(loaded, 4)
    with pytest.raises(TfmiError, match="outputs 4 scores per example but the labels have 10 classes"):
        check_output_width(loaded, 10)
    check_output_width(LoadedModel(lambda x: x, "m", "saved_model", None, None, None, "s"), 10)


def test_output_not_two_dimensional_is_refused(tmp_path):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.Reshape((2, 2))]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(TfmiError, match=r"outputs shape \(None, 2, 2\); expected \(batch, num_classes\)"):
        load_model(path)


def test_large_batches_are_predicted_in_chunks(tmp_path):
    model = _tiny_model("linear")
    path = tmp_path / "model.keras"
    model.save(path)
    x = np.random.default_rng(2).normal(size=(2500, 3)).astype(np.float32)
    np.testing.assert_allclose(load_model(path).predict(x), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.skipif(compat.KERAS_3, reason="Keras 3 reads Keras 3 files")
def test_a_keras_3_file_on_the_reference_stack_is_refused_naming_the_current_stack(tmp_path):
    path = tmp_path / "model.keras"
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": []}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(TfmiError, match=r"saved by Keras 3: audit it on tfmi's current stack"):
        load_model(path)
