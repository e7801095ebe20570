"""Writing results without costing anyone their data: tfmi's output folders, locks and atomic files.

Every folder tfmi writes (``tfmi train``, ``tfmi audit``, ``tfmi benchmark``, ``tfmi compare``) holds
a marker file, ``.tfmi-output``, that names the kind of output and every entry tfmi put there. The rules:

* a folder that is not empty and has no marker is never written to, ``--force`` or not;
* ``--force`` replaces only an output of the same kind, and only the entries its marker lists
  (anything else in the folder is refused for train, audit and compare, and left alone by a benchmark);
* one process at a time: `output_lock` takes an exclusive ``flock`` beside the folder, and a second
  process on the same ``--out`` fails at once with the first one's pid;
* `check_output_dir` runs before any work: it refuses the current directory, a path under a
  regular file and a parent where nothing can be created;
* files and folders get the usual modes under the user's umask (``0o666 & ~umask``,
  ``0o777 & ~umask``), not the private modes of temporary files;
* a write that fails (disk full, file-size limit) is one `TfmiError` and leaves no staging
  folder, temporary file or half-replaced output behind.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "run"
>>> with atomic_directory(out, "audit") as staging:
...     _ = (staging / "report.json").write_text("{}")
>>> sorted(p.name for p in out.iterdir())
['.tfmi-output', 'report.json']
>>> read_marker(out)["kind"], read_marker(out)["written"]
('audit', ['report.json'])
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from tfmi.errors import TfmiError, first_line

MARKER_FILE = ".tfmi-output"
LOCK_SUFFIX = ".tfmi-lock"
OUTPUT_KINDS = ("train", "audit", "benchmark", "comparison")

_UMASK_LOCK = threading.Lock()
#: outputs this process has locked (the lock is re-entrant within one process)
_HELD: set[Path] = set()


# ----------------------------------------------------------------------------------- file modes


def current_umask() -> int:
    """The process umask (read without changing it where Linux allows, else set and restored)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new folder under the current umask."""
    return 0o777 & ~current_umask()


# --------------------------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path`` (parent folders created); it replaces ``path`` only when
    the block completes, and is removed otherwise. ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``.
    A failed write (disk full, file-size limit) raises `TfmiError`.

    >>> with atomic_file(os.path.join(tempfile.mkdtemp(), "b.bin"), "wb") as handle:
    ...     _ = handle.write(b"ok")
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise write_error(path, error) from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through `atomic_file`: the destination is either untouched or
    the complete new text; parent folders are created.

    >>> out = write_text_atomic(os.path.join(tempfile.mkdtemp(), "sub", "t.txt"), "hello\\n")
    >>> out.name, out.read_text()
    ('t.txt', 'hello\\n')
    """
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


_WRITE_HINTS = {
    errno.ENOSPC: "free some disk space and run again",
    errno.EFBIG: "the file-size limit (ulimit -f) is too small for this output",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EACCES: "choose an --out you can write to",
    errno.EROFS: "the file system is read-only: choose another --out",
}


def write_error(path: Path, error: BaseException) -> TfmiError:
    """One line for a write that failed, with the usual causes.

    TensorFlow and HDF5 report a failed write in their own exception types; their message is
    searched for the system's wording (``File too large``, ``No space left on device``, ...).
    """
    code = getattr(error, "errno", None)
    if code not in _WRITE_HINTS:
        text = str(error)
        code = next((c for c in _WRITE_HINTS if os.strerror(c) in text), code)
    if code in _WRITE_HINTS:
        reason = os.strerror(code)
    else:
        reason = getattr(error, "strerror", None) or first_line(error)[:200]
    hint = _WRITE_HINTS.get(code, "check the disk and the --out path")
    return TfmiError(f"cannot write {path}: {reason} ({hint}); nothing was left behind")


# -------------------------------------------------------------------------------------- markers


