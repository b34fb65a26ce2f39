"""One contract over every runner the backend table can build here: life cycle, the shared checks (band
count in, shape out), float32 (N, out_bands, H, W) output for odd tile sizes, counters, typed attributes,
and agreement with the PyTorch reference. TensorRT is skipped with the reason this machine gives."""

from pathlib import Path

import numpy as np
import pytest

from ssran_edge.assets import MODELS
from ssran_edge.errors import DataError, RunnerError
from ssran_edge.runtime.backends import ARTEFACTS, BACKEND, BACKENDS, artefact_of, open_runner
from ssran_edge.runtime.engines import tensorrt_status
from ssran_edge.runtime.runners import Runner

WEIGHTS = MODELS["cave"]
ONNX = WEIGHTS.with_suffix(".onnx")
SHAPES = [(1, 16, 16), (2, 17, 23), (3, 9, 33)]  # (N, H, W): odd sizes, as a frame's border tiles are
# max abs vs the fp32 PyTorch model on one tile. int8: this test's quick calibration (random tiles, every layer
# quantized) is no accuracy figure: finite output only; export's drift gate measures real int8 artefacts.
TOLERANCE = {"fp32": 1e-4, "fp16": 0.05, "int8": float("inf")}


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    """The bundled weights and ONNX, and an fp16 and an int8 ONNX made from it here (a few seconds)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ssran_edge.export.onnx_export import convert_fp16, save_onnx, set_metadata
    from ssran_edge.runtime.loaders import read_card

    folder = tmp_path_factory.mktemp("contract")
    card = read_card(ONNX)
    proto = onnx.load(str(ONNX))
    save_onnx(set_metadata(convert_fp16(proto, keep_io_types=True), card.metadata("fp16")), folder / "model_fp16.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            name = proto.graph.input[0].name
            self.batches = iter([{name: rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(ONNX), str(folder / "raw_int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    int8 = onnx.load(str(folder / "raw_int8.onnx"))
    save_onnx(set_metadata(int8, card.metadata("int8")), folder / "model_int8.onnx")
    return {"weights": WEIGHTS, "fp32": ONNX, "fp16": folder / "model_fp16.onnx", "int8": folder / "model_int8.onnx"}


def _trt_engine(_artefacts) -> Path:
    ok, reason = tensorrt_status()
    if not ok:
        pytest.skip(f"TensorRT not available: {reason}")
    pytest.skip("TensorRT runs here, but this contract builds no engine: tests/test_tensorrt_engine.py does")


# (id, backend, precision, artefact key): every backend in the table, every precision ONNX Runtime opens
RUNNERS = [
    ("torch", "torch", "fp32", "weights"),
    ("ort-fp32", "ort", "fp32", "fp32"),
    ("ort-fp16", "ort", "fp16", "fp16"),
    ("ort-int8", "ort", "int8", "int8"),
    ("openvino-fp32", "openvino", "fp32", "fp32"),
    ("openvino-int8", "openvino", "int8", "int8"),
    ("trt", "trt", "fp16", None),
]


def test_the_contract_covers_every_backend_in_the_table():
    assert BACKENDS == ("auto", "trt", "ort", "openvino", "torch")
    assert {backend for _, backend, _, _ in RUNNERS} == set(BACKEND)


@pytest.fixture(params=RUNNERS, ids=[r[0] for r in RUNNERS])
def made(request, artefacts, tmp_path):
    _, backend, precision, key = request.param
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
    path = _trt_engine(artefacts) if key is None else artefacts[key]
    options = {"hint": "LATENCY"} if backend == "openvino" else {}
    runner = open_runner(path, backend, threads=2, **options)
    if backend == "openvino":
        runner.cache = tmp_path  # compiled models of this test only
    return runner, precision


def test_runner_contract(made):
    runner, precision = made
    assert isinstance(runner, Runner) and not runner.active
    assert isinstance(runner.device, str) and runner.device
    assert isinstance(runner.tile, int) and isinstance(runner.requests, int)
    assert (runner.in_bands, runner.out_bands) == (3, 31)
    with pytest.raises(RunnerError, match="activate"):
        runner.infer(np.zeros((1, 3, 8, 8), np.float32))
    with runner as active:
        assert active is runner and runner.active
        assert isinstance(runner.requests, int) and runner.requests >= 1
        with pytest.raises(DataError, match=r"expected \(N, 3, H, W\)") as exc:
            runner.infer(np.zeros((1, 4, 8, 8), np.float32))
        assert "\n" not in str(exc.value)
        rng = np.random.default_rng(0)
        for n, h, w in SHAPES:
            out = runner.infer(rng.random((n, 3, h, w), dtype=np.float32))
            assert out.shape == (n, 31, h, w) and out.dtype == np.float32
        assert runner.calls == len(SHAPES) and runner.inference_seconds > 0
    assert not runner.active


def test_every_runner_agrees_with_the_torch_reference(made):
    runner, precision = made
    x = np.random.default_rng(1).random((1, 3, 24, 24), dtype=np.float32)
    with open_runner(WEIGHTS, "torch") as reference, runner:
        expected, got = reference.infer(x), runner.infer(x)
    assert np.isfinite(got).all()
    assert np.abs(expected - got).max() <= TOLERANCE[precision], (runner.name, np.abs(expected - got).max())


def test_the_output_shape_is_checked_for_every_runner():
    class Wrong(Runner):
        name, in_bands, out_bands = "wrong", 3, 31

        def infer_impl(self, batch):
            return np.zeros((batch.shape[0], 30, *batch.shape[2:]), np.float16)

    with Wrong() as runner, pytest.raises(DataError, match=r"wrong: output \(1, 30, 8, 8\) for input \(1, 3, 8, 8\); "
                                                         r"the runtime needs \(1, 31, 8, 8\)"):
        runner.infer(np.zeros((1, 3, 8, 8), np.float32))
    assert runner.calls == 0


@pytest.mark.parametrize("name,kind,opens,portable", [
    ("model.engine", "engine", ("trt",), False), ("m.PLAN", "engine", ("trt",), False),
    ("model_cpu.onnx", "onnx-cpu", ("ort",), False), ("model_int8_cpu.onnx", "onnx-cpu", ("ort",), False),
    ("model_int8.onnx", "onnx", ("ort", "openvino"), True), ("model.safetensors", "weights", ("torch",), True),
])
def test_the_table_recognises_each_artefact(name, kind, opens, portable):
    artefact = artefact_of(name)
    assert (artefact.kind, artefact.opens, artefact.portable) == (kind, opens, portable)
    assert artefact in ARTEFACTS


def test_open_runner_refuses_what_a_backend_cannot_open(tmp_path):
    with pytest.raises(RunnerError, match=r"model_cpu.onnx is ONNX Runtime's own CPU graph \(\*_cpu.onnx\)"):
        open_runner(tmp_path / "model_cpu.onnx", "openvino")
    with pytest.raises(RunnerError, match=r"m.engine is a TensorRT engine: use --backend trt"):
        open_runner(tmp_path / "m.engine", "ort")
    with pytest.raises(RunnerError, match="unknown backend 'tflite'"):
        open_runner(ONNX, "tflite")


@pytest.mark.parametrize("device,expected", [(0, "cuda:0"), (1, "cuda:1"), ("cuda", "cuda:0"), ("cuda:2", "cuda:2")])
def test_trt_device_is_one_string_form(device, expected):
    from ssran_edge.runtime.runners import cuda_device

    assert cuda_device(device)[0] == expected
    with pytest.raises(RunnerError, match="a CUDA device is cuda, cuda:N or N"):
        cuda_device("CPU")
