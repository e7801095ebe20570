"""Where datasets live: the user's data dir, tfmi's cache, and checksum-verified downloads.

Look-up order for a named dataset file: the data dir (argument, else ``TFMI_DATA_DIR``), then the
cache (``TFMI_CACHE_DIR``, else ``~/.tfmi/datasets``), then a download from the canonical URL into the
cache (skipped when ``TFMI_OFFLINE=1``), the way ``keras.datasets`` caches its files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tfmi.errors import TfmiError

DATA_DIR_ENV = "TFMI_DATA_DIR"
CACHE_DIR_ENV = "TFMI_CACHE_DIR"
OFFLINE_ENV = "TFMI_OFFLINE"
DOWNLOAD_TIMEOUT_S = 60


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data dir to search: the argument, else ``$TFMI_DATA_DIR``, else None.

    >>> resolve_data_dir("/tmp").as_posix()
    '/tmp'
    """
    if data_dir is not None and not (isinstance(data_dir, str | os.PathLike)
                                     and isinstance(os.fspath(data_dir), str)):
        raise TfmiError(f"the data dir must be a folder path, got {type(data_dir).__name__} {data_dir!r}")
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if data_dir is not None else f"${DATA_DIR_ENV}"
        raise TfmiError(f"data dir {path} ({origin}) does not exist or is not a directory")
    return path


def cache_dir() -> Path:
    """tfmi's download cache: ``$TFMI_CACHE_DIR`` or ``~/.tfmi/datasets``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".tfmi" / "datasets").expanduser()


def downloads_allowed() -> bool:
    """False when ``TFMI_OFFLINE`` is set to anything but ``0``/empty."""
    return os.environ.get(OFFLINE_ENV, "").strip() in ("", "0")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_file(filenames: tuple[str, ...], data_dir: Path | None) -> Path | None:
    """First of ``filenames`` present in the data dir, then in the cache."""
    for folder in (data_dir, cache_dir()):
        if folder is None:
            continue
        for name in filenames:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def download(url: str, filename: str, sha256: str | None) -> Path:
    """Download ``url`` into the cache as ``filename``, verify its sha256, return the path.

    The file appears in the cache only once complete and verified. Where no checksum is pinned
    (``sha256=None``) the digest of the first download is stored beside the file and checked
    on later downloads, so a changed upstream file is noticed.
    """
    if not downloads_allowed():
        raise TfmiError(f"{filename} is not available locally and {OFFLINE_ENV} forbids downloads")
    target_dir = cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / filename
    recorded = target_dir / f"{filename}.sha256"
    expected = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{filename}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise TfmiError(
                f"download of {url} has sha256 {actual}, expected {expected}: "
                "the file is corrupt or changed upstream; retry, or place a good copy in the data dir"
            )
        os.replace(tmp_name, target)
        if sha256 is None and not recorded.is_file():
            recorded.write_text(actual + "\n")
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TfmiError(f"could not download {url} ({exc})") from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
