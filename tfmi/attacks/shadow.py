"""Shadow models for membership inference (Shokri et al. 2017; LiRA, Carlini et al. 2022).

K shadow models are trained the way the target was (same zoo network, same `TrainConfig`), each on a
random half of a record pool, so that every pool record is IN (a training record) for half of the
shadows and OUT for the other half. `train_shadows` returns a `ShadowSet`: the membership masks, the
pool, the shadows' logits on any inputs, and each shadow's accuracy on its IN and OUT records.

Which pool to use: for offline attacks (and shadow-model classifiers) the split's ``shadow_pool``,
records the target never saw; for online LiRA the union of the records the attacker evaluates
(members and non-members of the target) and the shadow pool, so every evaluated record has IN and
OUT shadows.

Batched training. Small networks barely occupy the CPU, so training the K shadows one after the
other is mostly per-step overhead. For defense ``"none"`` and the ``mlp``/``cnn`` zoo networks the
K shadows are trained together as one model: the dense ``mlp`` is vectorized (each layer's kernels
are stacked into a ``(K, in, out)`` tensor and applied with one batched matmul), the ``cnn`` runs K
copies side by side in one graph. Every step feeds shadow k its own batch of ``batch_size`` of its IN
records (a ``(K, batch)`` gather from the pool, with a ``(K, batch)`` 0/1 weight matrix for padding):
no compute is spent on a shadow's OUT records. The loss is the sum over shadows of each shadow's
weighted mean cross-entropy, so shadow k's gradient depends only on its own records and its own
weights. Adam (and SGD with momentum) act element-wise, so the K shadows are optimized
independently, as K separate trainings would be. An epoch is one pass over the pool: each
shadow sees each of its IN records once per epoch, like the target.

>>> import numpy as np
>>> masks = sample_shadow_masks(6, 4, seed=0)
>>> masks.shape, masks.sum(axis=0).tolist()
((4, 6), [2, 2, 2, 2, 2, 2])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tfmi.data.dataset import Dataset, check_features
from tfmi.data.splits import MembershipSplit
from tfmi.defenses.config import DefenseConfig
from tfmi.errors import TfmiError
from tfmi.inference import PREDICT_BATCH_SIZE, predict_in_batches
from tfmi.models import build_model
from tfmi.training import TrainConfig, plan_training
from tfmi.validation import check_count

#: zoo networks the batched path trains (defense "none" only)
BATCHED_MODELS = ("mlp", "cnn")


#: how `sample_shadow_masks` assigns records to shadows; part of every shadow cache key
SHADOW_DESIGN = "complementary pairs"


def sample_shadow_masks(num_records: int, num_shadows: int, seed: int = 0) -> np.ndarray:
    """A ``(num_shadows, num_records)`` boolean design in complementary pairs: ``masks[k, i]`` is True
    when record ``i`` is IN (trained on) for shadow ``k``.

    Shadows ``2j`` and ``2j + 1`` split the records into two random halves (``ceil(N / 2)`` and
    ``N // 2``), as ML Privacy Meter trains its reference models: each record is IN for exactly
    ``K // 2`` shadows when K is even, and every shadow trains on half the records, exactly the
    target's count when the pool is its members and as many non-members. For odd K the last shadow
    takes a random half of its own. Equal sizes matter: a shadow with 2 more records than a target
    whose batches divide its data ends every epoch on a batch of 2; under the authors' SGD recipe
    such shadows trained to 0.30 and 0.46 where the target and the other shadows reached 1.0.

    >>> m = sample_shadow_masks(1000, 16, seed=1)
    >>> set(m.sum(axis=0).tolist()), set(m.sum(axis=1).tolist())
    ({8}, {500})
    >>> bool(np.array_equal(m, sample_shadow_masks(1000, 16, seed=1)))
    True
    """
    n = check_count(num_records, "the number of records", 1)
    k = check_count(num_shadows, "the number of shadows", 1)
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, n), bool)
    for first in range(0, k, 2):
        order = rng.permutation(n)
        masks[first, order[: n - n // 2]] = True
        if first + 1 < k:
            masks[first + 1, order[n - n // 2:]] = True
    return masks


def _shadow_seeds(seed: int, num_shadows: int) -> list[int]:
    states = np.random.SeedSequence([int(seed), 0x5AD0]).generate_state(num_shadows)
    return [int(s % (2**31 - 1)) for s in states]


def _retry_seed(seed: int, attempt: int) -> int:
    """The seed of a shadow's ``attempt``-th retraining (1, 2, ...): a function of its first seed only."""
    return int(np.random.SeedSequence([int(seed), 0xFA11, int(attempt)]).generate_state(1)[0] % (2**31 - 1))


#: retrainings of a shadow whose training failed before it is kept as it is
MAX_RETRAINS = 3


def chance_level(labels: np.ndarray) -> float:
    """The accuracy below which a model's training counts as failed: twice what always predicting the
    most common of ``labels`` gets. A model there has learned next to nothing (it diverged: a
    too-large step, a collapse to one class), however the defense meant to train it.

    >>> chance_level(np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7]))  # class 0 holds 30 %
    0.6
    """
    labels = np.asarray(labels)
    return 2.0 * float(np.bincount(labels).max()) / len(labels) if len(labels) else 0.0


def training_failed(accuracy: float, labels: np.ndarray) -> bool:
    """Whether a model with ``accuracy`` on its training records ``labels`` failed to train
    (`chance_level`). The attacker's shadows are retrained when they fail and the target did not:
    the target's owner deployed a model that trained, so shadows that did not are no model of it.

    >>> training_failed(0.05, np.arange(30)), training_failed(0.9, np.arange(30))
    (True, False)
    """
    return bool(accuracy <= chance_level(labels))


def retrain_failed_for(target_accuracy: float, labels: np.ndarray) -> bool:
    """Whether shadows that fail to train are to be retrained (``retrain_failed`` of `train_shadows`):
    only when the target, with ``target_accuracy`` on its training records ``labels``, trained itself
    (`training_failed`). Shadows of a target that learned nothing are a model of it as they are.

    >>> retrain_failed_for(1.0, np.arange(30)), retrain_failed_for(0.05, np.arange(30))
    (True, False)
    """
    return not training_failed(target_accuracy, labels)


def given_up_shadows(shadows: ShadowSet, labels: np.ndarray) -> np.ndarray:
    """Indices of the shadows retrained `MAX_RETRAINS` times whose last training failed too
    (`training_failed` on their IN records; ``labels``: the dataset's labels, indexed by the pool).

    An attacker does not fit an attack to a shadow that learned nothing: `tfmi.attacks.run_attacks`
    leaves these out.

    >>> shadows = ShadowSet(pool=np.arange(40), masks=sample_shadow_masks(40, 2), config=TrainConfig("mlp"),
    ...                     batched=False, train_accuracy=np.array([0.05, 0.9]),
    ...                     test_accuracy=np.array([0.1, 0.5]), retrained=np.array([MAX_RETRAINS, 0]))
    >>> given_up_shadows(shadows, np.arange(40) % 10).tolist()
    [0]
    """
    labels = np.asarray(labels)
    return np.array([k for k, (redone, accuracy, mask) in enumerate(
        zip(shadows.retrained, shadows.train_accuracy, shadows.masks, strict=True))
        if redone >= MAX_RETRAINS and training_failed(accuracy, labels[shadows.pool[mask]])], np.int64)


def _optimizer(config: TrainConfig):
    """The target's optimizer (`tfmi.training.make_optimizer`), in its Keras legacy form: the same update
    rule, but fused kernels, several times faster for the large stacked variables of the batched
    shadows, where the optimizer's memory traffic dominates."""
    from tfmi.training import make_optimizer

    return make_optimizer(config, legacy=True)


def _initial(initializer, shape: tuple[int, ...], seeds: list[int]) -> np.ndarray:
    """``initializer`` (a Keras initializer) drawn once per seed, stacked: (K, *shape)."""
    config = initializer.get_config()
    draws = []
    for seed in seeds:
        if "seed" in config:
            config["seed"] = seed
        draws.append(np.asarray(type(initializer).from_config(config)(shape, dtype="float32")))
    return np.stack(draws)


class _StackedDense:
    """K copies of a dense network (Dense/Flatten layers only) with stacked weights, run as batched
    matmuls; shadow k's layers are drawn from the template's initializers with ``seeds[k]``."""

    def __init__(self, template: keras.Model, seeds: list[int]):
        self.activations = []
        self.kernels: list[tf.Variable] = []
        self.biases: list[tf.Variable] = []
        dense = [layer for layer in template.layers if isinstance(layer, keras.layers.Dense)]
        for i, layer in enumerate(dense):
            self.activations.append(layer.activation)
            layer_seeds = [s * 31 + i for s in seeds]
            shape = tuple(layer.kernel.shape)
            self.kernels.append(tf.Variable(_initial(layer.kernel_initializer, shape, layer_seeds),
                                            name=f"kernel_{i}"))
            self.biases.append(tf.Variable(_initial(layer.bias_initializer, (shape[1],), layer_seeds),
                                           name=f"bias_{i}"))
        self.variables = [v for pair in zip(self.kernels, self.biases, strict=True) for v in pair]

    @staticmethod
    def supports(model: keras.Model) -> bool:
        allowed = (keras.layers.InputLayer, keras.layers.Flatten, keras.layers.Dense)
        return all(isinstance(layer, allowed) for layer in model.layers) and not model.losses

    def __call__(self, x: tf.Tensor, training: bool = False, per_shadow: bool = False) -> tf.Tensor:
        """Logits ``(K, batch, classes)`` of ``x`` (batch, ...) or, with ``per_shadow``, of ``x``
        (K, batch, ...): each shadow on its own batch."""
        if per_shadow:
            h = tf.reshape(x, (tf.shape(x)[0], tf.shape(x)[1], -1))
        else:
            h = tf.reshape(x, (tf.shape(x)[0], -1))
        for i, (w, b, act) in enumerate(zip(self.kernels, self.biases, self.activations, strict=True)):
            if i == 0 and not per_shadow:  # shared inputs: one (batch, d) x (d, K * out) matmul
                k, d, out = tf.unstack(tf.shape(w))
                h = tf.matmul(h, tf.reshape(tf.transpose(w, (1, 0, 2)), (d, k * out)))
                h = tf.transpose(tf.reshape(h, (-1, k, out)), (1, 0, 2))
            else:
                h = tf.matmul(h, w)
            h = act(h + b[:, None, :])
        return h

    def shadow_weights(self, k: int) -> list[np.ndarray]:
        return [v[k].numpy() for v in self.variables]


class _ParallelModels:
    """K Keras models side by side in one graph (for networks the dense path cannot vectorize)."""

    def __init__(self, models: list[keras.Model]):
        self.models = models
        self.variables = [v for m in models for v in m.trainable_variables]

    def __call__(self, x: tf.Tensor, training: bool = False, per_shadow: bool = False) -> tf.Tensor:
        if per_shadow:
            return tf.stack([m(x[k], training=training) for k, m in enumerate(self.models)])
        return tf.stack([m(x, training=training) for m in self.models])

    def shadow_weights(self, k: int) -> list[np.ndarray]:
        return self.models[k].get_weights()


class _BatchedTrainer:
    """Trains a stacked network with a per-shadow masked loss; one optimizer over all variables."""

    def __init__(self, network, config: TrainConfig):
        self.network = network
        self.optimizer = _optimizer(config)
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def _train_step(self, x, y, w):
        """One step: shadow k trains on ``x[k], y[k]`` (K, batch, ...) weighted by ``w[k]`` (K, batch),
        1 for its IN records and 0 for padding (or records it must not see)."""
        with tf.GradientTape() as tape:
            logits = self.network(x, training=True, per_shadow=True)  # (K, B, C)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)  # (K, B)
            per_shadow = tf.reduce_sum(ce * w, axis=1) / tf.maximum(tf.reduce_sum(w, axis=1), 1.0)
            loss = tf.reduce_sum(per_shadow)
        grads = tape.gradient(loss, self.network.variables)
        self.optimizer.apply_gradients(zip(grads, self.network.variables, strict=True))
        return per_shadow

    def step(self, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self._step(tf.constant(x), tf.constant(y, tf.int32), tf.constant(w, tf.float32)).numpy()

    def fit(self, x: np.ndarray, y: np.ndarray, masks: np.ndarray, epochs: int, batch_size: int,
            rng: np.random.Generator) -> None:
        """Each epoch every shadow passes once over its own IN records in a random order, in
        ``ceil(max IN count / batch_size)`` steps; a shadow with fewer IN records spreads them evenly
        over the steps (the rest of its batch has zero weight), so no shadow ever takes an empty
        step (under Adam, even a zero gradient moves the weights through the momentum)."""
        members = [np.flatnonzero(m) for m in masks]
        steps = -(-max(len(m) for m in members) // batch_size)
        for _ in range(epochs):
            idx = np.zeros((len(members), steps, batch_size), np.int64)
            w = np.zeros(idx.shape, np.float32)
            for k, m in enumerate(members):
                position = np.arange(len(m))
                idx[k, position % steps, position // steps] = rng.permutation(m)
                w[k, position % steps, position // steps] = 1.0
            for s in range(steps):
                batch = idx[:, s]
                self.step(x[batch], y[batch], w[:, s])


@dataclass
class ShadowSet:
    """K trained shadow models and which pool records each trained on.

    ``pool`` holds dataset indices (N,); ``masks[k, i]`` is True when ``pool[i]`` was IN for shadow
    k. ``train_accuracy[k]``/``test_accuracy[k]``: shadow k's accuracy on its IN/OUT pool records;
    ``retrained[k]``: how often shadow k's training failed and was redone (`training_failed`).
    """

    pool: np.ndarray
    masks: np.ndarray
    config: TrainConfig
    batched: bool
    train_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seeds: list[int] = field(default_factory=list)
    #: per shadow, how many times its training failed and it was retrained with a new seed
    retrained: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _network: object = field(default=None, repr=False)  # _StackedDense | _ParallelModels
    _models: list = field(default_factory=list, repr=False)  # sequential: one Keras model per shadow
    _build: tuple = field(default=(), repr=False)  # (input_shape, num_classes) for shadow_model
    _stored: tuple | None = field(default=None, repr=False)  # (row key -> index, (K, n, C) logits)

    @property
    def num_shadows(self) -> int:
        return int(self.masks.shape[0])

    def logits(self, x: np.ndarray, batch_size: int = PREDICT_BATCH_SIZE) -> np.ndarray:
        """Logits of every shadow on ``x``: shape ``(K, n, num_classes)``, float32."""
        x = check_features(x)
        if self._stored is not None:
            return self._stored_logits(x)
        if self._network is not None:
            chunks = [self._network(tf.constant(x[s:s + batch_size]), training=False).numpy()
                      for s in range(0, len(x), batch_size)]
            return np.concatenate(chunks, axis=1)
        return np.stack([predict_in_batches(m, x, batch_size) for m in self._models])

    def _stored_logits(self, x: np.ndarray) -> np.ndarray:
        index, table = self._stored
        try:
            rows = [index[row.tobytes()] for row in _row_keys(x)]
        except KeyError:
            raise TfmiError("these shadows were trained in chunks elsewhere and kept only their outputs on "
                            "the records they were asked about: ask about those records, or train the "
                            "shadows in this process") from None
        return table[:, rows]

    def select(self, keep) -> ShadowSet:
        """The shadows ``keep`` (indices into this set, in order) as a `ShadowSet` of their own.

        >>> from tfmi.data import load_dataset
        >>> data = load_dataset("digits")
        >>> shadows = train_shadows(data, np.arange(64), TrainConfig("mlp", epochs=1), num_shadows=3,
        ...                         batched=False)
        >>> shadows.select([0, 2]).logits(data.x[:5]).shape
        (2, 5, 10)
        """
        keep = np.asarray(keep, np.int64).reshape(-1)
        if (len(keep) == 0 or keep.min() < 0 or keep.max() >= self.num_shadows
                or len(np.unique(keep)) < len(keep)):
            raise TfmiError(f"select distinct shadows among 0..{self.num_shadows - 1}, got {keep.tolist()}")
        if self._network is not None:
            raise TfmiError("batched shadows are trained as one model and cannot be taken apart: train the "
                            "shadows you want (num_shadows, masks)")
        stored = None if self._stored is None else (self._stored[0], self._stored[1][keep])
        return dataclasses.replace(
            self, masks=self.masks[keep], train_accuracy=self.train_accuracy[keep],
            test_accuracy=self.test_accuracy[keep], seeds=[self.seeds[k] for k in keep] if self.seeds else [],
            retrained=self.retrained[keep], _models=[self._models[k] for k in keep] if self._models else [],
            _stored=stored)

    def shadow_model(self, k: int) -> keras.Model:
        """Shadow ``k`` as a plain zoo Keras model (logits)."""
        if not 0 <= k < self.num_shadows:
            raise TfmiError(f"shadow index {k} out of range: there are {self.num_shadows} shadows")
        if self._stored is not None:
            raise TfmiError("these shadows were trained in chunks elsewhere: only their outputs came back, "
                            "not their models")
        if self._network is None:
            return self._models[k]
        if isinstance(self._network, _ParallelModels):
            return self._network.models[k]
        model = build_model(self.config.model, *self._build)
        model.set_weights(self._network.shadow_weights(k))
        return model


def _row_keys(x: np.ndarray) -> np.ndarray:
    """One row per example, its bytes identifying it (``x`` as `check_features` returns it)."""
    return np.ascontiguousarray(x.reshape(len(x), -1))


def _check_chunk(chunk, num_shadows: int) -> tuple[int, int]:
    try:
        start, stop = (int(v) for v in chunk)
    except (TypeError, ValueError):
        raise TfmiError(f"a shadow chunk is (start, stop), got {chunk!r}") from None
    if not 0 <= start < stop <= num_shadows:
        raise TfmiError(f"shadow chunk {start}:{stop} is not within the {num_shadows} shadows")
    return start, stop


def shadow_chunks(num_shadows: int, per_chunk: int | None = None) -> list[tuple[int, int]]:
    """The (start, stop) chunks of ``num_shadows`` shadows, ``per_chunk`` each (None: one chunk).

    >>> shadow_chunks(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    k = check_count(num_shadows, "the number of shadows", 1)
    step = k if per_chunk is None else check_count(per_chunk, "shadows per task", 1)
    return [(start, min(start + step, k)) for start in range(0, k, step)]


@dataclass
class ShadowOutputs:
    """What a chunk of shadows trained elsewhere sends back: shadows ``start:stop``'s logits on the query
    inputs (``(stop - start, n, classes)``) and their accuracies on their IN and OUT pool records."""

    start: int
    stop: int
    logits: np.ndarray
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    retrained: np.ndarray | None = None  # per shadow (None: none retrained)


def train_shadow_outputs(
    data: Dataset, pool, config: TrainConfig, queries: np.ndarray, *, num_shadows: int, seed: int,
    chunk: tuple[int, int], defense: DefenseConfig | None = None, retrain_failed: bool = False,
) -> ShadowOutputs:
    """Train shadows ``chunk`` of `train_shadows`'s K-shadow design and keep their logits on ``queries``
    (every input the attacks will ask about; see `tfmi.attacks.suite.shadow_queries`)."""
    shadows = train_shadows(data, pool, config, num_shadows=num_shadows, seed=seed, defense=defense,
                            chunk=chunk, retrain_failed=retrain_failed)
    return ShadowOutputs(chunk[0], chunk[1], shadows.logits(queries), shadows.train_accuracy,
                         shadows.test_accuracy, shadows.retrained)


def assemble_shadows(
    data: Dataset, pool, config: TrainConfig, queries: np.ndarray, *, num_shadows: int, seed: int,
    parts: list[ShadowOutputs], defense: DefenseConfig | None = None,
) -> ShadowSet:
    """The K shadows of ``parts`` (their chunks must tile 0..K) as one `ShadowSet` that answers
    `ShadowSet.logits` for the query inputs, as the same shadows trained in this process would."""
    parts = sorted(parts, key=lambda p: p.start)
    spans = [(p.start, p.stop) for p in parts]
    if not spans or [a for a, _ in spans] != [0] + [b for _, b in spans[:-1]] or spans[-1][1] != num_shadows:
        raise TfmiError(f"the shadow chunks {spans} do not tile the {num_shadows} shadows")
    pool = _check_pool(pool, len(data))
    queries = check_features(queries)
    table = np.concatenate([p.logits for p in parts])
    if table.shape[1] != len(queries):
        raise TfmiError(f"the shadow chunks hold outputs for {table.shape[1]} inputs, not the {len(queries)} "
                        "queries: they were trained for another audit")
    index = {row.tobytes(): i for i, row in enumerate(_row_keys(queries))}
    return ShadowSet(pool=pool, masks=sample_shadow_masks(len(pool), num_shadows, seed), config=config,
                     batched=_batched_supported(config, defense or DefenseConfig()),
                     train_accuracy=np.concatenate([p.train_accuracy for p in parts]),
                     test_accuracy=np.concatenate([p.test_accuracy for p in parts]),
                     retrained=np.concatenate([np.zeros(p.stop - p.start, np.int64) if p.retrained is None
                                               else np.asarray(p.retrained, np.int64) for p in parts]),
                     seeds=_shadow_seeds(seed, num_shadows), _build=(data.input_shape, data.num_classes),
                     _stored=(index, table))


def _check_pool(pool, num_records: int) -> np.ndarray:
    pool = np.asarray(pool)
    if pool.ndim != 1 or not (np.issubdtype(pool.dtype, np.integer) or pool.size == 0):
        raise TfmiError(f"the pool must be a 1-D array of integer record indices, got shape {pool.shape} "
                        f"and dtype {pool.dtype}")
    if len(pool) < 2:
        raise TfmiError(f"the shadow pool has {len(pool)} record(s): give at least 2 (each shadow "
                        "trains on half of it)")
    if pool.min() < 0 or pool.max() >= num_records:
        raise TfmiError(f"pool indices must be in [0, {num_records}) for this dataset, found "
                        f"{int(pool.min())}..{int(pool.max())}: the pool was drawn for other data")
    if len(np.unique(pool)) != len(pool):
        raise TfmiError("the pool repeats record indices: pass each record once (e.g. np.unique(pool))")
    return pool.astype(np.int64)


def _batched_supported(config: TrainConfig, defense: DefenseConfig) -> bool:
    """Batched shadows: no defense, an mlp or cnn without dropout, a constant learning rate and no
    weight decay (the legacy optimizers have none); anything else trains shadow by shadow."""
    return (defense.name == "none" and config.model in BATCHED_MODELS and config.dropout == 0.0
            and not config.weight_decay and not config.lr_milestones)


def _accuracies(logits: np.ndarray, y: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    correct = np.argmax(logits, axis=2) == y[None, :]
    train = np.array([correct[k, m].mean() if m.any() else np.nan for k, m in enumerate(masks)])
    test = np.array([correct[k, ~m].mean() if (~m).any() else np.nan for k, m in enumerate(masks)])
    return train, test


def train_shadows(
    data: Dataset,
    pool,
    config: TrainConfig,
    *,
    num_shadows: int = 16,
    seed: int = 0,
    batched: bool | None = None,
    defense: DefenseConfig | None = None,
    masks: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: tuple[int, int] | None = None,
    retrain_failed: bool = False,
) -> ShadowSet:
    """Train ``num_shadows`` shadows of ``config.model`` on random halves of ``data`` records ``pool``.

    ``pool``: dataset indices (unique, >= 2). ``masks``: an explicit ``(K, len(pool))`` boolean
    design (default `sample_shadow_masks` with ``seed``). ``batched``: None picks the batched path
    where supported (defense ``"none"``, model ``mlp`` or ``cnn``, no dropout), True demands it, False
    trains the shadows one after another with the target's training plan (`tfmi.training.plan_training`:
    any zoo model and defense; defenses that need a held-out reference set get the shadow's OUT
    records). Shadow k's initial weights are seeded from ``seed`` and k, not ``config.seed``.
    ``progress(done)`` is called with the number of shadows trained so far (all K at once when batched).
    ``chunk=(k0, k1)`` trains only shadows k0..k1-1 of the K-shadow design (their masks and seeds, which
    depend only on ``seed`` and K), so chunks can train anywhere; batched chunks of the same (k0, k1)
    give the same shadows, a different chunking does not (batched shadows share their batch order).
    ``retrain_failed``: a shadow whose training failed (`training_failed` on its IN records) is trained
    again with a new seed, up to `MAX_RETRAINS` times, as an attacker facing a target that trained
    would do (a failed batched shadow is retrained on its own, and the set then holds Keras models).

    >>> from tfmi.data import load_dataset
    >>> data = load_dataset("digits")
    >>> shadows = train_shadows(data, np.arange(64), TrainConfig("mlp", epochs=1), num_shadows=2)
    >>> shadows.logits(data.x[:5]).shape, shadows.masks.shape
    ((2, 5, 10), (2, 64))
    """
    defense = defense or DefenseConfig()
    for value, kind, fix in ((data, Dataset, "tfmi.data.load_dataset or make_dataset"),
                             (config, TrainConfig, "TrainConfig(model_name, ...)"),
                             (defense, DefenseConfig, "DefenseConfig(name, ...)")):
        if not isinstance(value, kind):
            raise TfmiError(f"expected a {kind.__name__}, got {type(value).__name__}: make one with {fix}")
    k = check_count(num_shadows, "the number of shadows", 1)
    pool = _check_pool(pool, len(data))
    if masks is None:
        masks = sample_shadow_masks(len(pool), k, seed)
    else:
        masks = np.asarray(masks)
        if masks.dtype != bool or masks.shape != (k, len(pool)):
            raise TfmiError(f"masks must be a boolean array of shape ({k}, {len(pool)}) "
                            f"(shadows, pool records), got {masks.dtype} {masks.shape}")
    empty = np.flatnonzero(~masks.any(axis=1))
    if len(empty):
        raise TfmiError(f"shadow {int(empty[0])} has no IN records: use a larger pool")
    seeds = _shadow_seeds(seed, k)
    if chunk is not None:
        start, stop = _check_chunk(chunk, k)
        masks, seeds, k = masks[start:stop], seeds[start:stop], stop - start
    supported = _batched_supported(config, defense)
    if batched is None:
        batched = supported
    elif batched and not supported:
        raise TfmiError(f"batched shadow training supports defense 'none' with models "
                        f"{', '.join(BATCHED_MODELS)} and no dropout, not {config.model!r} with "
                        f"{defense.name!r}: pass batched=False")
    x, y = data.x[pool], np.asarray(data.y[pool])
    result = ShadowSet(pool=pool, masks=masks, config=config, batched=bool(batched), seeds=seeds,
                       retrained=np.zeros(k, np.int64), _build=(data.input_shape, data.num_classes))
    if batched:
        template = build_model(config.model, data.input_shape, data.num_classes, seed=seeds[0])
        if _StackedDense.supports(template):
            network = _StackedDense(template, seeds)
        else:
            network = _ParallelModels([template] + [
                build_model(config.model, data.input_shape, data.num_classes, seed=s) for s in seeds[1:]])
        trainer = _BatchedTrainer(network, config)
        trainer.fit(x, y, masks, config.epochs, config.batch_size, np.random.default_rng(seeds[0]))
        result._network = network
        logits = result.logits(x)
        train_accuracy = _accuracies(logits, y, masks)[0]
        if retrain_failed and _retrain_failed_batched(result, data, defense, train_accuracy):
            logits = result.logits(x)
        if progress is not None:
            progress(k)
    else:
        for shadow, s in enumerate(seeds):
            inside, outside = pool[masks[shadow]], pool[~masks[shadow]]
            model = _train_one_shadow(data, inside, outside, config, defense, s)
            if retrain_failed:
                model, result.retrained[shadow] = _retrain_while_failed(model, data, inside, outside, config,
                                                                        defense, s)
            result._models.append(model)
            if progress is not None:
                progress(shadow + 1)
        logits = result.logits(x)
    result.train_accuracy, result.test_accuracy = _accuracies(logits, y, masks)
    return result


def _retrain_while_failed(model: keras.Model, data: Dataset, inside: np.ndarray, outside: np.ndarray,
                          config: TrainConfig, defense: DefenseConfig, seed: int) -> tuple[keras.Model, int]:
    """``model`` (the shadow first trained with ``seed`` on ``inside``) if it trained, else the shadow
    trained again with new seeds until it does, at most `MAX_RETRAINS` times; and how often it was."""
    attempts = 0
    while attempts < MAX_RETRAINS and training_failed(_accuracy(model, data.x[inside], data.y[inside]),
                                                      data.y[inside]):
        attempts += 1
        model = _train_one_shadow(data, inside, outside, config, defense, _retry_seed(seed, attempts))
    return model, attempts


def _retrain_failed_batched(shadows: ShadowSet, data: Dataset, defense: DefenseConfig,
                            train_accuracy: np.ndarray) -> bool:
    """Retrain, one by one (`_retrain_while_failed`), the batched shadows whose training failed
    (``train_accuracy``: each one's on its IN records). The set is then held as one Keras model per
    shadow, the others keeping their batched-trained weights; when none failed it stays batched.
    Returns whether any was retrained."""
    y = np.asarray(data.y[shadows.pool])
    failed = [k for k, (accuracy, mask) in enumerate(zip(train_accuracy, shadows.masks, strict=True))
              if training_failed(accuracy, y[mask])]
    if not failed:
        return False
    models = [shadows.shadow_model(k) for k in range(shadows.num_shadows)]
    for k in failed:
        inside, outside = shadows.pool[shadows.masks[k]], shadows.pool[~shadows.masks[k]]
        models[k], shadows.retrained[k] = _retrain_while_failed(models[k], data, inside, outside,
                                                                shadows.config, defense, shadows.seeds[k])
    shadows._network, shadows._models = None, models
    return True


def _train_one_shadow(data: Dataset, inside: np.ndarray, outside: np.ndarray, config: TrainConfig,
                      defense: DefenseConfig, seed: int) -> keras.Model:
    """One shadow, trained like the target (`tfmi.training.plan_training`) on ``inside``; a defense that
    needs held-out reference records gets ``outside``. Returns the plain network (logits)."""
    split = MembershipSplit(seed, inside, outside, outside, np.zeros(0, np.int64))
    plan = plan_training(data, split, dataclasses.replace(config, seed=seed), defense)
    y_fit = data.y[inside]
    if plan.one_hot_labels:
        y_fit = keras.utils.to_categorical(y_fit, data.num_classes)
    validation = None
    if plan.validate_on_reference:
        y_val = data.y[outside]
        if plan.one_hot_labels:
            y_val = keras.utils.to_categorical(y_val, data.num_classes)
        validation = (data.x[outside], y_val)
    plan.trainable.fit(data.x[inside], y_fit, validation_data=validation, epochs=config.epochs,
                       batch_size=config.batch_size, shuffle=True, verbose=0, callbacks=list(plan.callbacks))
    return plan.inner


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict_in_batches(model, x), axis=1) == np.asarray(y)))
