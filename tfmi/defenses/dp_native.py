"""`NativeDPModel`: DP-SGD written with TensorFlow and Keras only (no tensorflow-privacy), for ``fit``.

Each training step splits the batch into microbatches (one example each by default), takes the
gradient of every microbatch's mean loss, clips it to an L2 norm of at most ``l2_norm_clip``, sums
the clipped gradients, adds Gaussian noise of standard deviation ``noise_multiplier * l2_norm_clip``
and divides by the number of microbatches, as tensorflow-privacy's ``DPModel`` does; then the
optimizer steps. Two ways to get the clipped sum (``method``):

- ``"vectorized"``: every microbatch's gradient by ``tf.vectorized_map``. Any layer.
- ``"fast"`` (ghost norms): one forward and one backward pass give each microbatch's gradient norm
  from the trainable layers' inputs and pre-activation gradients, without per-example gradients; a
  second backward pass through the same tape, with the losses weighted by the clip factors, gives
  the clipped sum. Every layer holding trainable weights must be a ``Dense`` or a channels-last,
  ungrouped, undilated ``Conv2D``, called once. Random layers (``Dropout``) are fine: norms and
  gradients come from the same forward pass.
- ``"auto"`` (default): ``"fast"`` where the model allows it, else ``"vectorized"``.

Noise comes from a stateless generator seeded by ``(seed, optimizer step)``: a run is reproducible
given its seed, and anyone who knows the seed can subtract the noise (keep it secret for privacy).
The loss is the model's own (cross-entropy of integer labels from logits); ``compile`` takes an
optimizer and metrics. Regularization losses (``model.losses``) add their gradient unclipped, as in
tensorflow-privacy. ``BatchNormalization`` is refused: it mixes a batch's examples. With an explicit
``num_microbatches``, a batch it does not divide is padded with zero-weight rows (a final partial
batch); the logged loss and metrics count only the real rows. One replica only.

**Partial batches.** ``batch_size`` (the nominal batch, as `make_dp_model` passes it) makes every batch
of fewer examples, an epoch's final partial batch, count as ``batch_size`` examples when one example
is one microbatch: its noised sum is divided by ``batch_size``, not by its own size. Dividing by the
few examples of a small final batch multiplies that step's noise (50 times for 2 examples of a
nominal 100) and can wreck training once per epoch, depending only on how many records a run trains
on; Opacus likewise divides by the expected batch size. The privacy is unchanged (the same noise on
the same clipped sum, rescaled). ``None``: divide by the batch's own size, as tensorflow-privacy does.

>>> import numpy as np
>>> from tfmi.models import build_model
>>> x, y = np.random.default_rng(0).random((40, 6), np.float32), np.arange(40) % 3
>>> model = NativeDPModel(build_model("mlp", (6,), 3, seed=0), noise_multiplier=1.0, seed=0)
>>> model.compile(optimizer="sgd", metrics=["accuracy"])
>>> history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
>>> model.method, sorted(history.history)
('fast', ['accuracy', 'loss'])
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat
from tfmi.defenses.base import DefendedModel, inner_from_config
from tfmi.errors import TfmiError
from tfmi.validation import check_number

__all__ = ["METHODS", "ClippedGradients", "NativeDPModel", "check_dp_model", "fast_clipping_blockers"]

METHODS: tuple[str, ...] = ("auto", "fast", "vectorized")


class ClippedGradients(NamedTuple):
    """One batch's clipped gradients: ``sums`` (one tensor per trainable variable, the sum over the
    microbatches), ``norms`` (each microbatch's gradient norm before clipping), ``microbatches``
    (the noise divisor: their number, or the nominal batch size for a smaller batch of one-example
    microbatches) and ``logits`` (the batch's training-mode outputs)."""

    sums: list
    norms: tf.Tensor
    microbatches: tf.Tensor
    logits: tf.Tensor


# --------------------------------------------------------------------------------------------------
# Which models: checks and the fast path's requirements
# --------------------------------------------------------------------------------------------------


def _all_layers(layer) -> list:
    """``layer``'s layers, nested models' and wrappers' included (Keras 3 models have no
    ``submodules``)."""
    found = []
    for child in [*getattr(layer, "layers", ()), *filter(None, [getattr(layer, "layer", None)])]:
        found += [child, *_all_layers(child)]
    return found


def check_dp_model(model: Any) -> None:
    """Raise :class:`TfmiError` unless ``model`` is a functional classifier returning logits without
    ``BatchNormalization``: what DP-SGD can train.

    >>> from tfmi.models import build_model
    >>> check_dp_model(build_model("cnn", (8, 8, 1), 10))
    """
    if not isinstance(model, keras.Model) or not compat.is_functional(model):
        raise TfmiError(
            "DP-SGD needs a functional Keras model (keras.Model(inputs, outputs) or Sequential), "
            f"got {type(model).__name__}: build it with tfmi.models.build_model"
        )
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise TfmiError(
            "DP-SGD needs a classifier with one output of shape (batch, classes), "
            f"got outputs {[tuple(o.shape) for o in model.outputs]}"
        )
    batch_norms = [m.name for m in _all_layers(model) if isinstance(m, keras.layers.BatchNormalization)]
    if batch_norms:
        raise TfmiError(
            f"DP-SGD cannot train BatchNormalization layers ({', '.join(batch_norms[:3])}): they mix the "
            "examples of a batch, so per-example gradients are undefined; use a model without them "
            "(mlp, cnn, alexnet)"
        )
    last = model.layers[-1]
    if getattr(last, "activation", None) is keras.activations.softmax or isinstance(
        last, keras.layers.Softmax
    ):
        raise TfmiError(f"the model's last layer {last.name!r} applies softmax: DP-SGD here expects logits")


def conv2d_fast_clippable(layer: keras.layers.Conv2D) -> bool:
    """Whether ghost-norm clipping handles this Conv2D: channels-last, ungrouped, undilated."""
    return (
        layer.data_format == "channels_last"
        and getattr(layer, "groups", 1) == 1
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.padding in ("same", "valid")
    )


def fast_clipping_blockers(model: keras.Model) -> list[str]:
    """Why the native fast (ghost-norm) clipping cannot handle ``model``: empty when it can.

    >>> from tfmi.models import build_model
    >>> fast_clipping_blockers(build_model("cnn", (8, 8, 1), 10))
    []
    """
    blockers = []
    probed = 0
    for layer in model.layers:
        if not layer.trainable_weights:
            continue
        name = f"{layer.__class__.__name__} {layer.name!r}"
        if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
            blockers.append(f"{name} (only Dense and Conv2D layers may hold trainable weights)")
        elif isinstance(layer, keras.layers.Conv2D) and not conv2d_fast_clippable(layer):
            blockers.append(f"{name} (only channels-last, ungrouped, undilated Conv2D is supported)")
        elif getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            blockers.append(f"{name} (LoRA or quantized)")
        elif len(getattr(layer, "_inbound_nodes", ())) != 1:
            blockers.append(f"{name} (called more than once)")
        else:
            probed += len(layer.trainable_weights)
    if not blockers and probed != len(model.trainable_weights):
        blockers.append("trainable weights outside the model's own layers")
    return blockers


def _resolve_method(model: keras.Model, method: str) -> str:
    if method not in METHODS:
        raise TfmiError(f"unknown DP-SGD method {method!r}: use one of {', '.join(METHODS)}")
    if method == "vectorized":
        return method
    blockers = fast_clipping_blockers(model)
    if not blockers:
        return "fast"
    if method == "fast":
        raise TfmiError(
            f"fast gradient clipping cannot handle {'; '.join(blockers[:3])}: use method 'auto' "
            "(falls back to 'vectorized') or 'vectorized'"
        )
    return "vectorized"


# --------------------------------------------------------------------------------------------------
# Ghost norms: per-microbatch squared gradient norms of Dense and Conv2D layers
# --------------------------------------------------------------------------------------------------


def _probe(model: keras.Model) -> SimpleNamespace:
    """A functional model sharing ``model``'s layers that also outputs every trainable layer's input
    and output (kept in a namespace, so that Keras does not track it as a sub-model)."""
    layers = [layer for layer in model.layers if layer.trainable_weights]
    tensors, index = [], {}

    def position(tensor) -> int:
        if id(tensor) not in index:
            index[id(tensor)] = len(tensors)
            tensors.append(tensor)
        return index[id(tensor)]

    logits = position(model.outputs[0])
    inputs = [position(layer.input) for layer in layers]
    outputs = [position(layer.output) for layer in layers]
    probe = keras.Model(model.inputs, tensors, name=f"{model.name}_probe")
    return SimpleNamespace(model=probe, layers=layers, logits=logits, inputs=inputs, outputs=outputs)


def _pre_activation_gradient(layer, inputs: tf.Tensor, outputs: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """The loss gradient at ``layer``'s pre-activations, from the gradient at its outputs."""
    activation = layer.activation
    if activation is None or activation is keras.activations.linear:
        return grads
    if activation is keras.activations.relu:
        return grads * tf.cast(outputs > 0, grads.dtype)
    if activation is keras.activations.tanh:
        return grads * (1.0 - tf.square(outputs))
    if activation is keras.activations.sigmoid:
        return grads * outputs * (1.0 - outputs)
    kernel = tf.cast(layer.kernel, inputs.dtype)
    if isinstance(layer, keras.layers.Conv2D):
        z = tf.nn.conv2d(inputs, kernel, list(layer.strides), layer.padding.upper())
    else:
        z = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
    if layer.use_bias:
        z = z + tf.cast(layer.bias, inputs.dtype)
    with tf.GradientTape() as tape:
        tape.watch(z)
        activated = activation(z)
    return tape.gradient(activated, z, output_gradients=grads)


def _by_position(tensor: tf.Tensor) -> tf.Tensor:
    """``(batch, positions, channels)``, with the position count static where the shape says it."""
    inner = tensor.shape[1:-1]
    if all(d is not None for d in inner):
        return tf.reshape(tensor, [-1, int(np.prod(inner, dtype=np.int64)), tensor.shape[-1]])
    return tf.reshape(tensor, [tf.shape(tensor)[0], -1, tensor.shape[-1]])


def _layer_rows(layer, inputs: tf.Tensor) -> tf.Tensor:
    """``(batch, positions, entries)``: the rows each pre-activation is a dot product of (im2col)."""
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        inputs = tf.image.extract_patches(
            inputs, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, 1, 1, 1],
            padding=layer.padding.upper(),
        )
    rows = _by_position(inputs)
    if layer.use_bias:
        rows = tf.concat([rows, tf.ones_like(rows[..., :1])], axis=-1)
    return rows


def _squared_norms(rows: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """``|| rows[m]^T grads[m] ||_F^2`` for every m, by the cheaper of two formulas."""
    positions, entries, filters = rows.shape[1], rows.shape[-1], grads.shape[-1]
    if positions == 1:
        return tf.reduce_sum(tf.square(rows), [1, 2]) * tf.reduce_sum(tf.square(grads), [1, 2])

    def by_gram() -> tf.Tensor:
        gram = tf.einsum("btk,bsk->bts", rows, rows) * tf.einsum("btc,bsc->bts", grads, grads)
        return tf.reduce_sum(gram, [1, 2])

    def explicit() -> tf.Tensor:
        return tf.reduce_sum(tf.square(tf.einsum("btk,btc->bkc", rows, grads)), [1, 2])

    if positions is not None:
        return by_gram() if positions * positions < entries * filters else explicit()
    count = tf.shape(rows)[1]
    return tf.cond(count * count < entries * filters, by_gram, explicit)


def _ghost_squared_norms(layer, inputs, outputs, grads, microbatches: tf.Tensor) -> tf.Tensor:
    """Squared norm of each microbatch's gradient for ``layer``'s kernel and bias."""
    inputs, outputs, grads = (tf.cast(t, tf.float32) for t in (inputs, outputs, grads))
    pre_grads = _pre_activation_gradient(layer, inputs, outputs, grads)
    rows, pre_grads = _layer_rows(layer, inputs), _by_position(pre_grads)
    if microbatches is not None:  # a microbatch's rows, concatenated
        rows = tf.reshape(rows, [microbatches, -1, rows.shape[-1]])
        pre_grads = tf.reshape(pre_grads, [microbatches, -1, pre_grads.shape[-1]])
    return _squared_norms(rows, pre_grads)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def _cross_entropies(y: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))


def _variable_gradients(tape: tf.GradientTape, target, variables: list, **kwargs) -> list:
    """``tape.gradient`` with zeros for unconnected variables (``UnconnectedGradients.ZERO`` fails on
    Keras 3 variables, whose ``dtype`` is a string)."""
    grads = tape.gradient(target, variables, **kwargs)
    pairs = zip(grads, variables, strict=True)
    return [tf.zeros(v.shape, tf.as_dtype(v.dtype)) if g is None else g for g, v in pairs]


def _pad_rows(tensor: tf.Tensor, pad: tf.Tensor) -> tf.Tensor:
    tensor = tf.convert_to_tensor(tensor)
    return tf.pad(tensor, [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1))


def _split(tensor: tf.Tensor, microbatches: tf.Tensor) -> tf.Tensor:
    """``(microbatches, batch / microbatches, ...)``."""
    return tf.reshape(tensor, tf.concat([[microbatches, -1], tf.shape(tensor)[1:]], axis=0))


@keras.saving.register_keras_serializable(package="tfmi")
class NativeDPModel(DefendedModel):
    """DP-SGD training of a functional classifier that returns logits (see the module docstring).

    ``l2_norm_clip``: the per-microbatch gradient norm bound C; ``noise_multiplier``: the noise's
    standard deviation over C (0: no noise); ``num_microbatches``: ``None`` clips each example's
    gradient, else the batch is split into this many microbatches; ``method``: ``"auto"``,
    ``"fast"`` or ``"vectorized"``; ``seed``: the noise's seed, ``None`` draws one from NumPy's
    global generator (reproducible after ``keras.utils.set_random_seed``); ``batch_size``: the
    nominal batch, the noise divisor of smaller batches (see the module docstring). The model shares its
    weights with ``model``; ``predict``, ``evaluate`` and calls behave as ``model`` does. ``compile``
    takes an optimizer and metrics (no loss) and defaults to ``jit_compile=False``.

    >>> from tfmi.models import build_model
    >>> NativeDPModel(build_model("mlp", (8,), 3, dropout=0.5), seed=0).method
    'fast'
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        l2_norm_clip: float = 1.0,
        noise_multiplier: float = 1.0,
        num_microbatches: int | None = None,
        method: str = "auto",
        seed: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ):
        check_dp_model(model)
        if batch_size is not None:
            batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        self.batch_size = batch_size
        self.l2_norm_clip = check_number("l2_norm_clip", l2_norm_clip, low=0, low_inclusive=False)
        self.noise_multiplier = check_number("noise_multiplier", noise_multiplier, low=0)
        if num_microbatches is not None:
            num_microbatches = check_number("num_microbatches", num_microbatches, low=1, integer=True)
        self.num_microbatches = num_microbatches
        self.method = _resolve_method(model, method)
        if seed is None:
            seed = int(np.random.randint(2**31 - 1))
        super().__init__(model, outputs="logits", seed=seed, **kwargs)
        self._ghost = _probe(model) if self.method == "fast" else None

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        kwargs.setdefault("jit_compile", False)  # vectorized_map and the probe are not tested under XLA
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    # --- clipping ---------------------------------------------------------------------------

    def clipped_gradients(self, x, y, sample_weight=None) -> ClippedGradients:
        """The clipped per-microbatch gradients of one batch, summed (no noise), in training mode.

        A batch that ``num_microbatches`` does not divide is padded with zero-weight rows first.
        """
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        rows = tf.shape(y)[0]
        weights = tf.ones([rows]) if sample_weight is None else tf.cast(tf.reshape(sample_weight, [-1]),
                                                                         tf.float32)
        microbatches = self.num_microbatches
        if microbatches is not None:
            pad = tf.math.floormod(-rows, microbatches)
            x = tf.nest.map_structure(lambda t: _pad_rows(t, pad), x)
            y, weights = _pad_rows(y, pad), _pad_rows(weights, pad)
        clip = self._fast_clip if self.method == "fast" else self._vectorized_clip
        sums, norms, logits = clip(x, y, weights)
        count = tf.shape(norms)[0]
        if microbatches is None and self.batch_size is not None:  # a partial batch counts as a full one
            count = tf.maximum(count, self.batch_size)
        return ClippedGradients(sums, norms, count, logits[:rows])

    def _microbatch_losses(self, y: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        losses = _cross_entropies(y, logits) * weights
        if self.num_microbatches is None:
            return losses
        return tf.reduce_mean(tf.reshape(losses, [self.num_microbatches, -1]), axis=1)

    def _clip_factors(self, norms: tf.Tensor) -> tf.Tensor:
        clip = tf.constant(self.l2_norm_clip, norms.dtype)
        return clip / tf.maximum(clip, norms)

    def _fast_clip(self, x, y, weights):
        ghost, variables = self._ghost, self.inner.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            outputs = ghost.model(x, training=True)
            outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
            losses = self._microbatch_losses(y, outputs[ghost.logits], weights)
        layer_outputs = [outputs[i] for i in ghost.outputs]
        output_grads = tape.gradient(losses, layer_outputs,
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
        squared = [
            _ghost_squared_norms(layer, outputs[i], outputs[o], g, self.num_microbatches)
            for layer, i, o, g in zip(ghost.layers, ghost.inputs, ghost.outputs, output_grads, strict=True)
        ]
        norms = tf.sqrt(tf.add_n(squared))
        factors = tf.stop_gradient(self._clip_factors(norms))
        sums = _variable_gradients(tape, losses, variables, output_gradients=factors)
        del tape
        return sums, norms, outputs[ghost.logits]

    def _vectorized_clip(self, x, y, weights):
        variables = self.inner.trainable_variables
        microbatches = self.num_microbatches if self.num_microbatches is not None else tf.shape(y)[0]

        def clipped(batch):
            x_mb, y_mb, w_mb = batch
            with tf.GradientTape() as tape:
                logits = self.inner(x_mb, training=True)
                loss = tf.reduce_mean(_cross_entropies(y_mb, logits) * w_mb)
            grads = _variable_gradients(tape, loss, variables)
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))  # pfor has no L2Loss
            factor = self._clip_factors(norm)
            return [g * tf.cast(factor, g.dtype) for g in grads], norm, logits

        split = (tf.nest.map_structure(lambda t: _split(t, microbatches), x),
                 _split(y, microbatches), _split(weights, microbatches))
        grads, norms, logits = tf.vectorized_map(clipped, split)
        sums = [tf.reduce_sum(g, axis=0) for g in grads]
        return sums, norms, tf.reshape(logits, [-1, logits.shape[-1]])

    # --- the step ---------------------------------------------------------------------------

    def noisy_mean(self, sums: list, microbatches: tf.Tensor) -> list:
        """``(sum + N(0, (noise_multiplier * l2_norm_clip)^2)) / microbatches`` per variable, with
        noise seeded by the model's seed and the optimizer step."""
        std = self.noise_multiplier * self.l2_norm_clip
        seed = self.step_seed()
        means = []
        for i, total in enumerate(sums):
            if std > 0:
                noise_seed = tf.random.experimental.stateless_fold_in(seed, i)
                total = total + tf.random.stateless_normal(tf.shape(total), noise_seed, stddev=std,
                                                           dtype=total.dtype)
            means.append(total / tf.cast(microbatches, total.dtype))
        return means

    def train_step(self, data):
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise TfmiError("NativeDPModel trains on one replica: fit it outside a multi-device strategy")
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int32)
        clipped = self.clipped_gradients(x, y, sample_weight)
        grads = self.noisy_mean(clipped.sums, clipped.microbatches)
        variables = self.inner.trainable_variables
        regularization = tf.constant(0.0)
        if self.inner.losses:  # weight penalties do not depend on the data: unclipped, noiseless
            with tf.GradientTape() as tape:
                regularization = tf.add_n([tf.cast(v, tf.float32) for v in self.inner.losses])
            extra = _variable_gradients(tape, regularization, variables)
            grads = [g + tf.cast(e, g.dtype) for g, e in zip(grads, extra, strict=True)]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        targets = self.weighted_targets(y, sample_weight)
        rows = tf.cast(tf.shape(y)[0], tf.float32)  # a batch weighs its size, as in Keras's own loss
        self.loss_tracker.update_state(self.cross_entropy(targets, clipped.logits) + regularization, rows)
        compat.update_compiled_metrics(self, y, clipped.logits)
        return compat.metric_results(self, [self.loss_tracker, *compat.compiled_metrics(self)])

    # --- saving -----------------------------------------------------------------------------

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("outputs")
        return {
            **config, "l2_norm_clip": self.l2_norm_clip, "noise_multiplier": self.noise_multiplier,
            "num_microbatches": self.num_microbatches, "method": self.method, "batch_size": self.batch_size,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> NativeDPModel:
        inner, config = inner_from_config(config, custom_objects)
        return cls(inner, **config)
