"""Per-example membership signals from a classifier's outputs: loss, confidences, entropies, LiRA's
logit-scaled confidence.

Every signal is computed from log-probabilities obtained by a log-softmax, so logits with huge
margins (1000 and more) still give finite, accurate values. Probabilities are first mapped to
log-probabilities: clipped to ``[PROBABILITY_EPS, 1 - PROBABILITY_EPS]``, logged and renormalized
(a softmax of their logs), which caps every statistic derived from them at about
``-log(PROBABILITY_EPS)`` (~27.6).

LiRA's ``phi`` must come from the target and from its shadows by one rule, or the two are not
comparable: a softmax in float32 saturates (``p_y`` rounds to 1, the other classes underflow to the
clip) where logits still separate, so a target's ``phi`` from probabilities and its shadows' from
logits would differ for the most confident, most vulnerable examples. The rule (`lira_phi` for the
target, `shadow_lira_phi` for the shadows, which always give logits):

- from **logits** when the target gives them: it outputs logits, or it is a Keras model ending in a
  softmax (a ``Softmax`` or ``Activation`` layer, or a ``Dense`` layer with a softmax activation)
  whose pre-softmax logits `model_outputs` recovers from the same forward pass (checked: their
  softmax must reproduce the outputs);
- otherwise (SavedModels, callables, other Keras models that only give probabilities) from
  **probabilities at the target's precision**: the shadows' logits go through a softmax computed in
  the float dtype the target returned (float32 for Keras and SavedModels), so both saturate alike.

>>> import numpy as np
>>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
>>> s = compute_signals(logits, [0, 2])
>>> s.correct.tolist()
[1.0, 0.0]
>>> bool(s.loss[0] < s.loss[1])
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat
from tfmi.data.dataset import check_features, check_labels
from tfmi.errors import TfmiError
from tfmi.inference import PREDICT_BATCH_SIZE, predict_in_batches
from tfmi.outputs import OUTPUT_KINDS, last_activation, looks_like_probabilities

#: Probabilities are clipped to ``[PROBABILITY_EPS, 1 - PROBABILITY_EPS]`` before taking logs.
PROBABILITY_EPS = 1e-12

SIGNAL_NAMES = (
    "loss", "max_confidence", "true_class_probability", "entropy", "modified_entropy", "correct",
    "logit_confidence",
)


@dataclass(frozen=True)
class ModelOutputs:
    """A classifier's outputs on a batch of examples, shape ``(n, num_classes)``, and their kind.

    >>> ModelOutputs(np.array([[0.2, 0.8]]), "probabilities").num_classes
    2
    """

    values: np.ndarray
    kind: str  # "logits" or "probabilities"
    #: probabilities only: the pre-softmax logits of a Keras model ending in a softmax, or None
    logits: np.ndarray | None = None
    #: the float dtype the model returned (``values`` are float64); None: that of ``values``
    dtype: Any = None

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise TfmiError(f"output kind must be 'logits' or 'probabilities', got {self.kind!r}")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def num_classes(self) -> int:
        return int(self.values.shape[1])

    @property
    def precision(self) -> np.dtype:
        """The float dtype the outputs were computed in (float64 when unknown)."""
        for dtype in (self.dtype, np.asarray(self.values).dtype):
            if dtype is not None and np.issubdtype(np.dtype(dtype), np.floating):
                return np.dtype(dtype)
        return np.dtype(np.float64)


@dataclass(frozen=True)
class Signals:
    """Per-example membership signals: 1-D float64 arrays, one value per example.

    ``loss`` cross-entropy ``-log p_y``; ``max_confidence`` ``max_i p_i``; ``true_class_probability``
    ``p_y``; ``entropy`` ``H(p)``; ``modified_entropy`` (Song & Mittal 2021)
    ``-(1-p_y) log p_y - sum_{i != y} p_i log(1-p_i)``; ``correct`` 1.0 where the arg-max is ``y``,
    else 0.0; ``logit_confidence`` ``log p_y - log(1 - p_y)`` (the LiRA statistic).
    Members tend to have lower loss, entropy and modified entropy and higher confidences.
    """

    loss: np.ndarray
    max_confidence: np.ndarray
    true_class_probability: np.ndarray
    entropy: np.ndarray
    modified_entropy: np.ndarray
    correct: np.ndarray
    logit_confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The signals by name, in `SIGNAL_NAMES` order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, index: Any) -> Signals:
        """The signals of the examples ``index`` picks (a boolean mask or integer indices).

        >>> s = compute_signals(np.array([[2.0, 0.0], [0.0, 2.0]]), [0, 0])
        >>> s.select(np.array([False, True])).correct.tolist()
        [0.0]
        """
        return Signals(**{name: values[index] for name, values in self.as_dict().items()})


def _check_kind(kind: str, allow_auto: bool = True) -> None:
    allowed = ("auto", *OUTPUT_KINDS) if allow_auto else OUTPUT_KINDS
    if kind not in allowed:
        raise TfmiError(f"outputs must be one of {', '.join(map(repr, allowed))}, got {kind!r}")


def _check_outputs(values: Any) -> np.ndarray:
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TfmiError(f"model outputs must be numeric, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise TfmiError(
            f"model outputs have shape {values.shape}; a classifier must output (n, num_classes) "
            "logits or probabilities with num_classes >= 2 (a single sigmoid unit? output 2 logits)"
        )
    if values.shape[0] == 0:
        raise TfmiError("model outputs are empty: give at least one example")
    if not np.all(np.isfinite(values)):
        rows = np.unique(np.nonzero(~np.isfinite(values))[0])
        raise TfmiError(
            f"model outputs contain NaN or infinity in {len(rows)} row(s), first at row {int(rows[0])}: "
            "check the model's weights and inputs"
        )
    return values


def _resolve_kind(values: np.ndarray, declared: str, activation: str | None = None) -> str:
    """Decide logits vs probabilities for checked outputs ``values``."""
    _check_kind(declared)
    is_distribution = looks_like_probabilities(values)
    if declared == "probabilities":
        if not is_distribution:
            raise TfmiError(
                "outputs='probabilities' but the output rows do not sum to 1 or have negative entries "
                "(they look like logits: pass outputs='logits')"
            )
        return declared
    if declared == "logits":
        return declared
    if activation == "softmax":
        if not is_distribution:
            raise TfmiError("the model ends in a softmax but its output rows do not sum to 1: check it")
        return "probabilities"
    if activation == "linear":
        return "logits"
    if activation is not None:
        raise TfmiError(
            f"the model's last layer applies {activation!r}, so its outputs are not a class distribution: "
            "end it in a linear layer (logits) or a softmax, or pass outputs='logits'/'probabilities'"
        )
    if is_distribution:
        return "probabilities"
    inside = (values > 0) & (values < 1)
    if values.shape[1] >= 2 and np.all((values >= 0) & (values <= 1)) and inside.mean() > 0.5:
        sums = values.sum(axis=1)
        raise TfmiError(
            f"the model's outputs all lie in [0, 1] but their rows sum to {np.median(sums):.3g} (median), "
            "not 1: sigmoids per class or several softmaxes are neither logits nor class probabilities; "
            "export the logits or one softmax, or pass --outputs logits (outputs='logits') if they "
            "are logits"
        )
    return "logits"


def model_outputs(
    model: Any, x: np.ndarray, *, outputs: str = "auto", batch_size: int = PREDICT_BATCH_SIZE
) -> ModelOutputs:
    """Outputs of ``model`` on ``x``, computed in batches, and whether they are logits or probabilities.

    ``model`` is a Keras model (called in inference mode), a loaded SavedModel (the object
    ``tf.saved_model.load`` returns; its ``serving_default`` signature is used) or a plain callable
    mapping a NumPy batch to an ``(n, num_classes)`` array. ``outputs="auto"`` reads a Keras model's
    last-layer activation (softmax: probabilities, linear: logits); otherwise rows that are
    non-negative and sum to 1 are probabilities, outputs that lie in [0, 1] (most of them strictly
    inside) without summing to 1 are refused (sigmoids, several softmaxes), and anything else is
    logits. ``"logits"`` or ``"probabilities"`` declares the kind (declared probabilities must be a
    distribution). For a functional or Sequential Keras model ending in a softmax the pre-softmax
    logits are recovered in the same forward pass (``ModelOutputs.logits``; `lira_phi` uses them);
    ``dtype`` records the float dtype the model returned.

    >>> out = model_outputs(lambda b: np.stack([b[:, 0], -b[:, 0]], axis=1), np.ones((5, 3)))
    >>> out.kind, out.values.shape
    ('logits', (5, 2))
    """
    _check_kind(outputs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise TfmiError(f"batch size must be a positive integer, got {batch_size!r}")
    x = check_features(x)
    activation = None
    with_logits = False
    if isinstance(model, keras.Model):
        predict: Callable = model
        activation = last_activation(model)
        _check_input_shape(_keras_input_shape(model), x)
        if activation == "softmax" and outputs != "logits":
            split = _logits_and_outputs(model)
            if split is not None:
                predict, with_logits = split, True
    elif "serving_default" in (getattr(model, "signatures", None) or {}):
        predict = model.signatures["serving_default"]
        _check_input_shape(_signature_input_shape(predict), x)
    elif callable(model):
        def predict(batch: tf.Tensor) -> Any:
            return model(batch.numpy())
    else:
        raise TfmiError(
            f"cannot compute outputs of a {type(model).__name__}: pass a Keras model, a SavedModel "
            "loaded with tf.saved_model.load (with a serving_default signature) or a callable"
        )
    raw = predict_in_batches(predict, x, int(batch_size))
    dtype = raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.dtype(np.float64)
    logits = None
    if with_logits:
        logits, raw = np.split(raw, 2, axis=1)
    values = _check_outputs(raw)
    if len(values) != len(x):
        raise TfmiError(
            f"the model returned {len(values)} output rows for {len(x)} examples: it must return one "
            "row per example"
        )
    kind = _resolve_kind(values, outputs, activation)
    if logits is not None and (kind != "probabilities" or not _reproduces(logits, values)):
        logits = None
    return ModelOutputs(values, kind, logits=logits, dtype=dtype)


def _logits_and_outputs(model: keras.Model) -> Callable | None:
    """For a functional or Sequential Keras model whose last layer applies a softmax, a function of a
    batch returning its pre-softmax logits and its outputs side by side, ``(n, 2 * num_classes)``, from
    one forward pass with the model's current weights; None when the logits cannot be recovered
    (subclassed models, a last layer used twice, other layer types)."""
    layer = model.layers[-1]
    try:
        if len(model.outputs) != 1 or model.outputs[0] is not layer.output:
            return None  # the last layer listed is not the one producing the only output
        trunk = keras.Model(model.inputs, layer.input)  # shares the model's layers and weights
    except (AttributeError, ValueError, TypeError, RuntimeError):
        return None
    if len(trunk.outputs) != 1 or compat.rank(trunk.outputs[0].shape) != 2:
        return None
    if isinstance(layer, keras.layers.Softmax):
        if list(np.ravel(layer.axis)) not in ([-1], [1]):
            return None
        def linear(h: tf.Tensor) -> tf.Tensor:
            return h
    elif isinstance(layer, keras.layers.Activation):
        def linear(h: tf.Tensor) -> tf.Tensor:
            return h
    elif isinstance(layer, keras.layers.Dense):
        def linear(h: tf.Tensor) -> tf.Tensor:
            z = tf.matmul(tf.cast(h, layer.kernel.dtype), layer.kernel)
            return z + layer.bias if layer.use_bias else z
    else:
        return None

    def predict(batch: tf.Tensor) -> tf.Tensor:
        h = trunk(batch, training=False)
        out = layer(h)
        return tf.concat([tf.cast(linear(h), out.dtype), out], axis=1)
    return predict


def _reproduces(logits: np.ndarray, probabilities: np.ndarray) -> bool:
    """True if finite ``logits`` give ``probabilities`` through a softmax (within float32 rounding)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != probabilities.shape or not np.all(np.isfinite(logits)):
        return False
    z = logits - logits.max(axis=1, keepdims=True)
    softmax = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return bool(np.allclose(softmax, probabilities, rtol=0.0, atol=1e-4))


