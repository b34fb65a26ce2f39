"""INT8 by explicit quantization: a QDQ ONNX from onnxruntime.quantization.quantize_static, calibrated
on tiles of the protocol's real training data. The same QDQ model runs on ONNX Runtime (CPU) and is
what TensorRT >= 10 builds INT8 engines from (its implicit calibrators are deprecated)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ssran_edge.data.patches import calibration_tiles
from ssran_edge.data.protocols import Pair
from ssran_edge.errors import DataError
from ssran_edge.export.fuse import nhwc_residual_adds
from ssran_edge.export.onnx_export import downstream_nodes, ort_optimize, save_onnx, set_metadata, skip_nodes

log = logging.getLogger("ssran_edge.export")
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
# Tiles per calibration pass. ONNX Runtime keeps every calibrated tensor of a pass in memory (~50 MB a
# 64 px tile for a width-64 model): quantizing the bundled CAVE model peaked at 15.3 GB with 256 tiles in
# one pass, 1.7 GB in passes of 16. Min/max ranges merge exactly across passes; a histogram grows its
# bins to fit (ORT's "strided" mode, named for min/max but used by every calibrator).
CALIBRATION_CHUNK = 16


class TileCalibrationReader(CalibrationDataReader):
    """ONNX Runtime's feed of `calibration_tiles`: random tiles of real MSI (N=1 each), drawn
    reproducibly from the training regions. `set_range` lets ONNX Runtime collect in chunks."""

    def __init__(self, pairs: list[Pair], in_bands: int, samples: int, tile: int, seed: int = 0,
                 input_name: str = "msi", noise: tuple[float, ...] = (0.0, 0.0), photo: tuple = ("",)):
        self.tiles = calibration_tiles(pairs, in_bands, samples, tile, seed, noise, photo)
        self.input_name = input_name
        self._iter = iter(self.tiles)

    def __len__(self) -> int:
        return len(self.tiles)

    def get_next(self):
        tile = next(self._iter, None)
        return None if tile is None else {self.input_name: tile}

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.tiles[start_index:end_index])

    def rewind(self) -> None:
        self._iter = iter(self.tiles)


def chunk_size(samples: int, most: int = CALIBRATION_CHUNK) -> int:
    """The largest divisor of `samples` not above `most` (ONNX Runtime's chunks must divide the set)."""
    return max(d for d in range(1, min(most, samples) + 1) if samples % d == 0)


def eca_conv_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the attention convs (ECA's channel conv: 3-D weights in the paper's form, a 1x1 conv on a
    pooled tensor in the deploy form): tiny, and their output gates every channel, so they stay float."""
    weights = {init.name: len(init.dims) for init in model.graph.initializer}
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and (
        weights.get(n.input[1]) == 3 or producer.get(n.input[0]) in ("GlobalAveragePool", "ReduceMean"))]


def edge_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes that stay float in the mixed-precision INT8 model: those before the first ReLU from
    the network input (`onnx_export.skip_nodes`: the first 1x1 conv, a linear or root-polynomial skip)
    and the reconstruction head (every node on a path from the last ReLU to the output: the 1x1
    reconstruct conv, the band attention, the skip's add).

    Why: a per-tensor uint8 grid over the whole input or output range leaves dark pixels and dim
    bands only a few levels, and PSNR is computed per band. Measured on the CAVE model: uint8 input
    and output cost 2.03 dB; keeping these nodes float, 0.06 dB. They are ~1 % of the MACs."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    head: list[str] = []
    stack = [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.op_type == "Relu" or node.name in head:
            continue  # graph input, an initializer, or the body's last ReLU: the head ends here
        head.append(node.name)
        stack += list(node.input)
    return list(dict.fromkeys(skip_nodes(model) + head))


def block_outputs(model: onnx.ModelProto) -> list[str]:
    """The residual blocks' output tensors in graph order: each block ends in a ReLU of its residual Add."""
    producer = {out: node for node in model.graph.node for out in node.output}
    return [n.output[0] for n in model.graph.node if n.op_type == "Relu"
            and getattr(producer.get(n.input[0]), "op_type", None) == "Add"]


def max_float_blocks(model: onnx.ModelProto) -> int:
    """How many trailing residual blocks can stay float with one block still quantized."""
    return max(len(block_outputs(model)) - 1, 0)


def tail_block_nodes(model: onnx.ModelProto, blocks: int) -> list[str]:
    """The nodes of the last `blocks` residual blocks: everything downstream of the output of the block
    before them (the head too, which edge_nodes already keeps float).

    Why: uint8 rounding on the residual stream accumulates block by block, and the last block's
    error reaches the output unattenuated. Measured on the noise-trained CAVE model: its INT8 drift
    fell from 0.33 to 0.09 dB with the last block float, at +29 % time per tile in ONNX Runtime."""
    if blocks <= 0:
        return []
    outputs = block_outputs(model)
    if blocks > len(outputs) - 1:
        raise DataError(f"--float-blocks {blocks}: the model has {len(outputs)} residual blocks and at "
                        f"least one must be quantized (use 0..{max(len(outputs) - 1, 0)})")
    return downstream_nodes(model, [outputs[-blocks - 1]])


def quantize_int8(fp32_path: Path, out_path: Path, reader: TileCalibrationReader, method: str = "minmax",
                  keep_eca_float: bool = True, keep_edges_float: bool = True, float_blocks: int = 0) -> dict:
    """Write a QDQ int8 model: per-channel int8 weights, uint8 activations (x86 VNNI's fast path);
    the input layer and the reconstruction head stay float (see edge_nodes), and the last
    `float_blocks` residual blocks (see tail_block_nodes)."""
    if method not in METHODS:
        raise DataError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=False)
        model = onnx.load(str(prepped))
        exclude = eca_conv_nodes(model) if keep_eca_float else []
        exclude = list(dict.fromkeys(exclude + (edge_nodes(model) if keep_edges_float else [])
                                     + tail_block_nodes(model, float_blocks)))
        quantize_static(str(prepped), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=METHODS[method], nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                       "CalibStridedMinMax": chunk_size(len(reader))})
    return {"calibration_method": method, "calibration_samples": len(reader.tiles),
            "calibration_tile": int(reader.tiles[0].shape[-1]), "float_blocks": float_blocks, "float_nodes": exclude,
            "activation_type": "uint8", "weight_type": "int8 per-channel"}


def ort_optimize_int8(src, dst) -> int:
    """ONNX Runtime's offline CPU optimisation of a QDQ model (QLinear ops, NHWC int8 convs, through
    onnx_export.ort_optimize), then nhwc_residual_adds; the source's metadata_props are kept and the count
    of rewritten adds added. Like model_cpu.onnx, the result is for ONNX Runtime's CPU provider."""
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(ort_optimize(Path(src), Path(tmp) / "opt.onnx")))
    count = nhwc_residual_adds(model)
    save_onnx(set_metadata(model, {"ssran_edge.nhwc_residual_adds": count}), Path(dst))
    return count
