"""The model directory `tfmi train` writes, created atomically.

Layout of ``<out>/``::

    saved_model/   TensorFlow SavedModel for serving (signature ``serving_default``: features -> logits)
    model.keras    the Keras model, for further training or inspection
    split.npz      member / non-member / reference / shadow-pool indices and the split seed
    tfmi.json      sidecar: dataset, model, training config, split, accuracies, versions, command

Everything is written into a hidden temporary sibling first and renamed into place when complete,
so an interrupted run never leaves a half-written ``<out>``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tfmi.data.splits import MembershipSplit
from tfmi.errors import TfmiError

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
SPLIT_FILE = "split.npz"
SIDECAR_FILE = "tfmi.json"


def check_output_dir(out: str | os.PathLike, force: bool = False) -> Path:
    """Refuse an existing output path unless ``force``; return it as a Path (call before training)."""
    out = Path(out)
    if out.exists() and not force:
        raise TfmiError(f"output {out} already exists: choose another --out or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise TfmiError(f"output {out} exists and is not a directory: choose another --out")
    return out


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block completes."""
    out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.rename(retired / out.name)
            staging.rename(out)
            shutil.rmtree(retired)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def export_saved_model(model, path: str | os.PathLike) -> None:
    """Export a Keras model as an inference SavedModel (signature ``serving_default``), silently."""
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the endpoint listing
        model.export(str(path))


def write_model_dir(
    out: str | os.PathLike,
    model,
    split: MembershipSplit,
    sidecar: dict,
    *,
    force: bool = False,
) -> Path:
    """Write SavedModel, ``.keras`` file, split indices and the JSON sidecar to ``out`` atomically."""
    with atomic_directory(out, force) as staging:
        export_saved_model(model, staging / SAVED_MODEL_DIR)
        model.save(staging / KERAS_FILE)
        split.save(staging / SPLIT_FILE)
        record = {
            **sidecar,
            "files": {
                "saved_model": SAVED_MODEL_DIR, "keras": KERAS_FILE, "split": SPLIT_FILE,
            },
        }
        (staging / SIDECAR_FILE).write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return Path(out)


def read_sidecar(model_dir: str | os.PathLike) -> dict:
    """The JSON sidecar of a model directory written by `write_model_dir`."""
    path = Path(model_dir) / SIDECAR_FILE
    if not path.is_file():
        raise TfmiError(f"{model_dir} has no {SIDECAR_FILE}: it was not written by tfmi train")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TfmiError(f"{path} is not valid JSON ({exc}); the model directory is damaged") from None
