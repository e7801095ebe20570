"""Load a trained classifier from disk, whoever wrote it, as a plain ``predict`` function.

Accepted inputs:

* a TensorFlow SavedModel directory (contains ``saved_model.pb``), e.g. from ``model.export(path)`` or
  ``tf.saved_model.save(model, path)``; one serving signature with one float input and one output is used;
* a ``tfmi train`` model directory (its ``saved_model/`` subdirectory is loaded);
* a Keras ``.keras`` file (loaded with ``safe_mode=True``) or a legacy ``.h5`` / ``.hdf5`` file.

The format is read off the content (zip, HDF5 signature, SavedModel layout), never the name, and
every file is checked by `tfmi.model_safety` before anything in it is deserialized: a model whose
loading or inference would run Python code or touch files, network or the interpreter is refused,
unless ``unsafe_load=True`` (``--unsafe-load``). Keras files are loaded from a private copy of the
bytes that were checked, and a SavedModel's graph from the very bytes that were inspected.

Every problem is reported as a one-line :class:`~tfmi.errors.TfmiError`; nothing is printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfmi import compat, model_safety
from tfmi.errors import TfmiError, first_line
from tfmi.outputs import last_activation

SAVED_MODEL_FILE = model_safety.SAVED_MODEL_FILE
TFMI_SAVED_MODEL_DIR = "saved_model"  # the SavedModel inside a `tfmi train` directory
SERVING_DEFAULT = "serving_default"
PREDICT_BATCH_SIZE = 1024

# What the loaders raise on a corrupt / incompatible file.
_LOADER_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    ImportError,
    zipfile.BadZipFile,
    tf.errors.OpError,
)

_EXPORT_HINT = (
    "export one with `model.export(path)` (Keras) or `tf.saved_model.save(model, path, "
    "signatures=...)` with a serving signature"
)


@dataclass(frozen=True)
class LoadedModel:
    """A classifier loaded from disk.

    ``predict`` maps a float32 batch ``(n, *input_shape)`` to an ``(n, num_outputs)`` numpy array.
    ``input_shape``, ``num_outputs`` and ``output_activation`` are ``None`` when unknown;
    ``signature`` is the SavedModel signature key used (``None`` for Keras files) and ``keras_model``
    the Keras model object (``None`` for SavedModels). ``unsafe_load`` records that the safety
    checks of `tfmi.model_safety` were skipped.
    """

    predict: Callable[[np.ndarray], np.ndarray]
    path: str
    format: str  # "saved_model" | "keras" | "h5"
    input_shape: tuple[int, ...] | None
    num_outputs: int | None
    output_activation: str | None
    signature: str | None
    keras_model: object | None = None
    unsafe_load: bool = False


@contextlib.contextmanager
def _quiet_tf_logging() -> Iterator[None]:
    """Raise TensorFlow's Python logger to ERROR for the duration of a load."""
    logger = tf.get_logger()
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _static_dims(shape: tf.TensorShape | tuple | list | None) -> tuple[int, ...] | None:
    """``shape`` without its batch dimension as a tuple of ints, or None if any dim is unknown."""
    if shape is None:
        return None
    try:
        dims = tf.TensorShape(shape).as_list()
    except (ValueError, TypeError):
        return None
    if dims is None or len(dims) < 1 or any(d is None for d in dims[1:]):
        return None
    return tuple(int(d) for d in dims[1:])


def _describe_spec(name: str, spec) -> str:
    """``name: float32 (None, 30)`` for a TensorSpec-like object."""
    dtype = getattr(getattr(spec, "dtype", None), "name", "?")
    shape = getattr(spec, "shape", None)
    shape_text = str(tuple(shape.as_list())) if shape is not None and shape.rank is not None else "(?)"
    return f"{name}: {dtype} {shape_text}"


