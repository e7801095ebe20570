"""Maximum Mean Discrepancy (MMD) between sets of softmax outputs, and class-matched reference batches.

The set regularizer of Li, Li & Ribeiro (2021) penalizes ``MMD^2(P_train, P_reference)`` where both
sets are softmax vectors: a model whose outputs on its training records are distributed like its
outputs on held-out records gives a membership attacker little to go on.

>>> import numpy as np
>>> x = np.array([[0.9, 0.1], [0.8, 0.2]], np.float32)
>>> float(mmd2(x, x))
0.0
>>> round(float(mmd2(x, 1 - x)), 4)
0.7649
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
import tensorflow as tf

from tfmi.errors import TfmiError
from tfmi.validation import check_number

ESTIMATORS = ("biased", "unbiased")


def check_bandwidths(bandwidths: float | Sequence[float]) -> tuple[float, ...]:
    """Bandwidths as a non-empty tuple of positive floats."""
    values = (bandwidths,) if isinstance(bandwidths, Real) else bandwidths
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray) or len(values) == 0:
        raise TfmiError(f"MMD bandwidths must be one or more numbers > 0, got {bandwidths!r}")
    return tuple(check_number("an MMD bandwidth", v, low=0, low_inclusive=False) for v in values)


def squared_distances(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Pairwise ``||a_i - b_j||^2`` (n x m), via the Gram expansion, clipped at 0 against round-off."""
    a_sq = tf.reduce_sum(tf.square(a), axis=1, keepdims=True)
    b_sq = tf.reduce_sum(tf.square(b), axis=1, keepdims=True)
    return tf.maximum(a_sq + tf.transpose(b_sq) - 2.0 * tf.matmul(a, b, transpose_b=True), 0.0)


def gaussian_kernel(a: tf.Tensor, b: tf.Tensor, bandwidths: Sequence[float] = (1.0,)) -> tf.Tensor:
    """``sum_s exp(-||a_i - b_j||^2 / (2 s^2))`` over the bandwidths ``s``: an n x m kernel matrix."""
    sq = squared_distances(a, b)[..., None]
    scales = tf.constant([2.0 * s * s for s in bandwidths], dtype=sq.dtype)
    return tf.reduce_sum(tf.exp(-sq / scales), axis=-1)


def mmd2(
    x: tf.Tensor,
    y: tf.Tensor,
    bandwidths: float | Sequence[float] = (1.0,),
    estimator: str = "biased",
) -> tf.Tensor:
    """Squared MMD between the rows of ``x`` (n x d) and of ``y`` (m x d) with a Gaussian kernel.

    ``"biased"`` (the authors' choice, always >= 0): ``mean K_xx + mean K_yy - 2 mean K_xy``.
    ``"unbiased"`` drops the diagonals of ``K_xx`` and ``K_yy`` (needs n, m >= 2; can be < 0).
    """
    if estimator not in ESTIMATORS:
        raise TfmiError(f"unknown MMD estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")
    bandwidths = check_bandwidths(bandwidths)
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    y = tf.convert_to_tensor(y, dtype=tf.float32)
    k_xx = gaussian_kernel(x, x, bandwidths)
    k_yy = gaussian_kernel(y, y, bandwidths)
    k_xy = gaussian_kernel(x, y, bandwidths)
    if estimator == "biased":
        return tf.reduce_mean(k_xx) + tf.reduce_mean(k_yy) - 2.0 * tf.reduce_mean(k_xy)
    n = tf.cast(tf.shape(x)[0], tf.float32)
    m = tf.cast(tf.shape(y)[0], tf.float32)
    within_x = (tf.reduce_sum(k_xx) - tf.linalg.trace(k_xx)) / (n * (n - 1.0))
    within_y = (tf.reduce_sum(k_yy) - tf.linalg.trace(k_yy)) / (m * (m - 1.0))
    return within_x + within_y - 2.0 * tf.reduce_mean(k_xy)


class ClassMatchedSampler:
    """Draws reference indices whose class histogram equals a training batch's, inside the graph.

    For every class ``c`` with ``n_c`` records in the batch, ``n_c`` reference records of class ``c``
    are drawn uniformly with replacement, position by position (row ``i`` of the reference batch has
    the class of row ``i`` of the training batch). Drawing is stateless: the same seed gives the
    same indices, so it runs in ``tf.function`` and under distribution strategies. The reference
    labels may be a variable (as in a saved model); the per-class tables are derived from them on
    every call, which costs a sort of the reference labels.

    >>> sampler = ClassMatchedSampler(np.array([0, 0, 1, 1, 1]), num_classes=2)
    >>> idx = sampler.sample(tf.constant([1, 0, 1]), seed=tf.constant([0, 1]))
    >>> np.array([0, 0, 1, 1, 1])[idx.numpy()].tolist()
    [1, 0, 1]
    """

    def __init__(self, reference_labels: np.ndarray | tf.Variable, num_classes: int):
        self.reference_labels = reference_labels
        self.num_classes = int(num_classes)

    def sample(self, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Reference indices, one per label, each of the same class (``seed``: shape-[2] int)."""
        reference = tf.cast(tf.reshape(self.reference_labels, [-1]), tf.int32)
        order = tf.argsort(reference, stable=True)
        count_table = tf.math.bincount(reference, minlength=self.num_classes, maxlength=self.num_classes)
        start_table = tf.cumsum(count_table, exclusive=True)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        start = tf.gather(start_table, labels)
        count = tf.gather(count_table, labels)
        u = tf.random.stateless_uniform(tf.shape(labels), seed=seed, dtype=tf.float32)
        offset = tf.minimum(tf.cast(u * tf.cast(count, tf.float32), tf.int32), count - 1)
        return tf.gather(order, start + offset)
