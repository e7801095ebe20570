"""What tfmi trusts in a model file: checked before anything in it is deserialized or run.

A model file is data, never code to run. Three formats reach `tfmi.model_loading.load_model`, told
apart by their content (a file's name proves nothing):

* a **Keras zip** (``.keras``, magic ``PK\\x03\\x04``): its ``config.json`` is read and refused if any
  object in it would run Python on load: a ``Lambda`` layer (marshalled bytecode or a function
  looked up by name), a function serialized as a lambda, or a class or function imported from a
  module other than Keras's own (or tfmi's): Keras imports whatever module a config names.
* a **legacy HDF5** Keras file (``.h5``, the HDF5 signature): its ``model_config`` attribute gets the
  same inspection. Keras's ``safe_mode`` does not cover this format at all.
* a **SavedModel** directory (``saved_model.pb``): a TensorFlow graph, which cannot run Python. Its
  ops still run with the auditor's rights, so every op the loader or a signature can execute (the
  signatures, the init op and every restored function) is checked against `DENIED_OPS`: ops that
  read or write files, open network connections or call back into Python.

Each check returns the problems it found; the loader turns them into one refusal naming the layer
or op, unless the user passes ``--unsafe-load`` (``unsafe_load=True``).

>>> problems_in_keras_config({"class_name": "Sequential", "config": {"layers": [
...     {"class_name": "Lambda", "config": {"name": "sneaky", "function": ["4wEAAA", None, None],
...                                         "function_type": "lambda"}}]}})
["layer 'sneaky' (Lambda) stores Python code"]
>>> problems_in_keras_config({"module": "os", "class_name": "function", "config": "system"})
["a function 'system' imported from module 'os'"]
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfmi.errors import TfmiError

ZIP_MAGIC = b"PK\x03\x04"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SAVED_MODEL_FILE = "saved_model.pb"
KERAS_CONFIG_FILE = "config.json"
KERAS_METADATA_FILE = "metadata.json"
#: config.json of a real model is kilobytes; more is refused rather than decompressed
MAX_CONFIG_BYTES = 64 * 2**20

#: modules a Keras config may name: Keras itself (Keras 2, Keras 3, tf-keras) and tfmi's own layers
TRUSTED_MODULE_ROOTS = ("keras", "tf_keras", "tfmi")
#: layer classes whose config carries Python code (bytecode or a function looked up by name)
CODE_LAYERS = ("Lambda",)
#: class names Keras uses for a serialized Python lambda
LAMBDA_MARKERS = ("__lambda__",)

_FILE_OPS = {
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
    "Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints", "Restore", "RestoreV2", "RestoreSlice",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader",
    "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
    "TextLineDataset", "SaveDataset", "SaveDatasetV2", "LoadDataset", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "SnapshotDataset", "SnapshotDatasetV2", "CSVDataset",
    "CSVDatasetV2", "ExperimentalCSVDataset", "SqlDataset", "ExperimentalSqlDataset", "LMDBDataset",
    "ExperimentalLMDBDataset", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "WriteSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary",
    "WriteGraphSummary", "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter",
    "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
    "DebugNumericSummaryV2",
}
_PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_NETWORK_OPS = {
    "RpcClient", "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister", "Rpc", "TryRpc",
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "RegisterDataset", "RegisterDatasetV2",
}
#: op type -> what it does that an audit must not allow
DENIED_OPS: dict[str, str] = {
    **{op: "reads or writes files" for op in _FILE_OPS},
    **{op: "calls Python code" for op in _PYTHON_OPS},
    **{op: "opens network connections" for op in _NETWORK_OPS},
}
#: ops that write to a file only when an attribute names one (tf.print(output_stream="file://..."))
_PRINT_OPS = ("PrintV2",)
#: graph collections holding init ops that TensorFlow's loader runs
_INIT_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "table_initializer", "init_op")


def detect_format(path: Path) -> str:
    """``"saved_model"``, ``"keras"`` (zip) or ``"h5"`` from what ``path`` holds, whatever its name.

    ``path`` is a SavedModel directory or a file; raises TfmiError for anything else.
    """
    if path.is_dir():
        return "saved_model"
    if path.name == SAVED_MODEL_FILE:
        return "saved_model"
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise TfmiError(f"cannot read model file {path}: {error.strerror or error}") from None
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head == HDF5_SIGNATURE or _has_hdf5_userblock(path):
        return "h5"
    raise TfmiError(
        f"{path} is not a model: it is neither a Keras zip (.keras), an HDF5 file (.h5) nor a "
        "SavedModel directory (give one of these)"
    )


def _has_hdf5_userblock(path: Path) -> bool:
    """HDF5 may start after a user block of 512, 1024, 2048, ... bytes."""
    size = path.stat().st_size
    offset = 512
    with open(path, "rb") as handle:
        while offset + 8 <= size:
            handle.seek(offset)
            if handle.read(8) == HDF5_SIGNATURE:
                return True
            offset *= 2
    return False


# ------------------------------------------------------------------------------------- Keras configs


def _objects(node: Any, owner: str | None = None) -> Iterator[tuple[dict, str | None]]:
    """Every dict in a config tree, with the name of the closest enclosing layer config."""
    if isinstance(node, dict):
        inner = node.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        owner = name if isinstance(name, str) else owner
        yield node, owner
        for value in node.values():
            yield from _objects(value, owner)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value, owner)


def _trusted_module(module: str) -> bool:
    return module.split(".")[0] in TRUSTED_MODULE_ROOTS


def problems_in_keras_config(config: Any) -> list[str]:
    """What in a Keras model config (``.keras`` ``config.json`` or HDF5 ``model_config``) would run code."""
    problems = []
    code_layers = set()  # a Lambda's own config also holds "function_type": report the layer once
    for obj, owner in _objects(config):
        class_name = obj.get("class_name")
        where = f"layer {owner!r}" if owner else "an object"
        if class_name in CODE_LAYERS:
            code_layers.add(owner)
            problems.append(f"{where} ({class_name}) stores Python code")
        elif class_name in LAMBDA_MARKERS:
            problems.append(f"{where} holds a serialized Python lambda")
        elif owner not in code_layers and any(
            key.endswith("_type") and value == "lambda" for key, value in obj.items()
        ):
            problems.append(f"{where} holds a serialized Python lambda")
        module = obj.get("module")
        if isinstance(module, str) and class_name is not None and not _trusted_module(module):
            kind = "function" if class_name == "function" else "class"
            name = obj.get("config") if kind == "function" else class_name
            problems.append(f"a {kind} {name!r} imported from module {module!r}")
    return list(dict.fromkeys(problems))


def _zip_json(path: Path, member: str, required: bool) -> Any:
    """A JSON member of a Keras zip, parsed without deserializing anything (None if absent and not
    ``required``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(member)
            if info.file_size > MAX_CONFIG_BYTES:
                raise TfmiError(f"{path}: {member} claims {info.file_size} bytes; a model "
                                "config is kilobytes: the file is corrupt or hostile")
            with archive.open(info) as handle:
                text = handle.read(MAX_CONFIG_BYTES + 1)
    except KeyError:
        if not required:
            return None
        raise TfmiError(f"cannot load {path} as a Keras model: the zip holds no {member} "
                        "(is it a model saved with model.save('....keras')?)") from None
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
        raise TfmiError(f"cannot load {path} as a Keras model: damaged zip ({error})") from None
    return _parse_json(text, path, member)


def keras_zip_config(path: Path) -> Any:
    """The parsed ``config.json`` of a Keras zip, read without deserializing anything."""
    return _zip_json(path, KERAS_CONFIG_FILE, required=True)


def keras_zip_metadata(path: Path) -> dict:
    """The parsed ``metadata.json`` of a Keras zip (which Keras version wrote it), or ``{}``."""
    metadata = _zip_json(path, KERAS_METADATA_FILE, required=False)
    return metadata if isinstance(metadata, dict) else {}


def hdf5_model_config(path_or_file: Any, path: Path) -> Any:
    """The parsed ``model_config`` attribute of a legacy Keras HDF5 file (an ``h5py.File`` or a path)."""
    import h5py

    try:
        if isinstance(path_or_file, h5py.File):
            raw = path_or_file.attrs.get("model_config")
        else:
            with h5py.File(path_or_file, "r") as handle:
                raw = handle.attrs.get("model_config")
    except (OSError, ValueError) as error:
        raise TfmiError(f"cannot load {path} as a Keras model: damaged HDF5 file ({error})") from None
    if raw is None:
        raise TfmiError(f"{path} is an HDF5 file without a model config (weights only?): save the whole "
                        "model with model.save(...) or export a SavedModel")
    if isinstance(raw, bytes):
        raw = raw[: MAX_CONFIG_BYTES + 1]
    return _parse_json(raw, path, "model_config")


def _parse_json(text: bytes | str, path: Path, what: str) -> Any:
    if len(text) > MAX_CONFIG_BYTES:
        raise TfmiError(f"{path}: {what} is larger than {MAX_CONFIG_BYTES} bytes; refusing to parse it")
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise TfmiError(f"cannot load {path} as a Keras model: its {what} is not valid JSON ({error})") \
            from None


# -------------------------------------------------------------------------------------- SavedModels


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _called_functions(node) -> Iterator[str]:
    """Names of the library functions a NodeDef calls (through func attributes or as its op)."""
    yield node.op
    for value in node.attr.values():
        if value.func.name:
            yield value.func.name
        for func in value.list.func:
            yield func.name


def _denied(node) -> str | None:
    if node.op in DENIED_OPS:
        return DENIED_OPS[node.op]
    if node.op in _PRINT_OPS:
        stream = node.attr["output_stream"].s.decode(errors="replace") if "output_stream" in node.attr else ""
        if stream.startswith("file://"):
            return f"writes to {stream}"
    return None


def problems_in_saved_model(directory: Path, graph_bytes: bytes | None = None) -> list[str]:
    """Denied ops that loading the SavedModel or calling its signatures can execute.

    ``graph_bytes`` is the content of ``saved_model.pb`` when the caller has already read it (so that
    what is checked is what gets loaded); otherwise it is read from ``directory``.

    Reads ``saved_model.pb`` as a protocol buffer (parsing runs nothing) and follows, from every
    signature, init op and restored function, the graph's inputs and the functions they call.
    TensorFlow 2 restores variables with its own ops, not with the file's saver functions, which
    are therefore not followed; a TensorFlow 1 graph's restore op is, with its checkpoint reads
    allowed.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        if graph_bytes is None:
            graph_bytes = (directory / SAVED_MODEL_FILE).read_bytes()
        saved.ParseFromString(graph_bytes)
    except (DecodeError, OSError, RuntimeWarning) as error:
        raise TfmiError(f"cannot load SavedModel {directory}: {SAVED_MODEL_FILE} is damaged ({error}) "
                        "(is it a complete SavedModel written by a compatible TensorFlow version?)") from None
    problems = []
    for graph in saved.meta_graphs:
        problems += _graph_problems(graph)
    return list(dict.fromkeys(problems))


def _graph_problems(meta_graph) -> list[str]:
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    functions = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    node_roots = [
        _node_name(tensor.name)
        for signature in meta_graph.signature_def.values()
        for tensor in (*signature.inputs.values(), *signature.outputs.values())
    ]
    for key in _INIT_COLLECTIONS:
        if key in meta_graph.collection_def:
            node_roots += [_node_name(n) for n in meta_graph.collection_def[key].node_list.value]
    function_roots = list(meta_graph.object_graph_def.concrete_functions)
    tf1_restore = set()
    if not meta_graph.object_graph_def.nodes and meta_graph.saver_def.restore_op_name:
        tf1_restore = _reachable_nodes([_node_name(meta_graph.saver_def.restore_op_name)], nodes)
        node_roots += sorted(tf1_restore)

    problems = []
    seen_functions: set[str] = set()
    pending = list(function_roots)
    for name in sorted(_reachable_nodes(node_roots, nodes)):
        node = nodes[name]
        reason = _denied(node)
        if reason and not (name in tf1_restore and node.op in ("RestoreV2", "Restore", "RestoreSlice")):
            problems.append(f"op {node.op} ({reason}) in node {name!r}")
        pending += [f for f in _called_functions(node) if f in functions]
    while pending:
        name = pending.pop()
        if name in seen_functions:
            continue
        seen_functions.add(name)
        for node in functions[name].node_def:
            reason = _denied(node)
            if reason:
                problems.append(f"op {node.op} ({reason}) in function {name!r}")
            pending += [f for f in _called_functions(node) if f in functions]
    return problems


def _reachable_nodes(roots: list[str], nodes: dict) -> set[str]:
    """Graph nodes ``roots`` depend on, through data and control inputs."""
    seen: set[str] = set()
    pending = [r for r in roots if r in nodes]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending += [n for n in map(_node_name, nodes[name].input) if n in nodes and n not in seen]
    return seen


def refusal(path: os.PathLike | str, problems: list[str]) -> TfmiError:
    """The one-line error for a model file that would run code or touch the system."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return TfmiError(
        f"refusing to load {path}: {shown}, which loading or running it would execute. Export the "
        "model as a SavedModel (`model.export(path)`) where you trust it, or pass --unsafe-load "
        "(unsafe_load=True in Python) only if you trust this file and its author"
    )
