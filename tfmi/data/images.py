"""Image datasets: CIFAR-10/100 and Fashion-MNIST, from local files or the ``keras.datasets`` cache.

- ``cifar10``: a tarball ``cifar10-jpeg.tar.gz`` laid out ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg`` in the data dir (decoded with TensorFlow, parsed once and cached), or the
  ``keras.datasets`` cache / download.
- ``cifar100``: the ``keras.datasets`` cache / download.
- ``fashion_mnist``: IDX files (``train-images-idx3-ubyte.gz`` ...) in the data dir or in
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), or ``keras.datasets``.

Pixels are returned as float32 in [0, 1], shape (n, height, width, channels); the official train and
test parts are concatenated (train first) since membership splits draw from all records.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfmi.data.archives import cached_parse, readable
from tfmi.data.dataset import Dataset, make_dataset
from tfmi.data.download import downloads_allowed
from tfmi.errors import TfmiError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
FASHION_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
)
CIFAR10_JPEG_TARBALL = "cifar10-jpeg.tar.gz"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class KerasCached:
    """A ``keras.datasets`` entry and the folder its cache occupies under ``~/.keras/datasets``."""

    name: str
    module: str
    cache_entry: str

    def cache_path(self) -> Path:
        base = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
        return base / "datasets" / self.cache_entry


KERAS_CIFAR10 = KerasCached("cifar10", "cifar10", "cifar-10-batches-py")
KERAS_CIFAR100 = KerasCached("cifar100", "cifar100", "cifar-100-python")
KERAS_FASHION = KerasCached("fashion_mnist", "fashion_mnist", "fashion-mnist")


def load_keras_dataset(entry: KerasCached, hint: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Load from the ``keras.datasets`` cache, downloading only when the cache is empty and allowed."""
    cached = entry.cache_path().exists()
    if not cached and not downloads_allowed():
        raise TfmiError(f"{entry.name} not found: {hint} (downloads are off: TFMI_OFFLINE is set)")
    import keras

    loader = getattr(keras.datasets, entry.module)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as exc:  # keras raises bare Exception subclasses on failed downloads
        raise TfmiError(f"{entry.name} not found: {hint} (keras.datasets failed: {exc})") from None
    x = np.concatenate([x_train, x_test])
    y = np.concatenate([y_train, y_test]).reshape(-1)
    return x, y, f"keras.datasets cache {entry.cache_path()}"


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (n, h, w[, c]) -> float32 in [0, 1] with a channel axis."""
    x = pixels.astype(np.float32) / 255.0
    return x[..., None] if x.ndim == 3 else x


# --- CIFAR-10 from a tarball of JPEGs -------------------------------------------------------------


def parse_jpeg_tarball(path: Path, class_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decode every ``<split>/<class>/<file>.jpg`` of a tarball; train images first, then test."""
    import tensorflow as tf

    index = {name: i for i, name in enumerate(class_names)}
    encoded: dict[str, list[tuple[str, bytes, int]]] = {"train": [], "test": []}
    with readable(path, "tarball of JPEGs (.tar.gz)"), tarfile.open(path, "r:*") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg")):
                continue
            if len(parts) < 3 or parts[-3] not in encoded:
                raise TfmiError(
                    f"{path}: member {member.name} is not laid out as train|test/<class>/<file>.jpg"
                )
            split, label = parts[-3], parts[-2]
            if label not in index:
                raise TfmiError(
                    f"{path}: unknown class folder {label!r}; expected one of {', '.join(class_names)}"
                )
            encoded[split].append((member.name, archive.extractfile(member).read(), index[label]))
    ordered = sorted(encoded["train"]) + sorted(encoded["test"])
    if not ordered:
        raise TfmiError(f"{path} holds no JPEG images laid out as train|test/<class>/<file>.jpg")
    images = tf.data.Dataset.from_tensor_slices([blob for _, blob, _ in ordered])
    images = images.map(lambda b: tf.io.decode_jpeg(b, channels=3), tf.data.AUTOTUNE)
    try:
        x = np.concatenate(list(images.batch(4096).as_numpy_iterator()))
    except (tf.errors.InvalidArgumentError, ValueError) as exc:
        raise TfmiError(
            f"{path}: an image could not be decoded or images differ in size ({exc.__class__.__name__}); "
            "the tarball is corrupt or mixes image sizes"
        ) from None
    labels = np.array([label for _, _, label in ordered], dtype=np.int64)
    return {"x": x, "labels": labels, "num_train": np.array(len(encoded["train"]))}


def load_cifar10(data_dir: Path | None) -> Dataset:
    tarball = data_dir / CIFAR10_JPEG_TARBALL if data_dir else None
    hint = (
        f"place {CIFAR10_JPEG_TARBALL} (train/<class>/*.jpg, test/<class>/*.jpg) in a data dir "
        "(--data-dir or $TFMI_DATA_DIR), or fill the keras.datasets cache"
    )
    if tarball is not None and tarball.is_file():
        arrays = cached_parse(tarball, "cifar10-jpeg", lambda p: parse_jpeg_tarball(p, CIFAR10_CLASSES))
        pixels, labels, source = arrays["x"], arrays["labels"], str(tarball)
    else:
        pixels, labels, source = load_keras_dataset(KERAS_CIFAR10, hint)
    return make_dataset(
        to_unit_float(pixels), labels, 10, name="cifar10", source=source, default_model="alexnet",
        default_target_size=10000, class_names=CIFAR10_CLASSES,
    )


def load_cifar100(data_dir: Path | None) -> Dataset:
    pixels, labels, source = load_keras_dataset(
        KERAS_CIFAR100, "fill the keras.datasets cache (keras.datasets.cifar100.load_data())"
    )
    return make_dataset(
        to_unit_float(pixels), labels, 100, name="cifar100", source=source,
        default_model="alexnet", default_target_size=10000,
    )


# --- Fashion-MNIST from IDX files ---------------------------------------------------------------

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with readable(path, "IDX file"), opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise TfmiError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise TfmiError(
            f"{path}: header promises shape {shape} ({expected} bytes) but holds "
            f"{len(raw) - header} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find_idx_dir(data_dir: Path | None) -> Path | None:
    """A folder holding all four Fashion-MNIST IDX files: data dir first, then the Debian path."""
    for folder in (data_dir, data_dir / "fashion-mnist" if data_dir else None, FASHION_SYSTEM_DIR):
        if folder is not None and all((folder / name).is_file() for name in IDX_FILES):
            return folder
    return None


def load_fashion_mnist(data_dir: Path | None) -> Dataset:
    folder = find_idx_dir(data_dir)
    if folder is not None:
        x_train, y_train, x_test, y_test = (read_idx(folder / name) for name in IDX_FILES)
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise TfmiError(f"{folder}: image and label files disagree on the number of examples")
        pixels, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        source = str(folder)
    else:
        pixels, labels, source = load_keras_dataset(
            KERAS_FASHION,
            "install the Debian package dataset-fashion-mnist, or place the four IDX .gz files in "
            "a data dir (--data-dir or $TFMI_DATA_DIR)",
        )
    return make_dataset(
        to_unit_float(pixels), labels, 10, name="fashion_mnist", source=source,
        default_model="cnn", default_target_size=10000, class_names=FASHION_CLASSES,
    )
