"""DP-SGD for ``model.fit``: tensorflow-privacy on Keras 2, tfmi's own implementation on Keras 3.

Differentially private SGD (Abadi et al. 2016) clips every example's gradient to an L2 norm of at most
``l2_norm_clip`` and adds Gaussian noise of standard deviation ``noise_multiplier * l2_norm_clip`` to
their sum before each optimizer step. It bounds how much any one training record can change the
model, and so how well a membership-inference attack can do.

:func:`make_dp_model` turns a zoo model (any functional Keras model returning logits) into a compiled
model ready for ``fit`` and returns, with it, the :class:`DPAccounting` of the run it was built for.

**Keras 2 (the reference stack)**: tensorflow-privacy, along one of four paths (``DPSGDConfig.path``):

- ``"fast"``: tensorflow-privacy's ``DPModel`` with fast ("ghost") gradient clipping: per-example
  gradient *norms* come from one extra forward and backward pass, without materializing per-example
  gradients. Every trainable layer must be in the layer registry: tensorflow-privacy 0.9.0 registers
  ``Dense`` and ``Embedding``; tfmi adds ``Conv2D`` (channels-last, ungrouped, undilated). No random
  layers (``Dropout``...): the norms and the gradients come from two different forward passes.
- ``"dpmodel"``: ``DPModel`` without the registry: per-example gradients by ``tf.vectorized_map``.
  Any layer.
- ``"vectorized"``: the ``VectorizedDPKeras*Optimizer``: per-example gradients from a Jacobian.
- ``"microbatched"``: the ``DPKeras*Optimizer``: a Jacobian, then a loop over the microbatches.
- ``"auto"`` (default): ``"fast"`` where the model allows it, else ``"dpmodel"``: the fastest paths
  measured on CPU. Per epoch, against plain ``fit`` (batch 64, 2 cores): 2.3x (fast) and 12x (dpmodel)
  on the Location30 MLP, 3.1x and 4.6x on the CIFAR-10 ``cnn``; the DP optimizers take 21-26x (MLP)
  and ~70x (CNN).

**Keras 3 (the current stack)**, where tensorflow-privacy does not run: tfmi's
:class:`~tfmi.defenses.dp_native.NativeDPModel`, which clips and noises as tensorflow-privacy's
``DPModel`` does. ``"fast"`` is its ghost-norm clipping (trainable layers ``Dense`` or ``Conv2D`` as
above; random layers allowed, as norms and gradients share one forward pass); ``"dpmodel"``,
``"vectorized"`` and ``"microbatched"``, which compute the same clipped gradients, all run its
``tf.vectorized_map`` clipping, recorded as ``"vectorized"``; ``"auto"`` picks ``"fast"`` where it
applies, else ``"vectorized"``. tensorflow-privacy is imported only on Keras 2.

``BatchNormalization`` is refused on every path: it mixes the examples of a batch, so per-example
gradients (and the privacy guarantee) are not defined.

**Privacy accounting** (:func:`dp_epsilon`, :func:`noise_for_epsilon`) follows tensorflow-privacy's
``compute_dp_sgd_privacy_statement``: add-or-remove-one-example adjacency, Poisson subsampling with
rate ``batch_size / num_examples`` for ``epochs * ceil(num_examples / batch_size)`` steps (the
optimizer steps ``fit`` takes; tensorflow-privacy's statement counts ``ceil(epochs * n / batch)``,
slightly fewer, so its epsilon is slightly smaller), the
sensitivity doubled (noise halved) when a microbatch holds more than one example, and the RDP
accountant of Google's ``dp_accounting`` (or PLD). ``fit`` shuffles and batches rather than Poisson
samples, as everyone does; this is tensorflow-privacy's "epsilon assuming Poisson sampling".

**Partial batches.** ``fit`` ends an epoch with a smaller batch when ``batch_size`` does not divide the
data. tensorflow-privacy divides a batch's noised sum by its number of microbatches, with one example
per microbatch (``num_microbatches=None``, the default) the batch's own size: a final batch of 2
examples of a nominal 100 gets 50 times the noise of the others, once per epoch, which can wreck
training depending only on how many records a run has (on Location30 with batch 100, SGD and noise
0.3: shadows of 1,502 records collapsed to chance on every seed tried; the same shadow on 1,500 reached
0.999). So tfmi divides every batch by the nominal ``batch_size`` given to :func:`make_dp_model`: a
smaller batch is padded with zero-weight rows up to it (Keras 2), or its sum divided by it (Keras 3),
as Opacus divides by the expected batch size. The privacy is that of the same noise on the same
clipped sum. With an explicit ``num_microbatches``, tensorflow-privacy would fail on a batch it does not
divide, so tfmi pads such a batch with zero-weight rows up to a multiple of it. Padding rows add
nothing to the gradient (each real example still sits in exactly one clipped microbatch), but on
Keras 2's ``fast``/``dpmodel`` paths ``fit``'s running loss for that batch counts them (the native
model counts only the real rows).

>>> config = DPSGDConfig(noise_multiplier=1.0)
>>> round(dp_epsilon(1500, 64, 30, config.noise_multiplier, 1e-5), 1)
8.4
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat
from tfmi.defenses.config import DP_PATHS
from tfmi.defenses.dp_native import (
    NativeDPModel,
    check_dp_model,
    conv2d_fast_clippable,
    fast_clipping_blockers,
)
from tfmi.errors import TfmiError

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_DELTA",
    "DPAccounting",
    "DPSGDConfig",
    "OPTIMIZERS",
    "PATHS",
    "default_delta",
    "dp_epsilon",
    "make_dp_model",
    "make_layer_registry",
    "noise_for_epsilon",
    "resolve_path",
]

PATHS: tuple[str, ...] = DP_PATHS
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
ACCOUNTANTS: tuple[str, ...] = ("RDP", "PLD")
DEFAULT_DELTA = 1e-5

# Layers whose output is random at training time: the fast path's two forward passes would disagree.
_STOCHASTIC_LAYERS = (
    keras.layers.Dropout,  # and SpatialDropout1D/2D/3D
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)
_ASSUMPTIONS = (
    "example-level DP, add-or-remove-one adjacency, Poisson subsampling at rate batch_size/num_examples "
    "for epochs*ceil(num_examples/batch_size) steps, the optimizer steps fit takes "
    "(as tensorflow-privacy's compute_dp_sgd_privacy_statement, which counts ceil(epochs*n/batch))"
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1


def default_delta(num_examples: int) -> float:
    """The delta used when none is given: ``min(1e-5, 1 / (10 * num_examples))``.

    Delta bounds the probability that the epsilon guarantee fails; it must be well below ``1/n``
    (a mechanism that publishes one random record outright has delta ``1/n``), hence the factor 10.

    >>> default_delta(1500), default_delta(1_000_000)
    (1e-05, 1e-07)
    """
    if not _is_positive_int(num_examples):
        raise TfmiError(f"the number of examples must be a positive integer, got {num_examples!r}")
    return min(DEFAULT_DELTA, 1.0 / (10 * int(num_examples)))


# --------------------------------------------------------------------------------------------------
# Configuration and accounting records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPSGDConfig:
    """DP-SGD hyper-parameters. Give exactly one of ``noise_multiplier`` and ``target_epsilon``.

    - ``l2_norm_clip``: the per-example (per-microbatch) gradient norm bound C;
    - ``noise_multiplier``: noise standard deviation over C (0 adds no noise: no privacy);
    - ``target_epsilon``: instead of a noise multiplier, the epsilon to reach at the end of training
      (pass ``noise_multiplier=None``); the noise is calibrated by :func:`noise_for_epsilon`;
    - ``delta``: default :func:`default_delta` of the number of training examples;
    - ``optimizer``: ``"adam"`` or ``"sgd"`` (momentum 0.9, as ``tfmi.training``);
    - ``path``: how clipped gradients are computed, one of :data:`PATHS` (see the module docstring);
    - ``num_microbatches``: ``None`` clips every example's gradient (the default, and the best
      privacy for the noise); else the batch is split into this many microbatches, each clipped as a
      whole, which must divide the batch size;
    - ``accountant``: ``"RDP"`` or ``"PLD"`` (tighter, ~10x slower to compute).

    >>> DPSGDConfig(noise_multiplier=None, target_epsilon=3.0).target_epsilon
    3.0
    >>> DPSGDConfig(target_epsilon=3.0)
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: give either noise_multiplier or target_epsilon, not both: ...
    """

    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = 1.0
    target_epsilon: float | None = None
    delta: float | None = None
    optimizer: str = "adam"
    path: str = "auto"
    num_microbatches: int | None = None
    accountant: str = "RDP"

    def __post_init__(self) -> None:
        clip = self.l2_norm_clip
        if not (_is_number(clip) and math.isfinite(clip) and clip > 0):
            raise TfmiError(f"l2_norm_clip must be a positive number, got {clip!r} (1.0 is a usual choice)")
        noise, target = self.noise_multiplier, self.target_epsilon
        if noise is not None and target is not None:
            raise TfmiError(
                f"give either noise_multiplier or target_epsilon, not both: pass noise_multiplier=None "
                f"with target_epsilon={target!r}"
            )
        if noise is None and target is None:
            raise TfmiError("give a noise_multiplier (e.g. 1.0) or a target_epsilon (e.g. 3.0)")
        if noise is not None and not (_is_number(noise) and math.isfinite(noise) and noise >= 0):
            raise TfmiError(f"noise_multiplier must be a number >= 0, got {noise!r}")
        if target is not None and not (_is_number(target) and math.isfinite(target) and target > 0):
            raise TfmiError(f"target_epsilon must be a positive number, got {target!r}")
        if self.delta is not None and not (_is_number(self.delta) and 0 < self.delta < 1):
            raise TfmiError(
                f"delta must be a number strictly between 0 and 1, got {self.delta!r} "
                "(leave it None for min(1e-5, 1/(10 n)))"
            )
        if self.optimizer not in OPTIMIZERS:
            raise TfmiError(f"unknown optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.path not in PATHS:
            raise TfmiError(f"unknown DP-SGD path {self.path!r}: use one of {', '.join(PATHS)}")
        if self.num_microbatches is not None and not _is_positive_int(self.num_microbatches):
            raise TfmiError(
                f"num_microbatches must be a positive integer or None (one example per microbatch), "
                f"got {self.num_microbatches!r}"
            )
        if self.accountant not in ACCOUNTANTS:
            raise TfmiError(f"unknown accountant {self.accountant!r}: use one of {', '.join(ACCOUNTANTS)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DPAccounting:
    """The privacy guarantee of one DP-SGD run, as recorded in a model's JSON sidecar.

    ``epsilon`` is ``inf`` when no noise is added (``to_dict`` writes it as ``None``, valid JSON).
    """

    noise_multiplier: float
    l2_norm_clip: float
    epsilon: float
    delta: float
    accountant: str
    num_examples: int
    batch_size: int
    epochs: float
    path: str
    num_microbatches: int | None = None
    optimizer: str = "adam"
    target_epsilon: float | None = None

    @property
    def used_microbatching(self) -> bool:
        """Whether a microbatch holds more than one example (which doubles the sensitivity)."""
        return _used_microbatching(self.batch_size, self.num_microbatches)

    def to_dict(self) -> dict:
        """A JSON-ready dict (``epsilon`` ``None`` when infinite), with the accounting assumptions.

        >>> acc = DPAccounting(1.0, 1.0, 8.3, 1e-5, "RDP", 1500, 64, 30, "fast")
        >>> import json; json.loads(json.dumps(acc.to_dict()))["epsilon"]
        8.3
        """
        record = asdict(self)
        record["epsilon"] = float(self.epsilon) if math.isfinite(self.epsilon) else None
        record["used_microbatching"] = self.used_microbatching
        record["assumptions"] = _ASSUMPTIONS
        return record


def _used_microbatching(batch_size: int, num_microbatches: int | None) -> bool:
    return num_microbatches is not None and batch_size // num_microbatches > 1


# --------------------------------------------------------------------------------------------------
# Privacy accounting
# --------------------------------------------------------------------------------------------------


def _check_accounting_inputs(num_examples, batch_size, epochs, delta, accountant) -> None:
    if not _is_positive_int(num_examples):
        raise TfmiError(f"the number of examples must be a positive integer, got {num_examples!r}")
    if not _is_positive_int(batch_size):
        raise TfmiError(f"batch size must be a positive integer, got {batch_size!r}")
    if batch_size > num_examples:
        raise TfmiError(
            f"batch size {batch_size} exceeds the {num_examples} training examples: use a smaller batch"
        )
    if not (_is_number(epochs) and math.isfinite(epochs) and epochs > 0):
        raise TfmiError(f"epochs must be a positive number, got {epochs!r}")
    if not (_is_number(delta) and 0 < delta < 1):
        raise TfmiError(f"delta must be a number strictly between 0 and 1, got {delta!r}")
    if accountant not in ACCOUNTANTS:
        raise TfmiError(f"unknown accountant {accountant!r}: use one of {', '.join(ACCOUNTANTS)}")


def _dp_sgd_event(num_examples: int, batch_size: int, epochs: float, noise: float, used_microbatching: bool):
    """The DpEvent of tensorflow-privacy's statement: Poisson-subsampled Gaussian, composed per step."""
    import dp_accounting

    q = batch_size / num_examples
    steps = int(math.ceil(epochs * math.ceil(num_examples / batch_size)))  # the steps fit takes
    sigma = noise / 2 if used_microbatching else noise  # microbatches double the sensitivity
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def _fresh_accountant(accountant: str):
    import dp_accounting

    return dp_accounting.rdp.RdpAccountant() if accountant == "RDP" else dp_accounting.pld.PLDAccountant()