def _keras_input_shape(model: keras.Model) -> tuple | None:
    """The per-example input shape of a single-input Keras model; None when unknown."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError, RuntimeError):  # subclassed models never called on data
        return None
    if not isinstance(shape, tuple) or not all(d is None or isinstance(d, int) for d in shape):
        return None  # several inputs: left to the model
    return shape[1:]


def _signature_input_shape(signature: Any) -> tuple | None:
    """The per-example input shape of a one-input SavedModel signature; None when unknown."""
    try:
        specs = tf.nest.flatten(signature.structured_input_signature)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(specs) != 1 or not isinstance(specs[0], tf.TensorSpec) or specs[0].shape.rank is None:
        return None
    return tuple(specs[0].shape.as_list()[1:])


def _check_input_shape(expected: tuple | None, x: np.ndarray) -> None:
    """Refuse features whose per-example shape the model cannot take (None dimensions match any)."""
    if expected is None:
        return
    got = tuple(x.shape[1:])
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got, strict=True)):
        shown = tuple("any" if d is None else d for d in expected)
        raise TfmiError(
            f"the model takes inputs of shape {shown} per example but the data has {got}: attack it on "
            "the dataset it was trained on"
        )


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp; entries may be -inf as long as each row has a finite one."""
    top = np.max(z, axis=1, keepdims=True)
    return (top + np.log(np.sum(np.exp(z - top), axis=1, keepdims=True)))[:, 0]


