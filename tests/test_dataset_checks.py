import numpy as np
import pytest

from tfmi.data import check_features, check_labels, make_dataset
from tfmi.errors import TfmiError


def test_labels_accept_integral_floats_and_column_vectors():
    assert check_labels(np.array([[0.0], [2.0], [1.0]]), 3).tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([0, 1, 3]), "must be in 0..2"),
        (np.array([0, -1, 2]), ">= 0"),
        (np.array([0.0, 1.5, 2.0]), "integer class indices, found 1.5"),
        (np.array([0.0, np.nan]), "NaN"),
        (np.eye(3), "one-hot"),
        (np.array([], dtype=int), "empty"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_bad_labels_are_rejected_with_a_reason(labels, message):
    with pytest.raises(TfmiError, match=message):
        check_labels(labels, 3)


def test_features_with_nan_name_the_first_bad_row():
    x = np.zeros((5, 3))
    x[3, 1] = np.nan
    with pytest.raises(TfmiError, match="1 row.*row 3"):
        check_features(x)


@pytest.mark.parametrize("x", [np.zeros(4), np.zeros((0, 3)), np.array([["a"], ["b"]])])
def test_features_must_be_numeric_rows(x):
    with pytest.raises(TfmiError):
        check_features(x)


def test_make_dataset_infers_classes_and_rejects_mismatches():
    data = make_dataset(np.ones((4, 2)), [0, 1, 2, 1])
    assert data.num_classes == 3 and data.x.dtype == np.float32
    x, y, k = data
    assert x.shape == (4, 2) and k == 3
    with pytest.raises(TfmiError, match="4 rows but labels have 3"):
        make_dataset(np.ones((4, 2)), [0, 1, 1])
    with pytest.raises(TfmiError, match="1-based"):
        make_dataset(np.ones((3, 2)), [1, 2, 3])
    with pytest.raises(TfmiError, match="at least 2 classes"):
        make_dataset(np.ones((3, 2)), [0, 0, 0])
