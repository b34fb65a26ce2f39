"""The latency suite: every runner x precision x frame size on real frames, the fp32 GEMM ceiling, and
the end-to-end stream, all in one run so ratios between them hold however noisy the machine is.

    pytest benchmarks/ --benchmark-autosave          (or: ssran-edge bench, which also prints the table)

Each test stores what the report needs in benchmark.extra_info; timings are pytest-benchmark's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from ssran_edge.bench import suite
from ssran_edge.bench.stream import ArraySource, bare_seconds
from ssran_edge.runtime.pipeline import StreamPipeline
from ssran_edge.runtime.sinks import NpySink


def rounds_for(size: int) -> int:
    return 5 if size <= 256 else 3 if size <= 512 else 1


def _gemm(engine: str, n: int):
    """A 2048² fp32 matmul through one library: the ceiling is the best of them in this run."""
    a, b = (np.random.default_rng(k).random((n, n), dtype=np.float32) for k in (0, 1))
    if engine == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.matmul(ta, tb)
    if engine == "numpy":
        return lambda: a @ b
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a, "b": b})


@pytest.mark.parametrize("engine", ["torch", "numpy", "onnxruntime"])
def test_gemm_ceiling(benchmark, engine: str):
    n = 2048
    benchmark.group = "ceiling"
    benchmark.extra_info.update(kind="ceiling", engine=engine, flop=2 * n**3)
    benchmark.pedantic(_gemm(engine, n), rounds=7, warmup_rounds=1)


WHOLE_FRAME_MAX = 512  # torch on a whole 2048² frame peaks near 9.3 GiB (MEASURED.md): tiles are its baseline there


def test_frame(benchmark, artefact: suite.Artefact, runner, size: int, accuracy: dict):
    if artefact.whole_frame and size > WHOLE_FRAME_MAX:
        pytest.skip(f"whole-frame torch above {WHOLE_FRAME_MAX}² needs GBs; the tiled torch row is the baseline")
    card = suite.card_of(artefact.config)
    tile = card.inference.tile
    msi = suite.frame(artefact.config, size)
    out = suite.infer_frame(runner, msi[:tile, :tile], tile)  # warm-up: ORT plans its memory on the first run
    assert out.shape == (min(tile, size), min(tile, size), runner.out_bands) and np.isfinite(out).all()
    benchmark.group = f"{artefact.config} {size}px"
    benchmark.extra_info.update(
        kind="frame", config=artefact.config, artefact=artefact.label, backend=artefact.backend,
        precision=artefact.precision, size=size, tile=tile, pixels=size * size, whole_frame=artefact.whole_frame,
        flop=suite.flops_per_pixel(artefact.config) * size * size, **accuracy)
    if artefact.whole_frame:
        suite.infer_frame(runner, msi, tile, whole_frame=True)  # warm-up at this shape
    benchmark.pedantic(suite.infer_frame, args=(runner, msi, tile), kwargs={"whole_frame": artefact.whole_frame},
                       rounds=rounds_for(size), warmup_rounds=0)


def test_stream(benchmark, artefact: suite.Artefact, runner, request):
    """`ssran-edge run`'s pipeline (reader, checks, tiling, stitching, .npy sink) with the runner as it ships
    against the bare runner at its fastest (ORT workers spinning) on the same tiles. Each round measures
    the bare runner first, then the stream, so both see the same machine; figures are medians."""
    if artefact.whole_frame:
        pytest.skip("the stream always runs in tiles")
    size = request.config.getoption("--bench-stream-size")
    count = request.config.getoption("--bench-stream-frames")
    tile = suite.card_of(artefact.config).inference.tile
    frames = suite.frames(artefact.config, size, count)
    bare: list[float] = []
    steady: list[float] = []

    def measure_bare():
        bare.append(bare_seconds(runner, frames, tile, suite.HALO, batch=runner.requests))
        return (), {}

    shipped = suite.open_runner(artefact, request.config.getoption("--bench-threads"), spinning=False).activate()
    shipped.infer(np.ascontiguousarray(frames[0][:tile, :tile].transpose(2, 0, 1))[None])  # warm-up

    def stream() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sink = NpySink(Path(tmp) / "out")
            sink.open(runner.out_bands, None)
            stats = StreamPipeline(ArraySource(frames), shipped, sink, tile=tile, halo=suite.HALO,
                                   batch=shipped.requests).run()
            sink.close()
            assert stats.frames == count and stats.dropped == 0
            assert len(list((Path(tmp) / "out").glob("*.npy"))) == count
            summary = stats.summary()
            if "steady_fps" in summary:  # frames 2..n, once the pipeline is full
                steady.append(1 / summary["steady_fps"])

    benchmark.group = f"{artefact.config} stream {size}px"
    rounds = 2 if artefact.backend == "torch" else 3
    benchmark.pedantic(stream, setup=measure_bare, rounds=rounds, warmup_rounds=0)
    shipped.deactivate()
    benchmark.extra_info.update(
        kind="stream", config=artefact.config, artefact=artefact.label, backend=artefact.backend,
        precision=artefact.precision, size=size, frames=count, pixels=count * size * size,
        bare_seconds=float(np.median(bare)), flop=suite.flops_per_pixel(artefact.config) * count * size * size)
    if steady:
        benchmark.extra_info["steady_seconds_per_frame"] = float(np.median(steady))


def test_decode(benchmark, artefact: suite.Artefact, request):
    """What decoding photos costs `ssran-edge run`: a folder of 8-bit sRGB PNG frames through the stream
    as shipped (no sink). Per frame (medians): the decode stage (codes -> linear values, one table lookup)
    against the runner's time plus that decode, the issue's "<= 5 %"; the PNG read (Pillow) beside them
    for the record. Measured on ONNX Runtime int8, the artefact `run` picks on a CPU; one is enough."""
    from PIL import Image

    from ssran_edge.encoding import srgb_eotf
    from ssran_edge.runtime.sources import FolderSource

    if artefact.backend != "ort" or artefact.precision != "int8" or artefact.whole_frame:
        pytest.skip("decoding is measured once, with ONNX Runtime int8")
    size = request.config.getoption("--bench-stream-size")
    count = request.config.getoption("--bench-stream-frames")
    tile = suite.card_of(artefact.config).inference.tile
    shipped = suite.open_runner(artefact, request.config.getoption("--bench-threads"), spinning=False).activate()
    samples: dict[str, list[float]] = {"decode": [], "runner": [], "read": []}
    with tempfile.TemporaryDirectory() as tmp:
        # the linear demo frames sRGB-encoded as a camera would: the codes whose decode gives them back
        codes = np.arange(256) / 255
        for k, linear in enumerate(suite.frames(artefact.config, size, count)):
            encoded = np.searchsorted(srgb_eotf(codes), np.clip(linear / linear.max(), 0, 1)).clip(0, 255)
            Image.fromarray(encoded.astype(np.uint8)).save(Path(tmp) / f"f{k:03d}.png")
        shipped.infer(np.zeros((1, shipped.in_bands, tile, tile), np.float32))  # warm-up

        def stream() -> None:
            stats = StreamPipeline(FolderSource(tmp), shipped, None, tile=tile, halo=suite.HALO,
                                   batch=shipped.requests).run()
            assert stats.frames == count
            for stage in ("decode", "read"):
                samples[stage].append(stats.stage_seconds[stage].percentile(50))
            samples["runner"].append(stats.runner_per_frame.percentile(50, skip_first=True))

        benchmark.group = f"{artefact.config} decode {size}px"
        benchmark.pedantic(stream, rounds=3, warmup_rounds=0)
    shipped.deactivate()
    decode, runner_s, read = (float(np.median(samples[k])) for k in ("decode", "runner", "read"))
    benchmark.extra_info.update(
        kind="decode", config=artefact.config, artefact=artefact.label, backend=artefact.backend,
        precision=artefact.precision, size=size, frames=count, pixels=count * size * size,
        flop=suite.flops_per_pixel(artefact.config) * count * size * size, decode_seconds=decode,
        runner_seconds=runner_s, read_seconds=read, decode_share=decode / (runner_s + decode))
