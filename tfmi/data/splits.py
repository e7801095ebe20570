"""Membership splits: which records a target model trains on, and which play every other role."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfmi.data.archives import readable
from tfmi.errors import TfmiError

ROLES = ("members", "non_members", "reference", "shadow_pool")


@dataclass(frozen=True)
class MembershipSplit:
    """Record indices (into the dataset) for each role, and the seed that drew them.

    Layout, all four parts pairwise disjoint::

        members      target_size   the target model's training set
        non_members  target_size   same size, never trained on: the target's test set, and the
                                   negatives of every membership evaluation
        reference    reference_size  held-out validation records for the MMD defense
        shadow_pool  the rest      attacker-side records for shadow models

    Every part is stratified: each class appears in it in (nearly) the proportion it has in the
    whole dataset, so class-matched reference batches find every class.
    """

    seed: int
    members: np.ndarray
    non_members: np.ndarray
    reference: np.ndarray
    shadow_pool: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {role: int(len(getattr(self, role))) for role in ROLES}

    def save(self, path: str | os.PathLike) -> None:
        """Write the indices and seed to an ``.npz`` (see `load`)."""
        with open(path, "wb") as handle:
            np.savez(handle, seed=np.int64(self.seed), **{r: getattr(self, r) for r in ROLES})

    @classmethod
    def load(cls, path: str | os.PathLike) -> MembershipSplit:
        """Read a split written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise TfmiError(f"split file {path} does not exist")
        with readable(path, "split file (.npz)"), np.load(path) as stored:
            missing = [k for k in ("seed", *ROLES) if k not in stored.files]
            if missing:
                raise TfmiError(f"{path} is not a tfmi split file: it lacks {', '.join(missing)}")
            return cls(int(stored["seed"]), *(stored[r].astype(np.int64) for r in ROLES))


def membership_split(
    labels: np.ndarray,
    target_size: int,
    reference_size: int | None = None,
    seed: int = 0,
) -> MembershipSplit:
    """Partition a labelled dataset into members, non-members, reference and shadow pool.

    ``reference_size`` defaults to ``min(target_size, (n - 2 * target_size) // 2)``, leaving the
    rest to the shadow pool. The same labels and seed always give the same split.

    >>> import numpy as np
    >>> labels = np.repeat(np.arange(10), 100)
    >>> split = membership_split(labels, target_size=300, seed=0)
    >>> split.sizes()
    {'members': 300, 'non_members': 300, 'reference': 200, 'shadow_pool': 200}
    >>> np.bincount(labels[split.members]).tolist()
    [30, 30, 30, 30, 30, 30, 30, 30, 30, 30]
    """
    labels = np.asarray(labels)
    n = len(labels)
    if isinstance(target_size, bool) or int(target_size) != target_size or target_size < 1:
        raise TfmiError(f"target size must be a positive integer, got {target_size!r}")
    target_size = int(target_size)
    if 2 * target_size > n:
        raise TfmiError(
            f"target size {target_size} needs {2 * target_size} records (members plus as many "
            f"non-members) but the dataset has {n}: use --target-size {n // 2} or less"
        )
    remaining = n - 2 * target_size
    if reference_size is None:
        reference_size = min(target_size, remaining // 2)
    if reference_size < 0 or reference_size > remaining:
        raise TfmiError(
            f"reference size {reference_size} must be between 0 and {remaining}, the records left "
            f"after {target_size} members and {target_size} non-members"
        )
    order = stratified_order(labels, np.random.default_rng(seed))
    bounds = np.cumsum([target_size, target_size, reference_size])
    parts = np.split(order, bounds)
    return MembershipSplit(int(seed), *(np.sort(part) for part in parts))


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of the records in which every prefix and block is class-balanced.

    Each record gets the key ``(its random rank within its class + u) / class size`` with
    ``u ~ U(0, 1)``; sorting by the key interleaves the classes in proportion, so consecutive
    blocks of the order are stratified samples without replacement.
    """
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keys = np.empty(len(labels))
    for cls, count in enumerate(counts):
        where = np.flatnonzero(inverse == cls)
        keys[where] = (rng.permutation(count) + rng.random(count)) / count
    return np.argsort(keys, kind="stable")