def compute_signals(
    outputs: ModelOutputs | np.ndarray, y: np.ndarray, *, kind: str | None = None
) -> Signals:
    """Membership signals for each example from its outputs and true label ``y``.

    ``outputs`` is a `ModelOutputs` (its kind is used) or an ``(n, num_classes)`` array whose
    ``kind`` is ``"logits"``, ``"probabilities"`` or ``None``/``"auto"`` (rows that are non-negative
    and sum to 1 are probabilities). See `Signals` for the definitions.

    >>> s = compute_signals(np.array([[0.9, 0.1], [0.5, 0.5]]), np.array([0, 1]))
    >>> np.round(s.loss, 4).tolist(), s.correct.tolist()
    ([0.1054, 0.6931], [1.0, 0.0])
    >>> big = compute_signals(np.array([[1000.0, 0.0]]), [0], kind="logits")
    >>> float(big.logit_confidence[0]), float(big.loss[0])
    (1000.0, 0.0)
    """
    if isinstance(outputs, ModelOutputs):
        if kind not in (None, "auto", outputs.kind):
            raise TfmiError(
                f"kind={kind!r} contradicts the outputs' kind {outputs.kind!r}: pass kind=None"
            )
        values, resolved = _check_outputs(outputs.values), outputs.kind
    else:
        values = _check_outputs(outputs)
        resolved = _resolve_kind(values, "auto" if kind is None else kind)
    y = check_labels(y, values.shape[1])
    if len(y) != len(values):
        raise TfmiError(f"outputs have {len(values)} rows but labels have {len(y)}: they must match")

    if resolved == "probabilities":
        z = np.log(np.clip(values, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS))
    else:
        z = values
    n, num_classes = z.shape
    rows = np.arange(n)
    log_total = _logsumexp(z)
    log_p = z - log_total[:, None]  # log-softmax: finite for finite z
    p = np.exp(log_p)
    log_p_y = log_p[rows, y]
    p_y = p[rows, y]

    # log(1 - p_y) = logsumexp(z_{i != y}) - logsumexp(z), exact even when p_y rounds to 1
    z_others = z.copy()
    z_others[rows, y] = -np.inf
    log_others_y = _logsumexp(z_others)
    log_1m_p_y = log_others_y - log_total

    # log(1 - p_i) for every i: log1p(-p_i) is accurate where p_i <= 1/2, which holds for all but
    # possibly the arg-max; for the arg-max use the exact leave-one-out logsumexp.
    top = np.argmax(z, axis=1)
    log_1m_p = np.log1p(-np.minimum(p, 0.5))
    z_no_top = z.copy()
    z_no_top[rows, top] = -np.inf
    log_1m_p[rows, top] = _logsumexp(z_no_top) - log_total
    not_y = np.ones_like(z, dtype=bool)
    not_y[rows, y] = False

    return Signals(
        loss=0.0 - log_p_y,  # 0.0 - x, not -x: a perfect fit gives 0.0, not -0.0
        max_confidence=p[rows, top],
        true_class_probability=p_y,
        entropy=0.0 - np.sum(p * log_p, axis=1),
        modified_entropy=-np.exp(log_1m_p_y) * log_p_y - np.sum(np.where(not_y, p * log_1m_p, 0.0), axis=1),
        correct=(top == y).astype(np.float64),
        logit_confidence=z[rows, y] - log_others_y,
    )


