"""The runner contract on real backends: PyTorch and ONNX Runtime (CPU) on the bundled model."""

import numpy as np
import pytest

from ssran_edge.assets import MODELS, demo_scene
from ssran_edge.errors import DataError, RunnerError, SSRANEdgeError
from ssran_edge.export.onnx_export import export_fp32, save_onnx, set_metadata
from ssran_edge.runtime.runners import OrtRunner, TorchRunner
from ssran_edge.srf import load_srf, simulate_msi
from ssran_edge.tiling import run_tiled


@pytest.fixture(scope="module")
def cave_onnx(tmp_path_factory):
    torch_runner = TorchRunner(MODELS["cave"])
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    save_onnx(set_metadata(export_fp32(torch_runner.model), torch_runner.card.metadata("fp32")), path)
    return path


@pytest.fixture(scope="module")
def rgb():
    scene = demo_scene()
    return simulate_msi(scene.data[:96, :80], load_srf("nikon_d700").matrix_for(scene.wavelengths, 31))


def test_ort_fp32_agrees_with_torch_on_tiles(cave_onnx, rgb):
    with TorchRunner(MODELS["cave"]) as torch_runner, OrtRunner(cave_onnx) as ort_runner:
        assert (ort_runner.in_bands, ort_runner.out_bands) == (3, 31)
        a = run_tiled(torch_runner.infer, rgb, 31, tile=32, halo=8, batch=3)
        b = run_tiled(ort_runner.infer, rgb, 31, tile=32, halo=8, batch=3)
    np.testing.assert_allclose(b, a, atol=2e-5)
    assert ort_runner.calls > 0 and ort_runner.inference_seconds > 0


def test_runner_checks_band_count_and_life_cycle(cave_onnx):
    runner = OrtRunner(cave_onnx)
    with pytest.raises(RunnerError, match="activate"):
        runner.infer(np.zeros((1, 3, 8, 8), np.float32))
    with runner:
        with pytest.raises(DataError, match=r"expected \(N, 3, H, W\)"):
            runner.infer(np.zeros((1, 4, 8, 8), np.float32))
    assert not runner.active


def test_unavailable_providers_are_refused_clearly(cave_onnx):
    with pytest.raises(RunnerError, match="not in this onnxruntime build"):
        OrtRunner(cave_onnx, provider="cuda").activate()
    with pytest.raises(RunnerError, match="CUDA is not available"):
        TorchRunner(MODELS["cave"], device="cuda").activate()


def test_corrupt_onnx_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(SSRANEdgeError, match="not a readable ONNX file"):
        OrtRunner(bad).activate()
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(SSRANEdgeError, match="missing or empty ONNX file"):
        OrtRunner(empty).activate()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # a foreign file, made the legacy way on purpose
def test_foreign_onnx_uses_its_static_band_counts(tmp_path):
    import torch

    path = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 5, 1), (torch.rand(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    with OrtRunner(path) as runner:
        assert (runner.in_bands, runner.out_bands) == (3, 5)
        assert runner.infer(np.zeros((2, 3, 4, 4), np.float32)).shape == (2, 5, 4, 4)