def dp_epsilon(
    num_examples: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float,
    *,
    used_microbatching: bool = False,
    accountant: str = "RDP",
) -> float:
    """Epsilon of DP-SGD at ``delta`` (``inf`` without noise), as tensorflow-privacy accounts it.

    ``used_microbatching``: microbatches of more than one example were clipped as a whole.

    >>> round(dp_epsilon(1500, 64, 30, 1.0, 1e-5), 1), round(dp_epsilon(1500, 64, 30, 2.0, 1e-5), 2)
    (8.4, 2.82)
    """
    _check_accounting_inputs(num_examples, batch_size, epochs, delta, accountant)
    if not (_is_number(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise TfmiError(f"noise_multiplier must be a number >= 0, got {noise_multiplier!r}")
    if noise_multiplier == 0:
        return math.inf
    event = _dp_sgd_event(num_examples, batch_size, epochs, float(noise_multiplier), used_microbatching)
    return float(_fresh_accountant(accountant).compose(event).get_epsilon(delta))


def noise_for_epsilon(
    num_examples: int,
    batch_size: int,
    epochs: float,
    target_epsilon: float,
    delta: float,
    *,
    used_microbatching: bool = False,
    accountant: str = "RDP",
) -> float:
    """The smallest noise multiplier whose :func:`dp_epsilon` is at most ``target_epsilon``.

    The search is ``dp_accounting.calibrate_dp_mechanism``, the call behind tensorflow-privacy's
    ``compute_noise_from_budget``, on the very event :func:`dp_epsilon` accounts (so the two round-trip).

    >>> noise = noise_for_epsilon(1500, 64, 30, 3.0, 1e-5)
    >>> round(noise, 2), dp_epsilon(1500, 64, 30, noise, 1e-5) <= 3.0
    (1.91, True)
    """
    import dp_accounting

    _check_accounting_inputs(num_examples, batch_size, epochs, delta, accountant)
    if not (_is_number(target_epsilon) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise TfmiError(f"target_epsilon must be a positive number, got {target_epsilon!r}")
    try:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                lambda: _fresh_accountant(accountant),
                lambda sigma: _dp_sgd_event(num_examples, batch_size, epochs, sigma, used_microbatching),
                float(target_epsilon),
                float(delta),
                dp_accounting.LowerEndpointAndGuess(0.0, 1.0),
                tol=1e-4 if accountant == "RDP" else 1e-3,
            )
        )
    except (ValueError, dp_accounting.mechanism_calibration.NoBracketIntervalFoundError,
            dp_accounting.mechanism_calibration.NoOptimumFoundError) as err:
        raise TfmiError(
            f"no noise multiplier reaches epsilon {target_epsilon} at delta {delta} ({err}): "
            "ask for a larger epsilon"
        ) from err


# --------------------------------------------------------------------------------------------------
# tensorflow-privacy, imported lazily (importing it takes seconds)
# --------------------------------------------------------------------------------------------------


@functools.cache
def _tfp() -> SimpleNamespace:
    with contextlib.redirect_stdout(io.StringIO()):
        from tensorflow_privacy.privacy.fast_gradient_clipping import layer_registry
        from tensorflow_privacy.privacy.keras_models import dp_keras_model
        from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras, dp_optimizer_keras_vectorized
    return SimpleNamespace(
        DPModel=dp_keras_model.DPModel,
        layer_registry=layer_registry,
        optimizers={
            ("vectorized", "adam"): dp_optimizer_keras_vectorized.VectorizedDPKerasAdamOptimizer,
            ("vectorized", "sgd"): dp_optimizer_keras_vectorized.VectorizedDPKerasSGDOptimizer,
            ("microbatched", "adam"): dp_optimizer_keras.DPKerasAdamOptimizer,
            ("microbatched", "sgd"): dp_optimizer_keras.DPKerasSGDOptimizer,
        },
    )


# --------------------------------------------------------------------------------------------------
# Fast clipping of Conv2D (tfmi's addition to tensorflow-privacy's layer registry)
# --------------------------------------------------------------------------------------------------


def _conv2d_layer_computation(layer, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for ``Conv2D``: pre-activations, outputs, and per-example squared grad norms.

    With im2col patches ``P`` (positions x kernel entries, plus a column of ones for the bias) and
    ``G`` the loss gradient at the pre-activations (positions x filters), an example's kernel-and-bias
    gradient is ``P^T G``. Its squared Frobenius norm is computed directly, or as ``<P P^T, G G^T>``
    when the position count is small; a microbatch's rows are concatenated first.
    """
    if input_kwargs or len(input_args) != 1:
        raise ValueError("Conv2D calls for fast clipping take exactly one input and no keyword arguments")
    inputs = input_args[0]
    activation = layer.activation
    layer.activation = None
    try:
        pre_activations = layer(inputs)
    finally:
        layer.activation = activation
    tape.watch(pre_activations)
    outputs = activation(pre_activations) if activation is not None else pre_activations

    def sqr_norm_fn(grads: tf.Tensor) -> tf.Tensor:
        kh, kw = layer.kernel_size
        sh, sw = layer.strides
        patches = tf.image.extract_patches(
            inputs, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, 1, 1, 1],
            padding=layer.padding.upper(),
        )
        batch = tf.shape(patches)[0]
        x = tf.reshape(patches, [batch, -1, patches.shape[-1]])
        g = tf.reshape(grads, [batch, -1, grads.shape[-1]])
        if layer.use_bias:
            x = tf.concat([x, tf.ones_like(x[..., :1])], axis=-1)
        if num_microbatches is not None:
            x = tf.reshape(x, [num_microbatches, -1, x.shape[-1]])
            g = tf.reshape(g, [num_microbatches, -1, g.shape[-1]])
        positions, entries, filters = x.shape[1], x.shape[-1], g.shape[-1]
        if positions is not None and positions * positions < entries * filters:
            gram = tf.einsum("btk,bsk->bts", x, x) * tf.einsum("btc,bsc->bts", g, g)
            return tf.reduce_sum(gram, axis=[1, 2])
        per_example = tf.einsum("btk,btc->bkc", x, g)
        return tf.reduce_sum(tf.square(per_example), axis=[1, 2])

    return pre_activations, outputs, sqr_norm_fn


def make_layer_registry() -> Any:
    """tensorflow-privacy's default fast-clipping registry (``Dense``, ``Embedding``) plus ``Conv2D``.
    Keras 2 only (tensorflow-privacy does not run on Keras 3, whose native fast path needs no registry).

    >>> registry = None if compat.KERAS_3 else make_layer_registry()
    >>> conv, lstm = keras.layers.Conv2D(4, 3), keras.layers.LSTM(4)
    >>> registry is None or (registry.is_elem(conv) and not registry.is_elem(lstm))
    True
    """
    if compat.KERAS_3:
        raise TfmiError(
            "make_layer_registry builds tensorflow-privacy's registry, which needs Keras 2 (the reference "
            "stack); on Keras 3 use make_dp_model, whose native fast path needs no registry"
        )
    registry = _tfp().layer_registry.make_default_layer_registry()
    registry.insert(keras.layers.Conv2D, _conv2d_layer_computation)
    return registry


def _fast_clipping_blockers(model: keras.Model) -> list[str]:
    """Why the fast path cannot clip ``model`` (empty when it can)."""
    if compat.KERAS_3:
        return fast_clipping_blockers(model)
    registry = make_layer_registry()
    blockers = []
    for layer in model.layers:
        name = f"{layer.__class__.__name__} {layer.name!r}"
        if isinstance(layer, _STOCHASTIC_LAYERS):
            blockers.append(f"{name} (random at training time)")
        elif not layer.trainable_weights:
            continue
        elif not registry.is_elem(layer):
            blockers.append(f"{name} (not in the fast-clipping registry)")
        elif isinstance(layer, keras.layers.Conv2D) and not conv2d_fast_clippable(layer):
            blockers.append(f"{name} (only channels-last, ungrouped, undilated Conv2D is supported)")
    return blockers


def resolve_path(model: keras.Model, path: str = "auto") -> str:
    """The DP-SGD path :func:`make_dp_model` takes for ``model``: ``"auto"`` picks ``"fast"`` where it
    applies, else ``"dpmodel"`` (Keras 2) or ``"vectorized"`` (Keras 3, where every path but
    ``"fast"`` runs as ``"vectorized"``; see the module docstring).

    Raises :class:`TfmiError` when ``path="fast"`` is asked for a model it cannot clip.

    >>> from tfmi.models import build_model
    >>> resolve_path(build_model("cnn", (8, 8, 1), 10))
    'fast'
    >>> inputs = keras.Input((5, 3))
    >>> recurrent = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.SimpleRNN(4)(inputs)))
    >>> resolve_path(recurrent) == ("vectorized" if compat.KERAS_3 else "dpmodel")
    True
    """
    if path not in PATHS:
        raise TfmiError(f"unknown DP-SGD path {path!r}: use one of {', '.join(PATHS)}")
    check_dp_model(model)
    fallback = "vectorized" if compat.KERAS_3 else "dpmodel"
    if path not in ("auto", "fast"):
        return "vectorized" if compat.KERAS_3 else path
    blockers = _fast_clipping_blockers(model)
    if not blockers:
        return "fast"
    if path == "fast":
        raise TfmiError(
            f"fast gradient clipping cannot handle {'; '.join(blockers[:3])}: use path='auto' "
            f"(falls back to {fallback!r}) or {fallback!r}"
        )
    return fallback


# --------------------------------------------------------------------------------------------------
# The DP models
# --------------------------------------------------------------------------------------------------


def _pad_batch(data, multiple: int | None, at_least: int | None):
    """Pad a batch with zero-weight rows up to ``at_least`` rows (the nominal batch size, so a partial
    batch's noise is divided as a full one's), then up to a multiple of ``multiple`` (tensorflow-privacy
    needs one)."""
    x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
    rows = tf.shape(y)[0]
    padded = rows if at_least is None else tf.maximum(rows, at_least)
    if multiple is not None:
        padded = padded + tf.math.floormod(-padded, multiple)
    pad = padded - rows
    weights = tf.ones([rows]) if weights is None else tf.reshape(tf.cast(weights, tf.float32), [rows])

    def pad_rows(tensor):
        tensor = tf.convert_to_tensor(tensor)
        return tf.pad(tensor, [[0, pad]] + [[0, 0]] * (tensor.shape.rank - 1))

    return tf.nest.map_structure(pad_rows, x), pad_rows(y), pad_rows(weights)


class _PadsPartialBatches:
    """Pads each batch before the training step (`_pad_batch`): up to ``pad_to`` rows, then to a
    multiple of ``pad_multiple``; a base placed before the Keras model class it extends."""

    def __init__(self, *args, pad_multiple: int | None = None, pad_to: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._tfmi_pad = (pad_multiple, pad_to)

    def train_step(self, data):
        if self._tfmi_pad != (None, None):
            data = _pad_batch(data, *self._tfmi_pad)
        return super().train_step(data)


@functools.cache
def _model_classes() -> SimpleNamespace:
    class TfmiDPModel(_PadsPartialBatches, _tfp().DPModel):
        """tensorflow-privacy's DPModel, padding partial batches."""

    class TfmiDPOptimizerModel(_PadsPartialBatches, keras.Model):
        """A functional model trained by a tensorflow-privacy DP optimizer, padding partial batches."""

    return SimpleNamespace(dp_model=TfmiDPModel, optimizer_model=TfmiDPOptimizerModel)


