"""export/fuse.py: the deploy form computes what the paper's form computes, with 4-D ops only."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from ssran_edge.export.fuse import ECAMatrix, deploy_form, global_average_pools
from ssran_edge.export.onnx_export import export_fp32
from ssran_edge.model import ECA, build_model


def test_eca_matrix_is_the_1d_conv_with_zero_padding():
    torch.manual_seed(0)
    eca = ECA(5)
    x = torch.rand(2, 9, 6, 7)
    matrix = ECAMatrix(eca, 9).weight[:, :, 0, 0]
    k = eca.conv.weight.detach().reshape(-1)
    assert matrix[4, 2:7].tolist() == pytest.approx(k.tolist())  # a row is the kernel, centred
    assert matrix[0, :3].tolist() == pytest.approx(k[2:].tolist()) and matrix[0, 3:].abs().sum() == 0  # clipped
    with torch.no_grad():
        assert torch.allclose(ECAMatrix(eca, 9)(x), eca(x), atol=1e-6)


@pytest.mark.parametrize("arch", ["ssran", "ssran_linear_skip"])
def test_deploy_form_and_its_onnx_match_the_model(arch):
    torch.manual_seed(1)
    model = build_model(arch, 4, 20, width=16, num_blocks=2).eval()
    for p in model.parameters():  # the skip variant starts with a zero reconstruction: give it weights
        torch.nn.init.normal_(p, std=0.2)
    x = torch.rand(2, 4, 23, 17)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(deploy_form(model)(x), expected, atol=1e-6)
    proto = export_fp32(model)
    ops = {n.op_type for n in proto.graph.node}
    assert "GlobalAveragePool" in ops and not ops & {"Squeeze", "Unsqueeze", "ReduceMean"}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"msi": x.numpy()})[0], expected.numpy(), atol=1e-5)


def test_only_spatial_keepdims_means_become_global_pools():
    def graph(axes, keepdims):
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
        shape = [1, 3, 4, 5]
        reduced = [1 if i in [a % 4 for a in axes] else d for i, d in enumerate(shape)]
        out = reduced if keepdims else [d for i, d in enumerate(shape) if i not in [a % 4 for a in axes]]
        return helper.make_model(helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
            [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)]),
            opset_imports=[helper.make_opsetid("", 20)])

    assert global_average_pools(graph([2, 3], 1)).graph.node[0].op_type == "GlobalAveragePool"
    assert global_average_pools(graph([-2, -1], 1)).graph.node[0].op_type == "GlobalAveragePool"
    for axes, keepdims in (([1], 1), ([2, 3], 0), ([1, 2, 3], 1)):
        assert global_average_pools(graph(axes, keepdims)).graph.node[0].op_type == "ReduceMean"
    onnx.checker.check_model(global_average_pools(graph([2, 3], 1)))
