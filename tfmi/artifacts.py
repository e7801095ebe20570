"""The model directory `tfmi train` writes, created atomically.

Layout of ``<out>/``::

    saved_model/   TensorFlow SavedModel for serving (signature ``serving_default``: features -> logits)
    model.keras    the Keras model, for further training or inspection
    split.npz      member / non-member / reference / shadow-pool indices and the split seed
    tfmi.json      sidecar: dataset, model, training config, split, accuracies, versions, command

Everything is written into a hidden temporary sibling first and renamed into place when complete,
so an interrupted or failed run never leaves a half-written ``<out>`` (see `tfmi.safe_write`, which
also decides what ``--force`` may replace).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tfmi.data.splits import MembershipSplit
from tfmi.errors import TfmiError
from tfmi.inference import export_saved_model
from tfmi.safe_write import atomic_directory, write_error

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
SPLIT_FILE = "split.npz"
SIDECAR_FILE = "tfmi.json"


def write_model_dir(
    out: str | os.PathLike,
    model,
    split: MembershipSplit,
    sidecar: dict,
    *,
    force: bool = False,
) -> Path:
    """Write SavedModel, ``.keras`` file, split indices and the JSON sidecar to ``out`` atomically.

    Call `tfmi.safe_write.check_output_dir` (kind ``"train"``) before training; a write that fails
    here (disk full, file-size limit) raises `TfmiError` and leaves nothing behind.
    """
    import tensorflow as tf

    with atomic_directory(out, "train", force=force) as staging:
        try:
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
        except (RuntimeError, tf.errors.OpError) as error:  # OSError is handled by atomic_directory
            raise write_error(Path(out), error) from None
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