def make_dp_model(
    model: keras.Model,
    config: DPSGDConfig | None = None,
    *,
    num_examples: int,
    batch_size: int,
    epochs: float,
    learning_rate: float = 1e-3,
    metrics: Sequence[Any] = ("accuracy",),
    seed: int | None = None,
) -> tuple[keras.Model, DPAccounting]:
    """A compiled DP-SGD version of ``model`` for ``fit``, and the privacy accounting of that run.

    ``model`` is a functional Keras model returning logits (any ``tfmi.models.build_model`` network
    but ``resnet20``, whose BatchNormalization DP-SGD cannot train). The returned model shares its
    layers and weights with ``model``: after ``fit``, ``model`` holds the trained weights (save or
    evaluate either; save ``model`` for a plain Keras file). Its loss is sparse categorical
    cross-entropy from logits: compiled in, reduced as the path needs, on Keras 2; the native
    model's own on Keras 3 (a :class:`~tfmi.defenses.dp_native.NativeDPModel`).
    ``seed`` seeds the native model's noise (``None``: drawn from NumPy's global generator, so
    ``keras.utils.set_random_seed`` makes runs reproducible); tensorflow-privacy, on Keras 2, draws its
    noise from TensorFlow's global generator.

    The accounting is for ``num_examples`` training examples, ``batch_size`` and ``epochs``: call
    ``fit`` on that data with those values (and ``shuffle=True``, the default), or the epsilon is wrong.
    Bad input raises :class:`TfmiError` here, before any training.

    >>> from tfmi.data import load_dataset
    >>> from tfmi.models import build_model
    >>> data = load_dataset("digits")
    >>> net = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    >>> dp_net, accounting = make_dp_model(net, DPSGDConfig(noise_multiplier=1.1),
    ...                                    num_examples=300, batch_size=32, epochs=2)
    >>> accounting.path, round(accounting.epsilon, 2)
    ('fast', 3.69)
    >>> history = dp_net.fit(data.x[:300], data.y[:300], batch_size=32, epochs=2, verbose=0)
    """
    config = config if config is not None else DPSGDConfig()
    if not isinstance(config, DPSGDConfig):
        raise TfmiError(f"config must be a DPSGDConfig, got {type(config).__name__}")
    for name, value in (("num_examples", num_examples), ("batch_size", batch_size)):
        if not _is_positive_int(value):
            raise TfmiError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
    if not (_is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0):
        raise TfmiError(f"learning rate must be a positive number, got {learning_rate!r}")
    microbatches = config.num_microbatches
    if microbatches is not None and (microbatches > batch_size or batch_size % microbatches):
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise TfmiError(
            f"num_microbatches={microbatches} does not divide the batch size {batch_size}: use one of "
            f"{divisors[-6:]} or None (one example per microbatch)"
        )
    delta = config.delta if config.delta is not None else default_delta(num_examples)
    _check_accounting_inputs(num_examples, batch_size, epochs, delta, config.accountant)
    path = resolve_path(model, config.path)
    used_microbatching = _used_microbatching(batch_size, microbatches)
    if config.target_epsilon is not None:
        noise = noise_for_epsilon(
            num_examples, batch_size, epochs, config.target_epsilon, delta,
            used_microbatching=used_microbatching, accountant=config.accountant,
        )
    else:
        noise = float(config.noise_multiplier)
    epsilon = dp_epsilon(
        num_examples, batch_size, epochs, noise, delta,
        used_microbatching=used_microbatching, accountant=config.accountant,
    )

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise TfmiError(f"seed must be an integer or None, got {seed!r}")
    dp_model = _build(model, config, path, noise, learning_rate, list(metrics), seed, batch_size)
    accounting = DPAccounting(
        noise_multiplier=noise,
        l2_norm_clip=float(config.l2_norm_clip),
        epsilon=epsilon,
        delta=float(delta),
        accountant=config.accountant,
        num_examples=int(num_examples),
        batch_size=int(batch_size),
        epochs=epochs,
        path=path,
        num_microbatches=microbatches,
        optimizer=config.optimizer,
        target_epsilon=config.target_epsilon,
    )
    return dp_model, accounting


