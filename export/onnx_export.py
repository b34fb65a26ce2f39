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

import onnx
import torch

from ssran_edge.atomic import atomic_path, sha256_file
from ssran_edge.export.fuse import deploy_form, global_average_pools
from ssran_edge.io import cached_onnx_path

log = logging.getLogger("ssran_edge.export")
INPUT, OUTPUT = "msi", "hsi"
OPSET = 20



def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Write metadata_props (strings as they are, anything else as JSON)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    return model


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


def export_weights(weights: str | Path, dst: str | Path) -> Path:
    """The fp32 ONNX of a weights file, with its card and the weights' sha256 in the metadata: how the
    runtime knows that an ONNX found beside `model.safetensors` is that model (the bundled ones ship so)."""
    from ssran_edge.checkpoint import load_model

    model, card = load_model(weights)
    proto = export_fp32(model)
    return save_onnx(set_metadata(proto, card.metadata("fp32", weights_sha256=sha256_file(weights))), Path(dst))


def cached_onnx(weights: str | Path) -> Path:
    """export_weights once per weights file, kept under $SSRAN_CACHE (default ~/.cache/ssran-edge) by hash:
    the runtime's ONNX Runtime path for weights that ship without an ONNX. The weights are checked (card,
    tensors, architecture) before the export is announced: bad weights are one error line, alone."""
    from ssran_edge.checkpoint import load_model
    from ssran_edge.errors import shown_path

    path = cached_onnx_path(weights)
    if not path.is_file():
        load_model(weights)  # raises CheckpointError for weights that could not be exported
        log.info("exporting %s to ONNX once (cached at %s)", shown_path(weights), shown_path(path))
        export_weights(weights, path)
    return path


def skip_nodes(proto: onnx.ModelProto) -> list[str]:
    """Nodes reachable from the network input without passing a ReLU: the layer that reads the MSI and,
    in the skip variants, the whole skip (root-polynomial terms, its 1x1 conv) and the final add."""
    return downstream_nodes(proto, [i.name for i in proto.graph.input], stop_at="Relu")


def downstream_nodes(proto: onnx.ModelProto, tensors: list[str], stop_at: str = "") -> list[str]:
    """Names of the nodes reachable from `tensors` through their consumers, not passing a node of type
    `stop_at` (nor including it)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[str] = []
    stack = [n for t in tensors for n in consumers.get(t, [])]
    while stack:
        node = stack.pop()
        if node.op_type == stop_at or node.name in found:
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
