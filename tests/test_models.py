import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmi.errors import TfmiError
from tfmi.models import MODEL_BUILDERS, MODEL_NAMES, build_model


@pytest.mark.parametrize(
    "name, input_shape, classes",
    [("mlp", (446,), 30), ("mlp", (8, 8, 1), 10), ("cnn", (8, 8, 1), 10), ("cnn", (28, 28, 1), 10),
     ("cnn", (28, 28), 10), ("alexnet", (32, 32, 3), 10), ("resnet20", (32, 32, 3), 100)],
)
def test_models_map_a_batch_to_logits(name, input_shape, classes):
    model = build_model(name, input_shape, classes, seed=0)
    x = np.random.default_rng(0).random((3, *input_shape), dtype=np.float32)
    out = model(x, training=False).numpy()
    assert out.shape == (3, classes)
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, not probabilities


def test_mlp_is_the_nasr_architecture():
    model = build_model("mlp", (446,), 30)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [1024, 512, 256, 128, 30]
    assert [layer.get_config()["activation"] for layer in dense[:-1]] == ["tanh"] * 4


def test_resnet20_has_twenty_weight_layers():
    model = build_model("resnet20", (32, 32, 3), 10)
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size != (1, 1)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert len(convs) + len(dense) == 20


def test_seed_makes_initial_weights_reproducible():
    a = build_model("mlp", (10,), 3, seed=4).get_weights()
    b = build_model("mlp", (10,), 3, seed=4).get_weights()
    c = build_model("mlp", (10,), 3, seed=5).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_dropout_layers_only_when_asked():
    plain = build_model("mlp", (10,), 3)
    regularized = build_model("mlp", (10,), 3, dropout=0.5)
    def count(model):
        return sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers)

    assert count(plain) == 0 and count(regularized) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [({"name": "vgg"}, "unknown model 'vgg': use one of " + ", ".join(MODEL_NAMES)),
     ({"name": "cnn", "input_shape": (446,)}, "use --model mlp"),
     ({"num_classes": 1}, "at least 2 classes"),
     ({"dropout": 1.0}, "dropout rate")],
)
def test_bad_model_requests(kwargs, message):
    args = {"name": "mlp", "input_shape": (8,), "num_classes": 3} | kwargs
    with pytest.raises(TfmiError, match=message):
        build_model(args.pop("name"), **args)


def test_l2_weight_decay_adds_a_loss_per_kernel():
    plain = build_model("cnn", (8, 8, 1), 10)
    decayed = build_model("cnn", (8, 8, 1), 10, l2=1e-3)
    assert plain.losses == []
    kernels = [w for w in decayed.trainable_weights if "kernel" in w.name]
    assert len(decayed.losses) == len(kernels) == 4
    expected = 1e-3 * sum(float(tf.reduce_sum(tf.square(k))) for k in kernels)
    assert float(tf.add_n(decayed.losses)) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(TfmiError, match="l2 weight decay"):
        build_model("mlp", (4,), 2, l2=-1.0)


def test_the_keras_free_model_list_names_every_builder():
    # the CLI's help lists MODEL_NAMES without importing Keras; it must be the zoo, in order
    assert tuple(MODEL_BUILDERS) == MODEL_NAMES
