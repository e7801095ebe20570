"""Small files in the real archive formats, written by the tests themselves."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np


def add_to_tar(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            add_to_tar(archive, name, payload)
    return path


def shokri_rows(labels, features, quote_labels: bool) -> bytes:
    lines = []
    for label, row in zip(labels, features, strict=True):
        head = f'"{label}"' if quote_labels else str(label)
        lines.append(",".join([head, *map(str, row)]))
    return ("\n".join(lines) + "\n").encode()


def random_binary(n: int, d: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 2, size=(n, d))
    labels = np.arange(n) % classes + 1  # 1-based, every class present
    return features, labels


def write_idx(path: Path, array: np.ndarray) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())
    return path
