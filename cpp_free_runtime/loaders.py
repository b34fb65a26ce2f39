"""Loading an ONNX artefact, here and not in export: the runtime opens files it never builds.

Every model is checked before ONNX Runtime (or TensorRT's parser) reads it: a readable proto, and no
tensor whose external data lies outside the model's folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import onnx

from ssran_edge.card import ModelCard
from ssran_edge.errors import ArtefactError
from ssran_edge.io import special_file

log = logging.getLogger("ssran_edge.runtime")



def _graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            for sparse in attr.sparse_tensors:
                yield from (sparse.values, sparse.indices)
            for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graph_tensors(graph)


def check_external_data(model: onnx.ModelProto, path: str | Path) -> None:
    """Refuse a model whose tensors keep their data outside its own folder (an absolute path, `..`,
    or a link that leads out): loading it would read any file the process can, e.g. `../secret.bin`.
    Checked on the proto (loaded without external data) before ONNX Runtime or TensorRT open it."""
    folder = Path(path).resolve().parent
    tensors = [*_graph_tensors(model.graph), *(t for f in model.functions for t in _node_tensors(f.node))]
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder) or target == folder:
            raise ArtefactError(f"{path}: tensor {tensor.name!r} keeps its data outside the model's folder "
                              f"({location!r}); refusing to load it")


def load_proto(path: str | Path) -> onnx.ModelProto:
    """The ONNX proto without its external data, checked to be readable and self-contained."""
    if kind := special_file(path):
        raise ArtefactError(f"{path}: is {kind}, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ArtefactError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    check_external_data(model, path)
    return model


def read_metadata(path: str | Path) -> dict[str, Any]:
    """metadata_props of an ONNX file, JSON values decoded."""
    model = load_proto(path)
    out = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:
            out[prop.key] = prop.value
    return out


def ort_session(path: str | Path, providers: list[str] | None = None, threads: int = 0, spinning: bool = False):
    """An ONNX Runtime session; a corrupt or empty file is one clear error.

    Intra-op threads sleep between parallel sections instead of spinning (unless spinning=True): in a
    stream, spinning workers hold both cores of a small CPU while the reader and writer threads wait
    for them, measured as +11-15 % per frame over the bare runner against +5-8 % without, at the same
    bare speed (int8, 512 px frames, 2 cores)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ArtefactError(f"{path}: missing or empty ONNX file")
    load_proto(path)  # unreadable, or data outside its folder: our one line, before ONNX Runtime reads it
    options = ort.SessionOptions()
    # ONNX Runtime's own warnings (e.g. about a foreign model's unused initializers) only with -v
    options.log_severity_level = 2 if log.isEnabledFor(logging.DEBUG) else 3
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise ArtefactError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None


def read_card(path: str | Path) -> ModelCard | None:
    """The model card an artefact carries in its metadata; None for another tool's ONNX."""
    return ModelCard.from_metadata(read_metadata(path), str(path))
