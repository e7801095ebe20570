"""Reading archives safely: one place that turns unreadable or corrupt files into `TfmiError`."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tfmi.data.download import cache_dir, sha256_of
from tfmi.errors import TfmiError

CORRUPT_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile)


@contextmanager
def readable(path: Path, what: str) -> Iterator[None]:
    """Re-raise corruption and parse errors while reading ``path`` as a one-line `TfmiError`."""
    try:
        yield
    except TfmiError:
        raise
    except CORRUPT_ERRORS as exc:
        raise TfmiError(
            f"{path} is not a readable {what} ({type(exc).__name__}: {exc}); "
            "the file is corrupt or truncated: replace it with a fresh copy"
        ) from None
    except (ValueError, KeyError, OSError) as exc:
        raise TfmiError(f"could not read {path} as {what}: {exc}") from None


def read_tar_member(archive: tarfile.TarFile, name: str, path: Path) -> bytes:
    """Bytes of member ``name`` (also found under one leading folder), or a clear error."""
    names = archive.getnames()
    for candidate in names:
        if candidate == name or candidate.endswith("/" + name):
            handle = archive.extractfile(candidate)
            if handle is not None:
                return handle.read()
    raise TfmiError(
        f"{path} has no member {name!r} (it holds {', '.join(names[:5]) or 'nothing'}): "
        "is this the right archive?"
    )


def parse_numeric_csv(text: bytes, what: str) -> np.ndarray:
    """Parse comma-separated numbers (quotes around fields allowed) into a 2-D float32 array."""
    cleaned = text.replace(b'"', b"").strip()
    if not cleaned:
        raise TfmiError(f"{what} is empty")
    try:
        table = np.loadtxt(io.BytesIO(cleaned), delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise TfmiError(f"{what} is not a numeric CSV table: {exc}") from None
    return table


def cached_parse(source: Path, key: str, parse) -> dict[str, np.ndarray]:
    """Parse ``source`` once and keep the arrays in the cache, keyed by the file's sha256.

    Slow parses (large CSV archives, 60,000 JPEGs) then cost one ``np.load`` on later runs.
    """
    folder = cache_dir() / "parsed"
    digest = sha256_of(source)[:16]
    cached = folder / f"{key}-{digest}.npz"
    if cached.is_file():
        try:
            with np.load(cached) as stored:
                return {name: stored[name] for name in stored.files}
        except (*CORRUPT_ERRORS, ValueError, OSError):
            cached.unlink(missing_ok=True)
    arrays = parse(source)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{cached.name}.part"
        with open(partial, "wb") as handle:
            np.savez(handle, **arrays)
        partial.replace(cached)
    except OSError:
        pass  # a read-only cache only costs speed
    return arrays