def _signature_io(function) -> tuple[dict, dict]:
    """The (inputs, outputs) TensorSpec dicts of a concrete signature function."""
    args, kwargs = function.structured_input_signature
    inputs = dict(kwargs)
    for i, spec in enumerate(tf.nest.flatten(args)):
        inputs[f"arg_{i}"] = spec
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        flat = tf.nest.flatten(outputs)
        outputs = {f"output_{i}": spec for i, spec in enumerate(flat)}
    return inputs, outputs


def _describe_signature(function) -> str:
    """One line: ``inputs x: float32 (None, 30) -> outputs y: float32 (None, 30)``."""
    inputs, outputs = _signature_io(function)
    ins = ", ".join(_describe_spec(k, v) for k, v in sorted(inputs.items())) or "none"
    outs = ", ".join(_describe_spec(k, v) for k, v in sorted(outputs.items())) or "none"
    return f"inputs {ins} -> outputs {outs}"


def _resolve_saved_model_dir(path: Path) -> Path | None:
    """The SavedModel directory at ``path`` (itself or a tfmi model dir's ``saved_model/``), else None."""
    if (path / SAVED_MODEL_FILE).is_file():
        return path
    inner = path / TFMI_SAVED_MODEL_DIR
    if (inner / SAVED_MODEL_FILE).is_file():
        return inner
    return None


def _load_saved_model_object(directory: Path, unsafe_load: bool = False):
    """``tf.saved_model.load`` of ``directory`` after `model_safety` checked its graph.

    The graph is read once: the inspected bytes are written to a private directory beside links to
    the SavedModel's variables and assets, and loaded from there, so the file cannot change between
    the check and the load.
    """
    if unsafe_load:
        return _tf_saved_model_load(directory, directory)
    try:
        graph = (directory / SAVED_MODEL_FILE).read_bytes()
    except OSError as error:
        raise TfmiError(f"cannot read SavedModel {directory}: {error.strerror or error}") from None
    problems = model_safety.problems_in_saved_model(directory, graph)
    if problems:
        raise model_safety.refusal(directory, problems)
    with tempfile.TemporaryDirectory(prefix="tfmi-model-") as private:
        private = Path(private)
        (private / SAVED_MODEL_FILE).write_bytes(graph)
        for entry in directory.iterdir():
            if entry.name != SAVED_MODEL_FILE:
                (private / entry.name).symlink_to(entry.resolve())
        return _tf_saved_model_load(private, directory)


def _tf_saved_model_load(source: Path, directory: Path):
    try:
        with _quiet_tf_logging():
            return tf.saved_model.load(str(source))
    except _LOADER_ERRORS as error:
        raise TfmiError(
            f"cannot load SavedModel {directory}: {first_line(error)} "
            "(is it a complete SavedModel written by a compatible TensorFlow version?)"
        ) from error


def _check_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, raising TfmiError if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise TfmiError(
            f"model path {path} does not exist: give a SavedModel directory, a .keras or an .h5 file"
        )
    return path


def list_signatures(path: str | os.PathLike, *, unsafe_load: bool = False) -> dict[str, str]:
    """Signature keys of the SavedModel at ``path`` mapped to a one-line description of each.

    >>> import tempfile
    >>> class Doubler(tf.Module):
    ...     @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    ...     def double(self, x):
    ...         return {"y": 2 * x}
    >>> d = tempfile.mkdtemp()
    >>> module = Doubler()
    >>> tf.saved_model.save(module, d, signatures={"double": module.double})
    >>> list_signatures(d)
    {'double': 'inputs x: float32 (None, 2) -> outputs y: float32 (None, 2)'}
    """
    path = _check_path(path)
    directory = _resolve_saved_model_dir(path) if path.is_dir() else None
    if directory is None:
        raise TfmiError(
            f"{path} is not a SavedModel directory (no {SAVED_MODEL_FILE}): only SavedModels have signatures"
        )
    loaded = _load_saved_model_object(directory, unsafe_load)
    return {key: _describe_signature(fn) for key, fn in sorted(loaded.signatures.items())}


