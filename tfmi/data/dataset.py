"""The `Dataset` container and the checks every array goes through where it enters tfmi."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from tfmi.errors import TfmiError


@dataclass(frozen=True)
class Dataset:
    """Features, integer labels 0..num_classes-1 and where they came from.

    Unpacks like a tuple: ``x, y, num_classes = load_dataset("digits")``.

    >>> import numpy as np
    >>> d = Dataset(np.zeros((4, 2), np.float32), np.array([0, 1, 1, 0]), 2, name="toy")
    >>> x, y, k = d
    >>> x.shape, k
    ((4, 2), 2)
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str = "custom"
    source: str = "in memory"
    default_model: str = "mlp"
    default_target_size: int | None = None
    class_names: tuple[str, ...] = field(default=())

    def __iter__(self) -> Iterator:
        return iter((self.x, self.y, self.num_classes))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def check_labels(y: np.ndarray, num_classes: int | None = None, what: str = "labels") -> np.ndarray:
    """Return ``y`` as int64 after checking it holds integers 0..num_classes-1.

    >>> check_labels(np.array([0.0, 2.0]), 3)
    array([0, 2])
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise TfmiError(
            f"{what} must be a 1-D array of class indices, got shape {y.shape} "
            "(one-hot labels? convert them with argmax(axis=1))"
        )
    if y.size == 0:
        raise TfmiError(f"{what} is empty: give at least one example")
    if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise TfmiError(
            f"{what} must be integer class indices, got dtype {y.dtype}: map the classes to 0..K-1 "
            "(e.g. np.unique(labels, return_inverse=True)[1])"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)):
            raise TfmiError(f"{what} contain NaN or infinity: remove or fix those rows")
        if not np.all(y == np.round(y)):
            bad = y[y != np.round(y)][0]
            raise TfmiError(f"{what} must be integer class indices, found {bad.item()!r}")
    y = y.astype(np.int64)
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise TfmiError(f"{what} must be class indices >= 0, found {low}")
    if num_classes is not None and high >= num_classes:
        raise TfmiError(
            f"{what} must be in 0..{num_classes - 1} for {num_classes} classes, found {high}"
        )
    return y


def check_features(x: np.ndarray, what: str = "features") -> np.ndarray:
    """Return ``x`` as float32 after checking it is a non-empty, finite numeric array.

    >>> check_features(np.array([[1, 0], [0, 1]])).dtype
    dtype('float32')
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise TfmiError(
            f"{what} must have one row per example (at least 2-D), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise TfmiError(f"{what} is empty: give at least one example")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TfmiError(f"{what} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        rows = np.unique(np.nonzero(~np.isfinite(x.reshape(len(x), -1)))[0])
        raise TfmiError(
            f"{what} contain NaN or infinity in {len(rows)} row(s), first at row {int(rows[0])}: "
            "impute or drop them"
        )
    return x


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int | None = None,
    *,
    name: str = "custom",
    source: str = "in memory",
    **metadata,
) -> Dataset:
    """Validate arrays and wrap them in a `Dataset` (class count inferred when not given).

    >>> make_dataset(np.ones((3, 2)), [0, 1, 2]).num_classes
    3
    """
    x = check_features(x)
    y = check_labels(y, num_classes)
    if len(x) != len(y):
        raise TfmiError(f"features have {len(x)} rows but labels have {len(y)}: they must match")
    if num_classes is None:
        num_classes = int(y.max()) + 1
        if 0 not in y:
            raise TfmiError(
                f"labels start at {int(y.min())}, not 0: labels must be 0-based class indices "
                "(1-based? subtract 1)"
            )
    if num_classes < 2:
        raise TfmiError(f"a classifier needs at least 2 classes, the labels have {num_classes}")
    return Dataset(x, y, int(num_classes), name=name, source=source, **metadata)
