"""Mixup (Zhang et al. 2018): train on convex combinations of pairs of examples and their labels.

Per batch, ``lam ~ Beta(alpha, alpha)`` and a random permutation ``perm``; inputs become
``lam * x + (1 - lam) * x[perm]`` and targets ``lam * onehot(y) + (1 - lam) * onehot(y[perm])``.
Cross-entropy is linear in its target, so this equals ``lam * CE(y) + (1 - lam) * CE(y[perm])``.

>>> import tensorflow as tf
>>> draw = sample_mixup(4, alpha=1.0, seed=tf.constant([0, 0]))
>>> 0.0 <= float(draw.lam) <= 1.0, sorted(draw.perm.numpy().tolist())
(True, [0, 1, 2, 3])
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tfmi.validation import check_number


class MixupDraw(NamedTuple):
    """One batch's mixing coefficient and partner permutation."""

    lam: tf.Tensor
    perm: tf.Tensor


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float after checking it is a number > 0."""
    return check_number("mixup_alpha", alpha, low=0, low_inclusive=False, hint="1.0 is usual")


def sample_beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One draw of ``Beta(alpha, alpha)`` from two stateless Gamma draws."""
    gammas = tf.random.stateless_gamma([2], seed=seed, alpha=alpha, dtype=tf.float32)
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def sample_mixup(batch_size: tf.Tensor | int, alpha: float, seed: tf.Tensor) -> MixupDraw:
    """Draw ``lam`` and a permutation of ``range(batch_size)`` (stateless in ``seed``)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    lam = sample_beta(alpha, seeds[0])
    noise = tf.random.stateless_uniform([batch_size], seed=seeds[1])
    return MixupDraw(lam, tf.argsort(noise))


def mix(x: tf.Tensor, draw: MixupDraw) -> tf.Tensor:
    """``lam * x + (1 - lam) * x[perm]`` for inputs or targets."""
    lam = tf.cast(draw.lam, x.dtype)
    return lam * x + (1.0 - lam) * tf.gather(x, draw.perm)


def mixup_batch(
    x: tf.Tensor, y: tf.Tensor, num_classes: int, alpha: float, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, MixupDraw]:
    """Mixed inputs, mixed one-hot targets (rows sum to 1) and the draw used.

    >>> x = tf.constant([[0.0], [1.0]]); y = tf.constant([0, 1])
    >>> xm, ym, draw = mixup_batch(x, y, 2, alpha=1.0, seed=tf.constant([1, 2]))
    >>> bool(tf.reduce_all(tf.abs(tf.reduce_sum(ym, axis=1) - 1.0) < 1e-6))
    True
    """
    alpha = check_alpha(alpha)
    draw = sample_mixup(tf.shape(x)[0], alpha, seed)
    targets = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes)
    return mix(x, draw), mix(targets, draw), draw
