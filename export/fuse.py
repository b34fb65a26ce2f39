"""Export-time rewrites of SSRAN that keep its numbers and suit the runtimes' kernels.

1. ECA's 1-D convolution across channels becomes a 1x1 convolution by its banded (Toeplitz) C x C
   matrix, applied to the (N, C, 1, 1) pooled tensor. The paper's form needs Squeeze/Unsqueeze
   around a Conv1d; those 3-D tensors stop ONNX Runtime's NHWC int8 path, which then transposes
   every block's activations back and forth.
2. The pooling, a ReduceMean over (H, W) with keepdims, becomes GlobalAveragePool, which ONNX
   Runtime runs quantized in NHWC (QLinearGlobalAveragePool) instead of dequantizing the tensor.

Measured with benchmarks/profile.py on the CAVE model's int8 graph (264 px tile): Transpose, ReduceMean
and DequantizeLinear fell from about a quarter of kernel time to a few percent.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from ssran_edge.model import ECA


class ECAMatrix(nn.Module):
    """ECA as 4-D ops: mean over (H, W) -> 1x1 conv by the banded matrix of the 1-D kernel -> sigmoid -> scale."""

    def __init__(self, eca: ECA, channels: int):
        super().__init__()
        kernel = eca.conv.weight.detach().reshape(-1)
        radius = kernel.numel() // 2
        matrix = torch.zeros(channels, channels)
        for tap, value in enumerate(kernel):
            # output channel i reads input channel i + tap - radius (zero padding outside 0..C-1)
            matrix += torch.diag(value.expand(channels - abs(tap - radius)), diagonal=tap - radius)
        self.register_buffer("weight", matrix[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(F.conv2d(x.mean(dim=(2, 3), keepdim=True), self.weight))


def _channels_in(module: nn.Module, parent: nn.Module) -> int:
    # An ECA scales the output of the layer before it: a block's fuse conv, or the reconstruct conv.
    fuse = getattr(parent, "fuse", None)
    if module is getattr(parent, "attention", None) and fuse is not None:
        return fuse[0].out_channels
    return parent.reconstruct.out_channels


def deploy_form(model: nn.Module) -> nn.Module:
    """A copy of the model with every ECA in its 4-D form (identical outputs up to float rounding)."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ECA):
                setattr(parent, name, ECAMatrix(child, _channels_in(child, parent)))
    return model


def global_average_pools(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ReduceMean over the two spatial axes of a 4-D tensor, keepdims=1 -> GlobalAveragePool (in place)."""
    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*inferred.value_info, *inferred.input]}
    for node in proto.graph.node:
        if node.op_type != "ReduceMean" or len(node.input) != 2 or node.input[1] not in constants:
            continue
        axes = sorted(int(a) % 4 for a in np.atleast_1d(constants[node.input[1]]))
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        if ranks.get(node.input[0]) == 4 and axes == [2, 3] and keepdims == 1:
            node.CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name))
    return drop_unused_initializers(proto)


def drop_unused_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Remove initializers no node reads (the axes of a ReduceMean replaced above): ONNX Runtime warns
    "Removing initializer ..." for each on every session it opens. In place."""
    used = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    unused = [init for init in proto.graph.initializer if init.name not in used]
    for init in unused:
        proto.graph.initializer.remove(init)
    graph_inputs = [i for i in proto.graph.input if i.name in {init.name for init in unused}]
    for i in graph_inputs:
        proto.graph.input.remove(i)
    return proto


# --- ONNX Runtime's int8 CPU graph: residual adds in NHWC ---------------------------------------------

def _perm(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def _nhwc_of(graph: onnx.GraphProto, name: str) -> str | None:
    """The same tensor in NHWC, if the graph already has it (it is a transpose of one, or has one)."""
    for n in graph.node:
        if n.op_type == "Transpose" and n.output[0] == name and _perm(n) == TO_NCHW:
            return n.input[0]
    return next((n.output[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] == name
                 and _perm(n) == TO_NHWC), None)


def nhwc_residual_adds(model: onnx.ModelProto) -> int:
    """Rewrite ONNX Runtime's optimised int8 graph (in place) so that a block's residual QLinearAdd runs
    in NHWC, where its convs already run. ORT's layout pass leaves the skip connection in NCHW, so each
    block transposes its output back to NCHW for the add and the sum forward again for the next block:
    a quarter of the CPU int8 model's kernel time. The add is elementwise with per-tensor scales, so
    the layout does not change a single output value (tested). Returns the number of adds rewritten."""
    graph, rewritten = model.graph, 0
    for add in [n for n in graph.node if n.domain == "com.microsoft" and n.op_type == "QLinearAdd"]:
        # QLinearAdd(A, sA, zA, B, sB, zB, sC, zC): both operands must already exist in NHWC
        a, b = _nhwc_of(graph, add.input[0]), _nhwc_of(graph, add.input[3])
        if a is None or b is None:
            continue
        out = add.output[0]
        add.input[0], add.input[3], add.output[0] = a, b, out + "_nhwc"
        # Readers that wanted the sum in NHWC take it directly; any other reader gets one transpose back.
        for t in [n for n in graph.node if n.op_type == "Transpose" and _perm(n) == TO_NHWC and n.input[0] == out]:
            for n in graph.node:
                n.input[:] = [add.output[0] if i == t.output[0] else i for i in n.input]
            graph.node.remove(t)
        back = helper.make_node("Transpose", [add.output[0]], [out], perm=TO_NCHW, name=f"{add.name}_to_nchw")
        graph.node.insert(list(graph.node).index(add) + 1, back)
        rewritten += 1
    while True:  # transposes nobody reads any more
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Transpose" and not set(n.output) & read]
        if not dead:
            return rewritten
        for n in dead:
            graph.node.remove(n)