def read_marker(out: str | os.PathLike) -> dict | None:
    """The marker of a tfmi output folder, or None if ``out`` holds none (or a damaged one)."""
    try:
        marker = json.loads((Path(out) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("kind") not in OUTPUT_KINDS:
        return None
    written = marker.get("written")
    marker["written"] = sorted(str(w) for w in written) if isinstance(written, list) else []
    return marker


def write_marker(out: str | os.PathLike, kind: str, written: Iterable[str]) -> None:
    """Record that ``out`` is a tfmi output of ``kind`` and which of its entries tfmi wrote."""
    from tfmi import __version__

    names = sorted({str(name) for name in written} - {MARKER_FILE})
    record = {"tool": "tfmi", "tfmi_version": __version__, "kind": kind, "written": names}
    write_text_atomic(Path(out) / MARKER_FILE, json.dumps(record, indent=1) + "\n")


def add_to_marker(out: str | os.PathLike, kind: str, names: Iterable[str]) -> None:
    """Add ``names`` to the entries the marker of ``out`` says tfmi wrote."""
    out = Path(out)
    marker = read_marker(out) or (out.is_dir() and legacy_marker(out, kind)) or {"written": []}
    write_marker(out, kind, [*marker["written"], *names])


# outputs of tfmi versions before the marker: the file that identifies each kind, and every entry it wrote
_LEGACY = {
    "train": ("tfmi.json", re.compile(r"saved_model|model\.keras|split\.npz|tfmi\.json")),
    "audit": ("report.json", re.compile(r"report\.json|report\.md|roc\.png|signals\.png")),
    "benchmark": ("benchmark.json",
                  re.compile(r"benchmark\.json|cells|results\.json|results\.md|privacy_utility\.png|roc_.+\.png")),
}


def legacy_marker(out: Path, kind: str) -> dict | None:
    """The marker an output of an earlier tfmi (written before markers existed) would have.

    Recognised only when the kind's identifying JSON file is there and parses, and every entry of
    ``out`` is one that kind of output writes; anything else is not taken for tfmi's.
    """
    if kind not in _LEGACY:  # kinds that always had a marker
        return None
    identity, names = _LEGACY[kind]
    try:
        if not isinstance(json.loads((out / identity).read_text()), dict):
            return None
    except (OSError, ValueError):
        return None
    entries = [p.name for p in out.iterdir()]
    if not all(names.fullmatch(name) for name in entries):
        return None
    return {"kind": kind, "written": sorted(entries), "legacy": True}


def foreign_entries(out: Path, marker: dict | None) -> list[str]:
    """Entries of ``out`` that its marker does not list: what a user (not tfmi) put there."""
    written = set(marker["written"]) if marker else set()
    return sorted(p.name for p in out.iterdir() if p.name not in written | {MARKER_FILE})


# ---------------------------------------------------------------------------------- validation


def check_output_dir(out: str | os.PathLike, kind: str, *, force: bool = False,
                     reuse: bool = False, resumable: Iterable[str] = ()) -> Path:
    """Check, before any work, that ``out`` may receive a tfmi ``kind`` output; return it as a Path.

    ``reuse`` (benchmarks): an existing output of the same kind may be continued without ``force``.
    ``resumable``: the cache entries of an unfinished output (an audit's shadow chunks from its
    shards); an output of the same kind that holds nothing else may be continued without ``force``.
    Raises `TfmiError` for the current directory or one of its parents, a path under a regular file,
    a parent where nothing can be created, a non-empty folder tfmi did not write, an output of
    another kind, and (``force`` aside) an existing output; with ``force``, for train and audit
    outputs, a folder holding entries tfmi did not write.
    """
    if kind not in OUTPUT_KINDS:
        raise TfmiError(f"unknown output kind {kind!r}: use one of {', '.join(OUTPUT_KINDS)}")
    out = Path(out)
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise TfmiError(f"--out {out} is the current directory or one of its parents: give a new folder "
                        "for tfmi's output (e.g. --out results)")
    if out.exists() and not out.is_dir():
        raise TfmiError(f"output {out} exists and is not a directory: choose another --out")
    ancestor = _existing_ancestor(resolved.parent)
    if not ancestor.is_dir():
        raise TfmiError(f"--out {out} is under {ancestor}, which is a file, not a folder: "
                        "choose another --out")
    _check_can_create(ancestor, out)
    if not out.exists() or not any(out.iterdir()):
        return out
    marker = read_marker(out) or legacy_marker(out, kind)
    if marker is None:
        raise TfmiError(f"{out} is not empty and was not written by tfmi (no {MARKER_FILE} marker): tfmi "
                        "only replaces its own output; choose another --out")
    if marker["kind"] != kind:
        raise TfmiError(f"{out} holds a tfmi {marker['kind']} output, not a {kind} output: "
                        "choose another --out")
    if reuse or (resumable and set(marker["written"]) <= set(resumable)):
        return out
    if not force:
        raise TfmiError(f"output {out} already exists: choose another --out or pass --force to replace it")
    foreign = foreign_entries(out, marker)
    if foreign:
        raise TfmiError(f"{out} holds entries tfmi did not write ({', '.join(foreign[:5])}): --force only "
                        "replaces tfmi's own output; move them out or choose another --out")
    return out


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_can_create(folder: Path, out: Path) -> None:
    """Create and remove a probe folder in ``folder``: the only reliable test (root ignores modes)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tfmi-probe-", dir=folder))
    except OSError as error:
        raise TfmiError(f"cannot create --out {out}: {folder} is not writable "
                        f"({error.strerror or error}); choose another --out") from None


# ----------------------------------------------------------------------------------------- locks


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (a ``flock`` on ``.<name>.tfmi-lock`` beside it), or with
    ``shared`` a shared one: job-array shards of one benchmark write their own cells into one ``out``
    together, while a run that writes the results (or another benchmark) waits for all of them.

    A process asking for a lock that conflicts gets a `TfmiError` at once, naming the holder's
    pid. The last holder removes the lock file on release; a process that locked a file someone else
    removed meanwhile notices (the path no longer names its file) and locks the new one instead.
    Parent folders created here are removed again if the block fails and leaves them empty.
    """
    out = Path(out)
    key = out.resolve()
    if key in _HELD:
        yield
        return
    created = _make_parents(out.parent)
    path = out.parent / f".{out.name}{LOCK_SUFFIX}"
    fd = _acquire(path, out, shared)
    _HELD.add(key)
    failed = True
    try:
        yield
        failed = False
    finally:
        _HELD.discard(key)
        last = True
        if shared:  # other shards may still hold it: only the last one out removes the file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                last = False
        if last:
            with contextlib.suppress(OSError):
                path.unlink()
        os.close(fd)
        if failed:
            _remove_empty(created)


def _acquire(path: Path, out: Path, shared: bool = False) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as error:
            raise TfmiError(f"cannot lock {out}: {error.strerror or error}; choose another --out") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TfmiError(f"{out} is being written by another tfmi process (pid {holder}): wait for it to "
                            "finish, or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            if not shared:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            elif not os.pread(fd, 1, 0):  # the first shard names itself; the others leave it
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock: try again


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return those created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=dir_mode())
        except FileExistsError:
            pass
        except OSError as error:
            _remove_empty(missing[missing.index(path) + 1:])
            raise TfmiError(f"cannot create {path}: {error.strerror or error}; "
                            "choose another --out") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only succeeds on an empty folder: never deletes content


# ----------------------------------------------------------------------------- atomic directories


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, kind: str, *, force: bool = False,
                     adopt: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a private staging folder that becomes the tfmi output ``out`` only if the block completes.

    ``adopt``: cache entries an unfinished ``out`` may hold (see `check_output_dir`'s ``resumable``);
    the new output takes them over (moved in right before the swap), so the cache outlives the run.

    ``out`` is locked (`output_lock`) and checked (`check_output_dir`) before anything is written,
    and checked again right before the swap, so a file a user put there meanwhile is never replaced;
    the marker is added and modes set under the umask before the swap. With ``force`` a previous tfmi
    output of the same kind is replaced, and restored if the swap fails. Failures to write raise
    `TfmiError`; the staging folder never outlives the block.
    """
    out = Path(out)
    with output_lock(out):
        check_output_dir(out, kind, force=force, resumable=adopt)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        except OSError as error:
            raise write_error(out, error) from None
        try:
            yield staging
            for name in adopt:
                if (out / name).exists() and not (staging / name).exists():
                    (out / name).rename(staging / name)
            write_marker(staging, kind, [p.name for p in staging.iterdir()])
            _apply_modes(staging)
            # what is there now is what the swap replaces
            check_output_dir(out, kind, force=force, resumable=adopt)
            _swap_into_place(staging, out)
        except OSError as error:
            raise write_error(out, error) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _apply_modes(root: Path) -> None:
    """Give the staging tree the modes new files and folders get under the umask."""
    root.chmod(dir_mode())
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(dir_mode())


def _swap_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        staging.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        staging.rename(out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        out.rename(retired / out.name)
        try:
            staging.rename(out)
        except OSError:
            (retired / out.name).rename(out)  # put the previous output back
            raise
    finally:
        if out.exists():  # the new output or the restored old one: what is retired can go
            shutil.rmtree(retired, ignore_errors=True)
