"""SSRAN -> ONNX: dynamic batch/height/width, checked, simplified, with metadata; plus ONNX Runtime's
offline-optimised CPU graph (Conv+ReLU fused) and an FP16 variant.

Exporter: torch.onnx's dynamo exporter (torch.export). The TorchScript ("legacy") exporter is
deprecated upstream; the dynamo graph of SSRAN is clean (Conv, Relu, Concat, ReduceMean,
Sigmoid, Mul, Add) and its dynamic dimensions are declared, not guessed from a trace.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from ssran_edge.export.fuse import deploy_form, global_average_pools

from ssran_edge import __version__
from ssran_edge.checkpoint import atomic_path
from ssran_edge.errors import SSRANEdgeError

log = logging.getLogger("ssran_edge.export")
INPUT, OUTPUT = "msi", "hsi"
OPSET = 20


class ExportError(SSRANEdgeError):
    """An export that cannot be produced or does not pass its checks."""


def card_metadata(card: dict[str, Any], precision: str, **extra: Any) -> dict[str, Any]:
    """metadata_props for every artefact: what a runtime needs to trust and use the file."""
    meta = {
        "ssran_edge.version": __version__,
        "ssran_edge.precision": precision,
        "ssran_edge.in_bands": card["in_bands"],
        "ssran_edge.out_bands": card["out_bands"],
        "ssran_edge.wavelengths_nm": card.get("wavelengths_nm"),
        "ssran_edge.srf": card.get("srf"),
        "ssran_edge.msi_band_names": card.get("msi_band_names"),
        "ssran_edge.protocol": card.get("protocol"),
        "ssran_edge.arch": card.get("arch"),
        "ssran_edge.inference": card.get("inference"),
        "ssran_edge.test_metrics": card.get("test_metrics"),
        **{f"ssran_edge.{k}": v for k, v in extra.items()},
    }
    return meta


def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Write metadata_props (strings as they are, anything else as JSON)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    return model


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
            raise ExportError(f"{path}: tensor {tensor.name!r} keeps its data outside the model's folder "
                              f"({location!r}); refusing to load it")


def load_proto(path: str | Path) -> onnx.ModelProto:
    """The ONNX proto without its external data, checked to be readable and self-contained."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ExportError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
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


def save_onnx(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def export_fp32(model: torch.nn.Module, imgsz: int = 64, dynamic: bool = True,
                simplify: bool = True) -> onnx.ModelProto:
    """Export with dynamic (batch, height, width) unless dynamic=False (then fixed 1 x imgsz x imgsz), in
    the deploy form of export/fuse.py (ECA as 4-D ops, GlobalAveragePool)."""
    model = deploy_form(model.eval().float().cpu())
    example = torch.rand(1, model.in_bands, imgsz, imgsz)
    dims = None
    if dynamic:
        dims = {"msi": {0: torch.export.Dim("batch", min=1, max=1024), 2: torch.export.Dim("height", min=2),
                        3: torch.export.Dim("width", min=2)}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=dims, verbose=False)
    proto = program.model_proto
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    proto = global_average_pools(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def skip_nodes(proto: onnx.ModelProto) -> list[str]:
    """Nodes reachable from the network input without passing a ReLU: the layer that reads the MSI and,
    in the skip variants, the whole skip (root-polynomial terms, its 1x1 conv) and the final add."""
    inputs = {i.name for i in proto.graph.input}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[str] = []
    stack = [n for i in inputs for n in consumers.get(i, [])]
    while stack:
        node = stack.pop()
        if node.op_type == "Relu" or node.name in found:
            continue
        found.append(node.name)
        stack += [n for out in node.output for n in consumers.get(out, [])]
    return found


def convert_fp16(proto: onnx.ModelProto, keep_io_types: bool = True) -> onnx.ModelProto:
    """FP16 weights and compute (onnxruntime.transformers.float16); I/O stay fp32 unless
    keep_io_types=False. The skip (`skip_nodes`) stays fp32 end to end: a root-polynomial regression's
    large, cancelling coefficients (|w| ~ 200 on CAVE) lose 1.8 dB in fp16, and these nodes are a few
    kFLOP per pixel of SSRAN's 545."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about values clipped to the fp16 range
        fp16 = convert_float_to_float16(proto, keep_io_types=keep_io_types, node_block_list=skip_nodes(proto))
    return _drop_round_trip_casts(fp16)


def _drop_round_trip_casts(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Cast(fp32 -> fp16) -> Cast(fp16 -> fp32) pairs, which the converter puts between two fp32
    nodes and which round a tensor to fp16 for nothing (in place)."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    to = {n.name: next(a.i for a in n.attribute if a.name == "to") for n in graph.node if n.op_type == "Cast"}
    for first in [n for n in graph.node if to.get(n.name) == onnx.TensorProto.FLOAT16]:
        readers = [n for n in graph.node if first.output[0] in n.input]
        if (not readers or any(to.get(n.name) != onnx.TensorProto.FLOAT for n in readers)
                or outputs & {first.output[0], *(n.output[0] for n in readers)}):
            continue  # a graph output keeps its name
        for second in readers:  # readers of the fp32 copy read the original tensor instead
            for node in graph.node:
                node.input[:] = [first.input[0] if i == second.output[0] else i for i in node.input]
            graph.node.remove(second)
        graph.node.remove(first)
    return _topological(proto)


def _topological(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Sort the nodes so each comes after the producers of its inputs (the converter appends its casts
    at the end; ONNX Runtime copes, onnx.checker and other runtimes do not). In place."""
    graph = proto.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            raise ValueError(f"graph has a cycle or a missing input near {pending[0].name}")
        for n in progress:
            ordered.append(n)
            ready.update(n.output)
        pending = [n for n in pending if n not in progress]
    del graph.node[:]
    graph.node.extend(ordered)
    return proto


def ort_optimize(src: Path, dst: Path) -> Path:
    """ONNX Runtime's offline graph optimisation for the CPU provider (Conv+ReLU -> FusedConv, ECA's
    conv+sigmoid fused, NCHWc layout). The result is tied to the CPU provider, as ORT documents."""
    import onnxruntime as ort

    with atomic_path(dst) as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return dst




def ort_session(path: str | Path, providers: list[str] | None = None, threads: int = 0, spinning: bool = False):
    """An ONNX Runtime session; a corrupt or empty file is one clear error.

    Intra-op threads sleep between parallel sections instead of spinning (unless spinning=True): in a
    stream, spinning workers hold both cores of a small CPU while the reader and writer threads wait
    for them, measured as +11-15 % per frame over the bare runner against +5-8 % without, at the same
    bare speed (int8, 512 px frames, 2 cores)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ExportError(f"{path}: missing or empty ONNX file")
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
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None


def ort_infer(session):
    """A numpy batch function (N, C, h, w) -> (N, out, h, w) over an ORT session, casting to the
    input's dtype (fp16 models with fp16 I/O)."""
    input_meta = session.get_inputs()[0]
    dtype = np.float16 if input_meta.type == "tensor(float16)" else np.float32

    def infer(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_meta.name: batch.astype(dtype, copy=False)})[0].astype(np.float32)

    return infer
