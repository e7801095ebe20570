"""Shared fixtures. Tests never download: TFMI_OFFLINE is set and the cache is a fresh temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TFMI_OFFLINE", "1")
    monkeypatch.setenv("TFMI_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tfmi-cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.getbasetemp() / "keras-home"))
    monkeypatch.delenv("TFMI_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets of ../shared/data (or $TFMI_TEST_DATA_DIR); skips where absent."""
    folder = Path(os.environ.get("TFMI_TEST_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (folder / "dataset_location.tgz").is_file():
        pytest.skip(f"real datasets not found in {folder} (set TFMI_TEST_DATA_DIR)")
    return folder
