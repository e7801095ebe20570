import gzip
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures import add_to_tar, write_idx
from tfmi.data import load_dataset
from tfmi.data.images import CIFAR10_CLASSES, read_idx
from tfmi.errors import TfmiError


def _jpeg(seed: int, size=32) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth images survive JPEG compression closely
    base = rng.integers(30, 220, size=3)
    image = np.tile(base, (size, size, 1)).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=95).numpy(), image


def _cifar_tarball(path, per_class=(2, 1), top="", extra=None):
    truth = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as archive:
        # test first: the order inside the tarball must not matter
        for split, count in zip(("test", "train"), per_class[::-1], strict=True):
            for label, name in enumerate(CIFAR10_CLASSES):
                for i in range(count):
                    blob, image = _jpeg(hash((split, label, i)) % 2**32)
                    add_to_tar(archive, f"{top}{split}/{name}/{i:04d}.jpg", blob)
                    truth[split].append((f"{name}/{i:04d}", label, image))
        for name, blob in (extra or {}).items():
            add_to_tar(archive, name, blob)
    return truth


def test_cifar10_from_jpeg_tarball_train_then_test(tmp_path):
    truth = _cifar_tarball(tmp_path / "cifar10-jpeg.tar.gz", per_class=(2, 1), top="cifar10/")
    data = load_dataset("cifar10", tmp_path)
    assert data.x.shape == (30, 32, 32, 3) and data.x.dtype == np.float32
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0
    expected = sorted(truth["train"]) + sorted(truth["test"])
    np.testing.assert_array_equal(data.y, [label for _, label, _ in expected])
    pixels = np.stack([image for _, _, image in expected]).astype(np.float32) / 255
    assert np.abs(data.x - pixels).max() < 0.05  # JPEG is lossy
    again = load_dataset("cifar10", tmp_path)  # second load comes from the parsed cache
    np.testing.assert_array_equal(again.x, data.x)


def test_cifar10_tarball_with_unknown_class_or_bad_jpeg(tmp_path):
    _cifar_tarball(tmp_path / "cifar10-jpeg.tar.gz", extra={"train/zebra/0000.jpg": _jpeg(1)[0]})
    with pytest.raises(TfmiError, match="unknown class folder 'zebra'"):
        load_dataset("cifar10", tmp_path)
    _cifar_tarball(tmp_path / "cifar10-jpeg.tar.gz", extra={"train/cat/9999.jpg": b"\xff\xd8junk"})
    with pytest.raises(TfmiError, match="could not be decoded"):
        load_dataset("cifar10", tmp_path)


def test_cifar_missing_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(TfmiError, match="place cifar10-jpeg.tar.gz .* in a data dir"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(TfmiError, match="cifar100 not found"):
        load_dataset("cifar100")


def test_idx_round_trip_and_fashion_mnist_from_data_dir(tmp_path):
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
    labels = {"train": np.arange(12) % 10, "t10k": np.arange(5)}
    for part in ("train", "t10k"):
        write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", images[part])
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", labels[part])
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images["train"])
    data = load_dataset("fashion_mnist", tmp_path)
    assert data.x.shape == (17, 28, 28, 1)
    np.testing.assert_allclose(data.x[12:, ..., 0], images["t10k"] / 255, atol=1e-6)
    np.testing.assert_array_equal(data.y, np.concatenate([labels["train"], labels["t10k"]]))


def test_truncated_or_foreign_idx_files(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((4, 28, 28)))
    with gzip.open(path) as handle:
        blob = handle.read()
    with gzip.open(path, "wb") as handle:
        handle.write(blob[:-10])
    with pytest.raises(TfmiError, match="truncated or corrupt"):
        read_idx(path)
    (tmp_path / "y").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(TfmiError, match="bad magic"):
        read_idx(tmp_path / "y")


def test_real_cifar10_jpeg_tarball(shared_data_dir):
    data = load_dataset("cifar10", shared_data_dir)
    assert data.x.shape == (60000, 32, 32, 3)
    assert np.bincount(data.y).tolist() == [6000] * 10
    assert np.bincount(data.y[:50000]).tolist() == [5000] * 10  # official train part first
    channel_means = data.x.reshape(-1, 3).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(channel_means, [0.491, 0.482, 0.447], atol=0.01)