def signals_for(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    outputs: str = "auto",
    batch_size: int = PREDICT_BATCH_SIZE,
) -> Signals:
    """`model_outputs` of ``model`` on ``x``, then `compute_signals` against labels ``y``.

    >>> s = signals_for(lambda b: np.stack([b[:, 0], -b[:, 0]], axis=1), np.ones((3, 2)), [0, 0, 1])
    >>> s.correct.tolist()
    [1.0, 1.0, 0.0]
    """
    x_len = len(np.asarray(x)) if np.ndim(x) > 0 else 0
    y_len = len(np.asarray(y)) if np.ndim(y) > 0 else 0
    if x_len != y_len:
        raise TfmiError(f"features have {x_len} rows but labels have {y_len}: they must match")
    return compute_signals(model_outputs(model, x, outputs=outputs, batch_size=batch_size), y)


def lira_phi(outputs: ModelOutputs, y: np.ndarray) -> np.ndarray:
    """LiRA's ``phi`` (`Signals.logit_confidence`) of a target's outputs, by the rule of the module
    docstring: from its logits when it gives them or they were recovered, else from its probabilities.
    Use `shadow_lira_phi` with the same ``outputs`` for the shadows.

    >>> logits = np.array([[40.0, 0.0], [0.0, 2.0]])
    >>> probabilities = ModelOutputs(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), "probabilities")
    >>> float(lira_phi(ModelOutputs(logits, "logits"), [0, 1])[0])
    40.0
    >>> float(lira_phi(probabilities, [0, 1])[0]) < 28  # probabilities saturate near -log(1e-12)
    True
    """
    if not isinstance(outputs, ModelOutputs):
        raise TfmiError(
            f"expected the target's ModelOutputs (from model_outputs), got {type(outputs).__name__}")
    if outputs.kind == "probabilities" and outputs.logits is not None:
        return compute_signals(outputs.logits, y, kind="logits").logit_confidence
    return compute_signals(outputs, y).logit_confidence


