"""Membership splits: which records a target model trains on, and which play every other role."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfmi.data.archives import open_npz
from tfmi.data.dataset import check_labels
from tfmi.errors import TfmiError
from tfmi.validation import check_number

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

    def check(self, num_records: int) -> None:
        """Raise unless every role holds distinct integer indices in ``0..num_records-1`` and the four
        roles are pairwise disjoint: the split fits a dataset of ``num_records`` records.

        >>> import numpy as np
        >>> MembershipSplit(0, np.arange(3), np.arange(3, 6), np.arange(0), np.arange(6, 8)).check(10)
        """
        num_records = check_number("num_records", num_records, low=0, integer=True)
        _check_roles({role: getattr(self, role) for role in ROLES}, num_records, "the split")

    @classmethod
    def load(cls, path: str | os.PathLike, num_records: int | None = None) -> MembershipSplit:
        """Read a split written by `save`; with ``num_records``, also check it fits a dataset that size.

        Every role must hold distinct non-negative integer indices (below ``num_records`` when
        given) and the four roles must be pairwise disjoint.
        """
        path = Path(path)
        if num_records is not None:
            num_records = check_number("num_records", num_records, low=0, integer=True)
        if not path.is_file():
            raise TfmiError(f"split file {path} does not exist")
        with open_npz(path, "split file (.npz)") as stored:
            missing = [k for k in ("seed", *ROLES) if k not in stored.files]
            if missing:
                raise TfmiError(
                    f"{path} is not a tfmi split file: it lacks {', '.join(missing)}; "
                    "use the split.npz that tfmi train wrote"
                )
            seed = np.asarray(stored["seed"])
            roles = {role: np.asarray(stored[role]) for role in ROLES}
        if seed.shape != () or not np.issubdtype(seed.dtype, np.integer):
            raise TfmiError(
                f"{path}: seed must be one integer, got {seed.dtype} of shape {seed.shape}: the split "
                "file is damaged; re-run tfmi train to write a new one"
            )
        _check_roles(roles, num_records, str(path))
        return cls(int(seed), *(roles[r].astype(np.int64) for r in ROLES))


_REWRITE = "re-run tfmi train to write a new split"


def _check_roles(roles: dict[str, np.ndarray], num_records: int | None, where: str) -> None:
    """The checks of `MembershipSplit.check`, with ``where`` (a file, or "the split") in the message."""
    for role, values in roles.items():
        values = np.asarray(values)
        if values.ndim != 1:
            raise TfmiError(f"{where}: {role} has shape {values.shape}, not a 1-D list of record indices; "
                            f"{_REWRITE}")
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise TfmiError(f"{where}: {role} holds {values.dtype} values, not integer record indices; "
                            f"{_REWRITE}")
        if values.size and values.min() < 0:
            raise TfmiError(f"{where}: {role} holds the negative record index {int(values.min())}; "
                            f"{_REWRITE}")
        if num_records is not None and values.size and values.max() >= num_records:
            raise TfmiError(
                f"{where}: {role} indexes record {int(values.max())} but the dataset has {num_records} "
                f"records: the split was written for a different dataset; use that dataset or {_REWRITE}"
            )
        if len(np.unique(values)) != len(values):
            raise TfmiError(f"{where}: {role} lists a record more than once; {_REWRITE}")
    for i, first in enumerate(ROLES):
        for second in ROLES[i + 1:]:
            shared = np.intersect1d(roles[first], roles[second])
            if shared.size:
                raise TfmiError(
                    f"{where}: {first} and {second} share {shared.size} record(s) (e.g. {int(shared[0])}), "
                    f"but every record plays one role; {_REWRITE}"
                )


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
    labels = check_labels(labels)
    n = len(labels)
    target_size = check_number("target size", target_size, low=1, integer=True)
    seed = check_number("seed", seed, integer=True)
    if 2 * target_size > n:
        raise TfmiError(
            f"target size {target_size} needs {2 * target_size} records (members plus as many "
            f"non-members) but the dataset has {n}: use --target-size {n // 2} or less"
        )
    remaining = n - 2 * target_size
    if reference_size is None:
        reference_size = min(target_size, remaining // 2)
    if isinstance(reference_size, bool) or not isinstance(reference_size, numbers.Integral):
        raise TfmiError(
            f"reference size must be an integer between 0 and {remaining}, got {reference_size!r}"
        )
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
