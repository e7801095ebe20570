import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmi.data import MembershipSplit, membership_split
from tfmi.data.splits import ROLES
from tfmi.errors import TfmiError


def _labels(n=1000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, size=n)


def test_parts_are_disjoint_and_cover_the_dataset():
    labels = _labels()
    split = membership_split(labels, target_size=300, reference_size=150, seed=3)
    parts = [getattr(split, role) for role in ROLES]
    assert [len(p) for p in parts] == [300, 300, 150, 250]
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union) == len(labels)


def test_default_reference_size_takes_half_of_the_rest():
    split = membership_split(_labels(), target_size=300, seed=0)
    assert split.sizes() == {"members": 300, "non_members": 300, "reference": 200, "shadow_pool": 200}


def test_same_seed_same_split_other_seed_other_split():
    labels = _labels()
    a, b = membership_split(labels, 200, seed=7), membership_split(labels, 200, seed=7)
    c = membership_split(labels, 200, seed=8)
    for role in ROLES:
        np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
    assert not np.array_equal(a.members, c.members)


def test_every_part_is_stratified():
    labels = np.repeat(np.arange(30), [50 + 7 * c for c in range(30)])  # unbalanced classes
    split = membership_split(labels, target_size=1500, reference_size=1000, seed=1)
    overall = np.bincount(labels, minlength=30) / len(labels)
    for role in ROLES:
        part = getattr(split, role)
        expected = overall * len(part)
        assert np.all(np.abs(np.bincount(labels[part], minlength=30) - expected) <= 1.5)


def test_membership_is_random_not_the_first_records():
    split = membership_split(_labels(), 300, seed=0)
    assert split.members.min() < 50 and split.members.max() > 950
    assert 0.4 < np.mean(split.members < 500) < 0.6


@pytest.mark.parametrize(
    "target, reference, message",
    [(501, None, "needs 1002 records.*use --target-size 500"), (0, None, "positive integer"),
     (400, 201, "between 0 and 200"), (400, -1, "between 0 and 200")],
)
def test_impossible_sizes_say_what_fits(target, reference, message):
    with pytest.raises(TfmiError, match=message):
        membership_split(_labels(), target, reference, seed=0)


def test_save_and_load_round_trip(tmp_path):
    split = membership_split(_labels(), 250, seed=5)
    split.save(tmp_path / "split.npz")
    again = MembershipSplit.load(tmp_path / "split.npz")
    assert again.seed == 5
    for role in ROLES:
        np.testing.assert_array_equal(getattr(again, role), getattr(split, role))
    np.savez(tmp_path / "other.npz", members=split.members)
    with pytest.raises(TfmiError, match="lacks seed, non_members"):
        MembershipSplit.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TfmiError, match="junk.npz"):
        MembershipSplit.load(tmp_path / "junk.npz")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 400), classes=st.integers(1, 12), frac=st.floats(0.01, 0.5),
    seed=st.integers(0, 2**31),
)
def test_split_properties_hold_for_any_sizes(n, classes, frac, seed):
    labels = np.random.default_rng(seed).integers(0, classes, size=n)
    target = max(1, int(n * frac))
    split = membership_split(labels, target, seed=seed)
    sizes = split.sizes()
    assert sizes["members"] == sizes["non_members"] == target
    assert sum(sizes.values()) == n
    union = np.concatenate([getattr(split, r) for r in ROLES])
    assert np.array_equal(np.sort(union), np.arange(n))
