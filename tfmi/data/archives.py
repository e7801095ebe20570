"""Reading archives safely: one place that turns unreadable or corrupt files into `TfmiError`."""

from __future__ import annotations

import gzip
import io
import math
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tfmi.data.download import cache_dir, sha256_of
from tfmi.errors import TfmiError, first_line

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
    except MemoryError:
        raise TfmiError(
            f"{path} is too large to load into memory as {what}: use a machine with more memory "
            "or a smaller file"
        ) from None
    except (ValueError, KeyError, OSError) as exc:
        raise TfmiError(f"could not read {path} as {what}: {first_line(exc)}") from None


# deflate expands at most ~1032x; anything claiming more is a forged size, not data
_MAX_DEFLATE_RATIO = 1100


def check_npz(path: Path, what: str = ".npz file") -> None:
    """Refuse an ``.npz`` before ``np.load`` reads it: not a zip, object arrays, or a member whose
    ``.npy`` header claims more (or fewer) bytes than the member holds.

    ``np.load`` allocates the array the header describes before it reads a byte of data, so a few
    hundred forged bytes claiming shape ``(10**12, 446)`` would otherwise ask for petabytes.
    """
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head == b"\x93NUMPY":
        raise TfmiError(
            f"{path} is a single .npy array, not an .npz archive of named arrays: "
            "save it with np.savez(path, x=..., y=...)"
        )
    if not zipfile.is_zipfile(path):
        raise TfmiError(
            f"{path} is not a valid {what} (corrupt, truncated, or another format): "
            "replace it with a file written by np.savez"
        )
    size_on_disk = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                _check_npy_member(path, archive, info, size_on_disk)


def _check_npy_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, size_on_disk: int) -> None:
    name = info.filename[: -len(".npy")]
    forged = (
        info.compress_size > size_on_disk
        or (info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size)
        or (info.compress_type == zipfile.ZIP_DEFLATED
            and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 4096)
    )
    if forged:
        raise TfmiError(
            f"{path}: array {name!r} claims {info.file_size} bytes from {info.compress_size} stored bytes "
            f"in a {size_on_disk}-byte file: the file is corrupt or truncated; replace it with a fresh copy"
        )
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:  # 3.0 (utf-8 field names) has no public reader
                shape, _, dtype = np.lib.format._read_array_header(member, version)
        except ValueError as exc:
            raise TfmiError(
                f"{path}: array {name!r} has no valid .npy header ({first_line(exc, 'bad header')}): the "
                "file is corrupt or truncated; replace it with a fresh copy"
            ) from None
        header_size = member.tell()
    if dtype.hasobject:
        raise TfmiError(
            f"{path}: array {name!r} holds Python objects (dtype {dtype}), which tfmi does not unpickle: "
            "save numeric arrays (e.g. x.astype(np.float32))"
        )
    claimed = math.prod(shape) * dtype.itemsize
    held = info.file_size - header_size
    if claimed != held:
        raise TfmiError(
            f"{path}: array {name!r} claims shape {tuple(shape)} of {dtype} ({claimed} bytes) but holds "
            f"{held} bytes: the file is corrupt or truncated; replace it with a fresh copy"
        )


@contextmanager
def open_npz(path: Path, what: str = ".npz file") -> Iterator[np.lib.npyio.NpzFile]:
    """``np.load(path)`` of an ``.npz`` (no pickles) after `check_npz`; every failure is a `TfmiError`."""
    with readable(path, what):
        check_npz(path, what)
        with np.load(path, allow_pickle=False) as stored:
            yield stored


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
            with open_npz(cached, "cached parse (.npz)") as stored:
                return {name: stored[name] for name in stored.files}
        except TfmiError:
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
