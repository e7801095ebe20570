"""Datasets by name: which exist, where each is found here, and `load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfmi.data import images, tabular
from tfmi.data.dataset import Dataset, make_dataset
from tfmi.data.download import downloads_allowed, resolve_data_dir
from tfmi.data.files import SUPPORTED_SUFFIXES, load_file
from tfmi.errors import TfmiError


def _load_digits(data_dir: Path | None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return make_dataset(
        x, bunch.target, 10, name="digits", source="scikit-learn (bundled)",
        default_model="cnn", default_target_size=450,
    )


def _tabular(spec: tabular.TabularSpec) -> Callable[[Path | None], Dataset]:
    return lambda data_dir: tabular.load_tabular(spec, data_dir)


@dataclass(frozen=True)
class DatasetInfo:
    """What `list_datasets` reports for one dataset."""

    name: str
    description: str
    available: bool
    source: str


def _where_tabular(spec: tabular.TabularSpec, data_dir: Path | None) -> tuple[bool, str]:
    found = tabular.locate(spec, data_dir)
    if found is not None:
        return True, str(found)
    if downloads_allowed():
        return False, f"downloads {spec.url} on first use (needs internet)"
    return False, f"missing: place {spec.archive} in a data dir"


def _where_keras(entry: images.KerasCached) -> tuple[bool, str]:
    if entry.cache_path().exists():
        return True, f"keras.datasets cache {entry.cache_path()}"
    if downloads_allowed():
        return False, "keras.datasets downloads it on first use (needs internet)"
    return False, f"missing: keras.datasets cache {entry.cache_path()} is empty"


def _where_cifar10(data_dir: Path | None) -> tuple[bool, str]:
    if data_dir is not None and (data_dir / images.CIFAR10_JPEG_TARBALL).is_file():
        return True, str(data_dir / images.CIFAR10_JPEG_TARBALL)
    return _where_keras(images.KERAS_CIFAR10)


def _where_fashion(data_dir: Path | None) -> tuple[bool, str]:
    folder = images.find_idx_dir(data_dir)
    if folder is not None:
        return True, str(folder)
    available, source = _where_keras(images.KERAS_FASHION)
    if available:
        return available, source
    return False, "missing: apt-get install dataset-fashion-mnist, or IDX files in a data dir"


@dataclass(frozen=True)
class _Entry:
    description: str
    load: Callable[[Path | None], Dataset]
    where: Callable[[Path | None], tuple[bool, str]]


_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(
        "8x8 handwritten digits, 1,797 x 10 classes (embedded default)", _load_digits,
        lambda data_dir: (True, "scikit-learn (bundled)"),
    ),
    "location30": _Entry(
        "Foursquare check-ins, 5,010 x 446 binary, 30 classes (Shokri et al.)",
        _tabular(tabular.LOCATION30), lambda d: _where_tabular(tabular.LOCATION30, d),
    ),
    "purchase100": _Entry(
        "shopping histories, 197,324 x 600 binary, 100 classes (Shokri et al.)",
        _tabular(tabular.PURCHASE100), lambda d: _where_tabular(tabular.PURCHASE100, d),
    ),
    "texas100": _Entry(
        "hospital discharges, 67,330 x 6,169 binary, 100 classes (Shokri et al.)",
        _tabular(tabular.TEXAS100), lambda d: _where_tabular(tabular.TEXAS100, d),
    ),
    "cifar10": _Entry(
        "32x32 colour images, 60,000 x 10 classes", images.load_cifar10, _where_cifar10,
    ),
    "cifar100": _Entry(
        "32x32 colour images, 60,000 x 100 classes", images.load_cifar100,
        lambda d: _where_keras(images.KERAS_CIFAR100),
    ),
    "fashion_mnist": _Entry(
        "28x28 clothing images, 70,000 x 10 classes", images.load_fashion_mnist, _where_fashion,
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, label_column: str = "label"
) -> Dataset:
    """Load a dataset by name, or a user's ``.npz``/``.csv`` file by path.

    Named datasets are looked up in ``data_dir`` (else ``$TFMI_DATA_DIR``), then in tfmi's cache,
    then downloaded where a canonical URL exists (see `tfmi.data.download`).

    >>> x, y, num_classes = load_dataset("digits")
    >>> x.shape, y[:5].tolist(), num_classes
    ((1797, 8, 8, 1), [0, 1, 2, 3, 4], 10)
    """
    if not isinstance(name, str | os.PathLike) or not isinstance(os.fspath(name), str):
        raise TfmiError(
            f"the dataset must be a name or a path, got {type(name).__name__} {name!r}: use one of "
            f"{', '.join(DATASET_NAMES)}, or a path to a .npz or .csv file"
        )
    name = os.fspath(name)
    folder = resolve_data_dir(data_dir)
    entry = _REGISTRY.get(name.lower().replace("-", "_"))
    if entry is not None:
        return entry.load(folder)
    path = Path(name).expanduser()
    if path.suffix in SUPPORTED_SUFFIXES:
        if not path.is_absolute() and not path.exists() and folder is not None:
            path = folder / path
        return load_file(path, label_column=label_column)
    raise TfmiError(
        f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}, or a path to a "
        ".npz or .csv file"
    )


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """Every named dataset, whether it is available here without a download, and from where.

    >>> [d.name for d in list_datasets() if d.available][:1]
    ['digits']
    """
    folder = resolve_data_dir(data_dir)
    infos = []
    for name, entry in _REGISTRY.items():
        available, source = entry.where(folder)
        infos.append(DatasetInfo(name, entry.description, available, source))
    return infos
