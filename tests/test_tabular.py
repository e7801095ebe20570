import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import random_binary, shokri_rows, write_tgz
from tfmi.data import load_dataset, tabular
from tfmi.data.download import download
from tfmi.errors import TfmiError


def _location_archive(folder: Path, n=60) -> tuple[Path, np.ndarray, np.ndarray]:
    features, labels = random_binary(n, 446, 30)
    path = write_tgz(folder / "dataset_location.tgz",
                     {"bangkok": shokri_rows(labels, features, quote_labels=True)})
    return path, features, labels


def test_location_archive_format_quoted_one_based_labels(tmp_path):
    _, features, labels = _location_archive(tmp_path)
    data = load_dataset("location30", tmp_path)
    assert data.num_classes == 30 and data.x.shape == (60, 446)
    np.testing.assert_array_equal(data.x, features)
    np.testing.assert_array_equal(data.y, labels - 1)
    assert data.source.endswith("dataset_location.tgz")


def test_purchase_archive_format_is_parsed(tmp_path):
    features, labels = random_binary(120, 600, 100, seed=1)
    write_tgz(tmp_path / "dataset_purchase.tgz",
              {"dataset_purchase": shokri_rows(labels, features, quote_labels=False)})
    data = load_dataset("purchase100", tmp_path)
    assert data.x.shape == (120, 600) and data.num_classes == 100
    np.testing.assert_array_equal(data.y, labels - 1)


def test_texas_archive_format_features_and_labels_in_two_members(tmp_path):
    features, labels = random_binary(110, 6169, 100, seed=2)
    feats = "\n".join(",".join(map(str, row)) for row in features).encode()
    write_tgz(tmp_path / "dataset_texas.tgz", {
        "texas/100/feats": feats,
        "texas/100/labels": ("\n".join(map(str, labels)) + "\n").encode(),
    })
    data = load_dataset("texas100", tmp_path)
    np.testing.assert_array_equal(data.x, features)
    np.testing.assert_array_equal(data.y, labels - 1)


def test_npz_with_features_and_labels(tmp_path):
    features, labels = random_binary(40, 446, 30)
    np.savez(tmp_path / "location30.npz", features=features.astype(np.uint8), labels=labels)
    data = load_dataset("location30", tmp_path)
    np.testing.assert_array_equal(data.y, labels - 1)


def test_npz_without_expected_keys(tmp_path):
    np.savez(tmp_path / "location30.npz", a=np.zeros((3, 446)), b=np.zeros(3))
    with pytest.raises(TfmiError, match=r"holds arrays \['a', 'b'\]; expected 'x' and 'y'"):
        load_dataset("location30", tmp_path)


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_archive_is_reported_as_corrupt(tmp_path, cut):
    path, _, _ = _location_archive(tmp_path, n=300)
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * cut)])
    with pytest.raises(TfmiError, match="corrupt or truncated"):
        load_dataset("location30", tmp_path)


def test_wrong_member_and_wrong_width_and_bad_labels(tmp_path):
    write_tgz(tmp_path / "dataset_location.tgz", {"paris": b"1,0,1\n"})
    with pytest.raises(TfmiError, match="no member 'bangkok'"):
        load_dataset("location30", tmp_path)
    write_tgz(tmp_path / "dataset_location.tgz", {"bangkok": b'"1",0,1\n"2",1,0\n'})
    with pytest.raises(TfmiError, match="2 features per record but location30 has 446"):
        load_dataset("location30", tmp_path)
    features, labels = random_binary(5, 446, 5)
    labels[0] = 31
    write_tgz(tmp_path / "dataset_location.tgz", {"bangkok": shokri_rows(labels, features, True)})
    with pytest.raises(TfmiError, match="labels range 2..31, but location30 has classes 1..30"):
        load_dataset("location30", tmp_path)


def test_missing_dataset_offline_names_the_file_and_the_option(tmp_path):
    with pytest.raises(TfmiError, match="place dataset_purchase.tgz or purchase100.npz in data dir"):
        load_dataset("purchase100", tmp_path)
    with pytest.raises(TfmiError, match=r"--data-dir or \$TFMI_DATA_DIR"):
        load_dataset("texas100")


def test_data_dir_from_environment(tmp_path, monkeypatch):
    _location_archive(tmp_path)
    monkeypatch.setenv("TFMI_DATA_DIR", str(tmp_path))
    assert len(load_dataset("location30")) == 60
    monkeypatch.setenv("TFMI_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(TfmiError, match=r"nope \(\$TFMI_DATA_DIR\) does not exist"):
        load_dataset("location30")


def test_download_verifies_sha256_and_caches(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    source, _, _ = _location_archive(mirror)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    cache = Path(os.environ["TFMI_CACHE_DIR"])
    monkeypatch.delenv("TFMI_OFFLINE")
    with pytest.raises(TfmiError, match="has sha256 .* expected 0000"):
        download(source.as_uri(), "dataset_location.tgz", "0" * 64)
    assert not (cache / "dataset_location.tgz").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]

    spec = tabular.TabularSpec("location30", "dataset_location.tgz", 30, 446,
                               csv_member="bangkok", sha256=digest)
    monkeypatch.setattr(tabular, "_REPO", source.parent.as_uri() + "/")
    data = tabular.load_tabular(spec, data_dir=None)
    assert len(data) == 60 and (cache / "dataset_location.tgz").is_file()
    (cache / "dataset_location.tgz").unlink()


def test_unpinned_download_records_its_checksum(tmp_path, monkeypatch):
    payload = tmp_path / "blob.bin"
    payload.write_bytes(b"first")
    monkeypatch.delenv("TFMI_OFFLINE")
    path = download(payload.as_uri(), "blob.bin", None)
    recorded = path.with_name("blob.bin.sha256").read_text().strip()
    assert recorded == hashlib.sha256(b"first").hexdigest()
    payload.write_bytes(b"changed upstream")
    with pytest.raises(TfmiError, match="changed upstream"):
        download(payload.as_uri(), "blob.bin", None)


def test_real_location30_archive_matches_its_npz(shared_data_dir, tmp_path):
    from_archive = load_dataset("location30", shared_data_dir)
    (tmp_path / "location30.npz").symlink_to(shared_data_dir / "location30.npz")
    from_npz = load_dataset("location30", tmp_path)
    assert from_archive.x.shape == (5010, 446) and from_archive.num_classes == 30
    np.testing.assert_array_equal(from_archive.x, from_npz.x)
    np.testing.assert_array_equal(from_archive.y, from_npz.y)
    assert np.bincount(from_archive.y).min() > 0
