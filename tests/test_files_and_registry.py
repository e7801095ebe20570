import numpy as np
import pytest

from tfmi.data import DATASET_NAMES, list_datasets, load_dataset
from tfmi.errors import TfmiError


def test_user_npz_with_x_y_and_csv_with_label_column(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 4
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    data = load_dataset(str(tmp_path / "mine.npz"))
    assert data.num_classes == 4 and data.name == "mine" and data.default_model == "mlp"
    np.testing.assert_allclose(data.x, x.astype(np.float32))

    rows = ["a,target,b"] + [f"{r[0]},{label},{r[1]}" for r, label in zip(x, y, strict=True)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path / "mine.csv"), label_column="target")
    np.testing.assert_allclose(data.x, x[:, :2].astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(data.y, y)


def test_relative_file_is_found_in_the_data_dir(tmp_path):
    np.savez(tmp_path / "mine.npz", features=np.ones((4, 2)), labels=[0, 1, 0, 1])
    assert len(load_dataset("mine.npz", tmp_path)) == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b\n1,2\n", "no column 'label'.*--label-column"),
        ("a,label\n1,x\n", "every value must be numeric"),
        ("a,label\n", "header but no rows"),
        ("", "is empty"),
        ("a,label\nnan,1\n2,0\n", "NaN or infinity"),
        ("a,label\n1,1.5\n2,0\n", "found 1.5"),
    ],
)
def test_bad_csv_files(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(TfmiError, match=message):
        load_dataset(str(tmp_path / "bad.csv"))


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(TfmiError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.npz"))
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(TfmiError, match="unknown dataset"):
        load_dataset(str(tmp_path / "data.txt"))
    (tmp_path / "broken.npz").write_bytes(b"\x00" * 64)
    with pytest.raises(TfmiError, match="not a valid .npz"):
        load_dataset(str(tmp_path / "broken.npz"))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(TfmiError) as info:
        load_dataset("mnist")
    for name in DATASET_NAMES:
        assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_digits_is_the_embedded_default():
    data = load_dataset("digits")
    assert data.x.shape == (1797, 8, 8, 1) and data.num_classes == 10
    assert 0.0 <= data.x.min() and data.x.max() == 1.0
    assert data.default_model == "cnn"


def test_list_datasets_reports_availability(tmp_path, shared_data_dir):
    offline_empty = {info.name: info for info in list_datasets(tmp_path)}
    assert set(offline_empty) == set(DATASET_NAMES)
    assert offline_empty["digits"].available
    assert not offline_empty["location30"].available
    assert "dataset_location.tgz" in offline_empty["location30"].source
    here = {info.name: info for info in list_datasets(shared_data_dir)}
    assert here["location30"].available and here["cifar10"].available
    assert here["location30"].source.startswith(str(shared_data_dir))