def shadow_lira_phi(shadow_logits: np.ndarray, y: np.ndarray, target: ModelOutputs) -> np.ndarray:
    """LiRA's ``phi`` of K shadows' logits ``(K, n, num_classes)`` on the examples with labels ``y``,
    shape ``(K, n)``, obtained the way `lira_phi` obtains the target's ``phi`` from ``target``: from
    the logits, or, when the target only gave probabilities, from a softmax in the target's float
    dtype (``target.precision``), so that a shadow identical to the target gets the target's ``phi``.

    >>> logits = np.array([[[40.0, 0.0], [0.0, 2.0]]])  # one shadow, two examples
    >>> as_probabilities = ModelOutputs(np.full((2, 2), 0.5, np.float32), "probabilities")
    >>> float(shadow_lira_phi(logits, [0, 1], as_probabilities)[0, 0]) < 28
    True
    """
    if not isinstance(target, ModelOutputs):
        raise TfmiError(
            f"expected the target's ModelOutputs (from model_outputs), got {type(target).__name__}")
    shadow_logits = np.asarray(shadow_logits)
    if shadow_logits.ndim != 3:
        raise TfmiError(
            f"shadow logits must have shape (shadows, examples, classes), got {shadow_logits.shape}")
    k, n, c = shadow_logits.shape
    flat = shadow_logits.reshape(k * n, c)
    if target.kind == "logits" or target.logits is not None:
        values, kind = flat, "logits"
    else:
        values = tf.nn.softmax(tf.constant(flat, dtype=tf.as_dtype(target.precision)), axis=-1).numpy()
        kind = "probabilities"
    return compute_signals(values, np.tile(np.asarray(y), k), kind=kind).logit_confidence.reshape(k, n)
