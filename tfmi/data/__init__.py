"""Datasets by name or path, and seeded membership splits.

>>> from tfmi.data import load_dataset, membership_split
>>> data = load_dataset("digits")
>>> split = membership_split(data.y, target_size=450, seed=0)
>>> split.sizes()["members"], split.sizes()["non_members"]
(450, 450)
"""

from tfmi.data.dataset import Dataset, check_features, check_labels, make_dataset
from tfmi.data.registry import DATASET_NAMES, DatasetInfo, list_datasets, load_dataset
from tfmi.data.splits import MembershipSplit, membership_split

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "DatasetInfo",
    "MembershipSplit",
    "check_features",
    "check_labels",
    "list_datasets",
    "load_dataset",
    "make_dataset",
    "membership_split",
]