def _optimizer(config: DPSGDConfig, learning_rate: float) -> keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return keras.optimizers.Adam(learning_rate)


def _build(model, config: DPSGDConfig, path: str, noise: float, learning_rate: float, metrics: list,
           seed: int | None, batch_size: int):
    clip, microbatches = float(config.l2_norm_clip), config.num_microbatches
    # one example per microbatch: a partial batch is padded to the nominal size, so its noise is divided
    # as a full batch's (see "Partial batches" above); microbatches already divide by their count
    pad_to = batch_size if microbatches is None else None
    name = f"{model.name}_dp"
    if compat.KERAS_3:
        dp_model = NativeDPModel(
            model, l2_norm_clip=clip, noise_multiplier=noise, num_microbatches=microbatches,
            method=path, seed=None if seed is None else int(seed), name=name, batch_size=batch_size,
        )
        dp_model.compile(optimizer=_optimizer(config, learning_rate), metrics=metrics, jit_compile=False)
        return dp_model
    tfp, classes = _tfp(), _model_classes()
    if path in ("fast", "dpmodel"):
        dp_model = classes.dp_model(
            l2_norm_clip=clip,
            noise_multiplier=noise,
            num_microbatches=microbatches,
            use_xla=False,  # XLA made both the MLP and the CNN slower on CPU
            layer_registry=make_layer_registry() if path == "fast" else None,
            inputs=model.inputs, outputs=model.outputs, name=name, pad_multiple=microbatches, pad_to=pad_to,
        )
        if getattr(dp_model, "_enable_fast_peg_computation", path == "fast") != (path == "fast"):
            raise TfmiError(f"tensorflow-privacy did not take the {path!r} path for {model.name!r}")
        optimizer = _optimizer(config, learning_rate)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        dp_model = classes.optimizer_model(
            inputs=model.inputs, outputs=model.outputs, name=name, pad_multiple=microbatches, pad_to=pad_to
        )
        extra = {"momentum": 0.9} if config.optimizer == "sgd" else {}
        optimizer = tfp.optimizers[path, config.optimizer](
            clip, noise, microbatches, learning_rate=learning_rate, **extra
        )
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.NONE
        )
    _check_loss_reduction(path, loss)
    dp_model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return dp_model


def _check_loss_reduction(path: str, loss: keras.losses.Loss) -> None:
    """The DP optimizers clip per-example losses; DPModel's clipping needs a mean-reduced loss."""
    per_example = loss.reduction == keras.losses.Reduction.NONE
    if per_example != (path in ("vectorized", "microbatched")):
        needed = "reduction='none' (per-example)" if not per_example else "a mean reduction"
        raise TfmiError(f"the {path!r} DP-SGD path needs a loss with {needed}, got {loss.reduction!r}")
