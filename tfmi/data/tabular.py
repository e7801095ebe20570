"""The tabular MI benchmarks of Shokri et al. (2017): Location30, Purchase100, Texas100.

Archive conventions (github.com/privacytrustlab/datasets):

- ``dataset_location.tgz``: one CSV ``bangkok``, rows ``"label",f1..f446``, labels 1..30;
- ``dataset_purchase.tgz``: one CSV ``dataset_purchase``, rows ``label,f1..f600``, labels 1..100;
- ``dataset_texas.tgz``: ``texas/100/feats`` (6,169 comma-separated features per row) and
  ``texas/100/labels`` (one label per row, 1..100).

A data dir may instead hold ``<name>.npz`` with arrays ``features`` and ``labels`` (1- or 0-based).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfmi.data.archives import cached_parse, open_npz, parse_numeric_csv, read_tar_member, readable
from tfmi.data.dataset import Dataset, check_labels, make_dataset
from tfmi.data.download import download, find_file
from tfmi.errors import TfmiError

_REPO = "https://github.com/privacytrustlab/datasets/raw/master/"


@dataclass(frozen=True)
class TabularSpec:
    name: str
    archive: str
    num_classes: int
    num_features: int
    csv_member: str | None = None  # "label,features" rows in one file
    features_member: str | None = None  # or features and labels in two files
    labels_member: str | None = None
    sha256: str | None = None  # None: no published checksum; the first download's is recorded

    @property
    def npz(self) -> str:
        return f"{self.name}.npz"

    @property
    def url(self) -> str:
        return _REPO + self.archive


LOCATION30 = TabularSpec(
    "location30", "dataset_location.tgz", 30, 446, csv_member="bangkok",
    sha256="927203f85a868f8ee17a0ded1dc61699efe602167beabe34fbf45b4b1de94b33",
)
PURCHASE100 = TabularSpec(
    "purchase100", "dataset_purchase.tgz", 100, 600, csv_member="dataset_purchase"
)
TEXAS100 = TabularSpec(
    "texas100", "dataset_texas.tgz", 100, 6169,
    features_member="texas/100/feats", labels_member="texas/100/labels",
)
TABULAR_SPECS = {spec.name: spec for spec in (LOCATION30, PURCHASE100, TEXAS100)}


def locate(spec: TabularSpec, data_dir: Path | None) -> Path | None:
    """The local file this dataset would load from, or None if it must be downloaded."""
    return find_file((spec.archive, spec.npz), data_dir)


def load_tabular(spec: TabularSpec, data_dir: Path | None) -> Dataset:
    """Load a Shokri et al. dataset from the data dir, the cache, or its canonical URL."""
    path = locate(spec, data_dir)
    if path is None:
        try:
            path = download(spec.url, spec.archive, spec.sha256)
        except TfmiError as exc:
            where = f"data dir {data_dir}" if data_dir else "a data dir (--data-dir or $TFMI_DATA_DIR)"
            raise TfmiError(
                f"{spec.name} not found: place {spec.archive} or {spec.npz} in {where} "
                f"[{exc}]"
            ) from None
    if path.suffix == ".npz":
        x, labels = read_features_labels_npz(path)
    else:
        arrays = cached_parse(path, spec.name, lambda p: _parse_archive(spec, p))
        x, labels = arrays["x"], arrays["labels"]
    _check_width(np.asarray(x), spec, path)
    return make_dataset(
        x, _zero_based(labels, spec, path), spec.num_classes, name=spec.name, source=str(path),
        default_model="mlp", default_target_size=_default_target_size(len(labels)),
    )


def _default_target_size(n: int) -> int:
    # Location30 (5,010 records): 1,500 members, as in the paper's line of work.
    return min(1500, n // 3) if n < 20000 else 10000


def _parse_archive(spec: TabularSpec, path: Path) -> dict[str, np.ndarray]:
    with readable(path, f"{spec.name} archive (.tgz)"), tarfile.open(path, "r:*") as archive:
        if spec.csv_member is not None:
            table = parse_numeric_csv(read_tar_member(archive, spec.csv_member, path), str(path))
            labels, x = table[:, 0], table[:, 1:]
        else:
            x = parse_numeric_csv(read_tar_member(archive, spec.features_member, path), str(path))
            labels = parse_numeric_csv(read_tar_member(archive, spec.labels_member, path), str(path))
            if labels.shape[1] != 1:
                raise TfmiError(f"{path}: {spec.labels_member} must hold one label per row")
            labels = labels[:, 0]
            if len(labels) != len(x):
                raise TfmiError(
                    f"{path}: {len(x)} feature rows but {len(labels)} labels; the archive is damaged"
                )
    _check_width(x, spec, path)
    return {"x": x.astype(np.uint8) if np.isin(x, (0, 1)).all() else x, "labels": labels}


def _check_width(x: np.ndarray, spec: TabularSpec, path: Path) -> None:
    """Refuse features that are not ``spec.num_features`` per record: another dataset's file."""
    if x.ndim != 2 or x.shape[1] != spec.num_features:
        found = f"{x.shape[1]} features per record" if x.ndim == 2 else f"feature shape {x.shape}"
        raise TfmiError(
            f"{path.name} has {found} but {spec.name} has {spec.num_features}: it is not the "
            f"{spec.name} data; replace {path} with {spec.archive} or a {spec.npz} of "
            f"{spec.num_features}-feature rows"
        )


def _zero_based(labels: np.ndarray, spec: TabularSpec, path: Path) -> np.ndarray:
    """Shokri archives number classes 1..K; accept 0..K-1 too (already converted files)."""
    labels = check_labels(labels, None, f"{path.name} labels")
    low, high = labels.min(), labels.max()
    if low >= 1 and high <= spec.num_classes:
        return labels - 1
    if low >= 0 and high < spec.num_classes:
        return labels
    raise TfmiError(
        f"{path}: labels range {low:g}..{high:g}, but {spec.name} has classes 1..{spec.num_classes}: "
        f"it is not the {spec.name} data; replace it with {spec.archive} or a {spec.npz} labelled "
        f"1..{spec.num_classes} (or 0..{spec.num_classes - 1})"
    )


def read_features_labels_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays from an ``.npz`` holding ``x``/``y`` or ``features``/``labels`` (checked by `open_npz`)."""
    with open_npz(path, ".npz file") as stored:
        for x_key, y_key in (("x", "y"), ("features", "labels")):
            if x_key in stored.files and y_key in stored.files:
                return stored[x_key], stored[y_key]
        raise TfmiError(
            f"{path} holds arrays {sorted(stored.files)}; expected 'x' and 'y' "
            "or 'features' and 'labels'"
        )
