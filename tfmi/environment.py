"""Versions of the libraries a result was produced with, for the record beside every artifact."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("tfmi", "tensorflow", "keras", "tensorflow-privacy", "numpy", "scikit-learn", "click")


def library_versions() -> dict[str, str]:
    """Installed versions of tfmi's stack (``"not installed"`` where absent), plus Python's.

    >>> sorted(library_versions())[:3]
    ['click', 'keras', 'numpy']
    """
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