def _choose_signature(directory: Path, signatures, requested: str | None) -> str:
    """The signature key to use, following the rules in :func:`load_model`."""
    keys = sorted(signatures.keys())
    if requested is not None:
        if requested not in signatures:
            available = ", ".join(keys) if keys else "none"
            raise TfmiError(
                f"SavedModel {directory} has no signature {requested!r}; available: {available} "
                "(pass --signature with one of these)"
            )
        return requested
    if not keys:
        raise TfmiError(f"SavedModel {directory} has no serving signature: {_EXPORT_HINT}")
    if SERVING_DEFAULT in signatures:
        return SERVING_DEFAULT
    if len(keys) == 1:
        return keys[0]
    raise TfmiError(
        f"SavedModel {directory} has several signatures and no {SERVING_DEFAULT}: {', '.join(keys)}; "
        "pass --signature NAME to choose one"
    )


def _check_batch(batch: np.ndarray, input_shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    """``batch`` as an array with a batch dimension that matches ``input_shape`` when known."""
    batch = np.asarray(batch)
    if batch.ndim < 1:
        raise TfmiError(f"{where} needs a batch of examples, got a scalar: pass an array of shape (n, ...)")
    if input_shape is not None and tuple(batch.shape[1:]) != input_shape:
        raise TfmiError(
            f"{where} expects examples of shape {input_shape} but got {tuple(batch.shape[1:])}: "
            "check the dataset matches the one the model was trained on"
        )
    return batch


def _batched(call: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, where: str) -> np.ndarray:
    """Apply ``call`` to ``batch`` in chunks and check the result is 2-D with one row per example."""
    if len(batch) <= PREDICT_BATCH_SIZE:
        parts = [call(batch)]
    else:
        parts = [call(batch[i : i + PREDICT_BATCH_SIZE]) for i in range(0, len(batch), PREDICT_BATCH_SIZE)]
    outputs = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    if outputs.ndim != 2 or outputs.shape[0] != len(batch):
        raise TfmiError(
            f"{where} returned outputs of shape {outputs.shape} for {len(batch)} examples; expected "
            "(n, num_classes) scores: give a classifier whose output is one score per class"
        )
    return outputs


def _load_saved_model(directory: Path, signature: str | None, unsafe_load: bool) -> LoadedModel:
    """Load a SavedModel directory and wrap its chosen signature."""
    loaded = _load_saved_model_object(directory, unsafe_load)
    key = _choose_signature(directory, loaded.signatures, signature)
    function = loaded.signatures[key]
    inputs, outputs = _signature_io(function)
    where = f"SavedModel {directory} signature {key!r}"
    if len(inputs) != 1:
        names = ", ".join(sorted(inputs)) or "none"
        raise TfmiError(
            f"{where} takes {len(inputs)} inputs ({names}); tfmi needs a signature with exactly "
            "one input tensor: export a single-input model or pass --signature NAME"
        )
    if len(outputs) != 1:
        names = ", ".join(sorted(outputs)) or "none"
        raise TfmiError(
            f"{where} has {len(outputs)} outputs ({names}); tfmi needs exactly one output of "
            "class scores: export a single-output signature or pass --signature NAME"
        )
    ((input_name, input_spec),) = inputs.items()
    ((output_name, output_spec),) = outputs.items()
    dtype = getattr(input_spec, "dtype", None)
    if not isinstance(input_spec, tf.TensorSpec) or dtype is None or not dtype.is_floating:
        dtype_name = getattr(dtype, "name", type(input_spec).__name__)
        raise TfmiError(
            f"{where} input {input_name!r} is {dtype_name}; tfmi feeds float features: export a "
            "signature with a float input"
        )
    output_shape = getattr(output_spec, "shape", None)
    if output_shape is not None and output_shape.rank is not None and output_shape.rank != 2:
        raise TfmiError(
            f"{where} output {output_name!r} has shape {tuple(output_shape.as_list())}; expected "
            "(batch, num_classes): give a classifier that outputs one score per class"
        )
    input_shape = _static_dims(input_spec.shape)
    output_dims = _static_dims(output_shape)
    num_outputs = output_dims[-1] if output_dims else None

    def call(batch: np.ndarray) -> np.ndarray:
        try:
            result = function(**{input_name: tf.constant(batch, dtype=dtype)})
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise TfmiError(
                f"{where} failed on a batch of shape {batch.shape}: {first_line(error)}"
            ) from error
        (value,) = tf.nest.flatten(result)
        return np.asarray(value.numpy())

    def predict(batch: np.ndarray) -> np.ndarray:
        return _batched(call, _check_batch(batch, input_shape, where), where)

    return LoadedModel(
        predict=predict,
        path=str(directory),
        format="saved_model",
        input_shape=input_shape,
        num_outputs=num_outputs,
        output_activation=None,
        signature=key,
        unsafe_load=unsafe_load,
    )


def _read_keras_model(path: Path, fmt: str, unsafe_load: bool):
    """Deserialize a Keras zip or HDF5 file once `model_safety` found nothing in it that runs code.

    A zip is copied into a private directory (under the ``.keras`` name Keras requires) and both
    checked and loaded there; an HDF5 file is opened once and the same handle is checked and loaded.
    """
    if fmt == "h5":
        import h5py

        try:
            handle = h5py.File(path, "r")
        except (OSError, ValueError) as error:
            raise TfmiError(f"cannot load {path} as a Keras model: damaged HDF5 file ({error})") from None
        with handle:
            if not unsafe_load:
                problems = model_safety.problems_in_keras_config(model_safety.hdf5_model_config(handle, path))
                if problems:
                    raise model_safety.refusal(path, problems)
            return compat.load_hdf5_model(handle, safe_mode=not unsafe_load)
    with tempfile.TemporaryDirectory(prefix="tfmi-model-") as private:
        copy = Path(private) / "model.keras"
        try:
            shutil.copyfile(path, copy)
        except OSError as error:
            raise TfmiError(f"cannot read model file {path}: {error.strerror or error}") from None
        file_major = compat.keras_major_of_zip(model_safety.keras_zip_metadata(copy))
        if file_major is not None and file_major >= 3 and not compat.KERAS_3:
            raise TfmiError(f"cannot load {path} with Keras {compat.KERAS_VERSION}: "
                            f"{compat.other_stack_hint(file_major)}")
        if not unsafe_load:
            problems = model_safety.problems_in_keras_config(model_safety.keras_zip_config(copy))
            if problems:
                raise model_safety.refusal(path, problems)
        try:
            return keras.models.load_model(str(copy), compile=False, safe_mode=not unsafe_load)
        except _LOADER_ERRORS as error:
            if file_major is not None and (file_major >= 3) != compat.KERAS_3 and not isinstance(
                    error, TfmiError) and "safe_mode" not in str(error):
                raise TfmiError(f"cannot load {path} with Keras {compat.KERAS_VERSION} "
                                f"({first_line(error)}): {compat.other_stack_hint(file_major)}") from error
            raise


def _load_keras(path: Path, fmt: str, unsafe_load: bool = False) -> LoadedModel:
    """Load a Keras zip or HDF5 file and wrap the model for inference."""
    try:
        with _quiet_tf_logging():
            model = _read_keras_model(path, fmt, unsafe_load)
    except _LOADER_ERRORS as error:
        if isinstance(error, TfmiError):
            raise
        message = first_line(error)
        if "safe_mode" in str(error):
            raise model_safety.refusal(path, [f"Keras safe_mode refused it: {message.split('. ')[0]}"]) \
                from error
        raise TfmiError(
            f"cannot load {path} as a Keras model: {message} (is the file complete, and written by "
            f"Keras {compat.KERAS_VERSION.split('.')[0]}?)"
        ) from error
    where = f"model {path}"
    try:
        input_shapes, output_shapes = model.input_shape, model.output_shape
    except (AttributeError, RuntimeError):
        input_shapes, output_shapes = None, None
    if isinstance(input_shapes, list) or isinstance(output_shapes, list):
        raise TfmiError(
            f"{where} has several inputs or outputs; tfmi needs one input of features and one "
            "output of class scores"
        )
    if output_shapes is not None and len(output_shapes) != 2:
        raise TfmiError(
            f"{where} outputs shape {tuple(output_shapes)}; expected (batch, num_classes): give a "
            "classifier that outputs one score per class"
        )
    input_shape = _static_dims(input_shapes)
    num_outputs = output_shapes[-1] if output_shapes is not None else None

    def call(batch: np.ndarray) -> np.ndarray:
        try:
            result = model(tf.constant(batch, dtype=tf.float32), training=False)
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise TfmiError(
                f"{where} failed on a batch of shape {batch.shape}: {first_line(error)}"
            ) from error
        return np.asarray(result)

    def predict(batch: np.ndarray) -> np.ndarray:
        return _batched(call, _check_batch(batch, input_shape, where), where)

    return LoadedModel(
        predict=predict,
        path=str(path),
        format=fmt,
        input_shape=input_shape,
        num_outputs=int(num_outputs) if num_outputs is not None else None,
        output_activation=last_activation(model),
        signature=None,
        keras_model=model,
        unsafe_load=unsafe_load,
    )


def load_model(
    path: str | os.PathLike, signature: str | None = None, *, unsafe_load: bool = False
) -> LoadedModel:
    """Load the classifier at ``path`` (SavedModel dir, tfmi model dir, Keras zip or HDF5 file).

    The format comes from the content, not the name. ``signature`` picks a SavedModel signature key;
    by default ``serving_default``, or the only one. A file whose loading or inference would run
    Python code or touch files or the network is refused (see `tfmi.model_safety`);
    ``unsafe_load=True`` skips those checks and must only be used on files you trust.

    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> model.save(path)
    >>> loaded = load_model(path)
    >>> loaded.format, loaded.input_shape, loaded.num_outputs, loaded.output_activation
    ('keras', (3,), 2, 'softmax')
    >>> loaded.predict(np.zeros((5, 3), np.float32)).shape
    (5, 2)
    """
    path = _check_path(path)
    fmt = model_safety.detect_format(path)
    if fmt == "saved_model":
        directory = _resolve_saved_model_dir(path) if path.is_dir() else path.parent
        if directory is None:
            raise TfmiError(
                f"{path} is a directory but not a SavedModel (no {SAVED_MODEL_FILE} inside): give a "
                "SavedModel directory, a tfmi model directory, a .keras or an .h5 file"
            )
        return _load_saved_model(directory, signature, unsafe_load)
    if signature is not None:
        raise TfmiError(
            f"--signature only applies to SavedModel directories, but {path} is a Keras file: "
            "drop --signature"
        )
    return _load_keras(path, fmt, unsafe_load)


def check_output_width(loaded: LoadedModel, num_classes: int) -> None:
    """Raise TfmiError if the model's known output width differs from ``num_classes``.

    >>> m = LoadedModel(predict=lambda x: x, path="m", format="keras", input_shape=(3,), num_outputs=4,
    ...                 output_activation=None, signature=None)
    >>> check_output_width(m, 4)
    >>> check_output_width(m, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: the model outputs 4 scores per example but the labels have 3 classes: ...
    """
    if loaded.num_outputs is not None and loaded.num_outputs != num_classes:
        raise TfmiError(
            f"the model outputs {loaded.num_outputs} scores per example but the labels have {num_classes} "
            f"classes: {loaded.path} was not trained on this dataset's labels "
            "(check the dataset or the model)"
        )
