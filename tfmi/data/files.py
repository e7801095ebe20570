"""A user's own data file: ``.npz`` (``x``/``y`` or ``features``/``labels``) or ``.csv`` with a header."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from tfmi.data.archives import readable
from tfmi.data.dataset import Dataset, make_dataset
from tfmi.data.tabular import read_features_labels_npz
from tfmi.errors import TfmiError

SUPPORTED_SUFFIXES = (".npz", ".csv")


def read_arrays(path: Path, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """The raw features and labels of a user's ``.npz`` or ``.csv``, before any dataset-level check.

    A file may hold part of a dataset (one class, one record): `load_file` checks it as a whole
    dataset, an audit checks the labels against the model's class count instead.
    """
    path = Path(path)
    if not path.is_file():
        raise TfmiError(f"data file {path} does not exist")
    if path.suffix == ".npz":
        return read_features_labels_npz(path)
    if path.suffix == ".csv":
        return _read_csv(path, label_column)
    raise TfmiError(
        f"{path}: unsupported file type {path.suffix!r}; give a .npz (x/y or features/labels) "
        "or a .csv with a header"
    )


def load_file(path: Path, label_column: str = "label") -> Dataset:
    """Load a user's ``.npz`` or ``.csv`` as a whole dataset; labels must be 0-based class indices.

    The CSV needs a header row; ``label_column`` names the label column, every other column is a
    numeric feature.
    """
    x, y = read_arrays(path, label_column)
    default_model = "mlp" if np.ndim(x) == 2 else "cnn"
    return make_dataset(
        x, y, name=path.stem, source=str(path), default_model=default_model,
        default_target_size=max(1, len(y) // 4),
    )


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with readable(path, "CSV file"):
        text = path.read_text(encoding="utf-8-sig")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header:
        raise TfmiError(f"{path} is empty; expected a header row and one row per example")
    header = [name.strip() for name in header]
    if label_column not in header:
        raise TfmiError(
            f"{path} has no column {label_column!r} (columns: {', '.join(header[:8])}"
            f"{' ...' if len(header) > 8 else ''}); name the label column with --label-column"
        )
    if not any(row for row in rows):
        raise TfmiError(f"{path} has a header but no rows")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise TfmiError(f"{path}: every value must be numeric ({exc})") from None
    if table.shape[1] != len(header):
        raise TfmiError(f"{path}: rows have {table.shape[1]} values but the header names {len(header)}")
    label_index = header.index(label_column)
    return np.delete(table, label_index, axis=1), table[:, label_index]
