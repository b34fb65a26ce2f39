"""The OpenVINO runner on real OpenVINO (the [openvino] extra): the bundled artefacts give ONNX Runtime's
numbers, THROUGHPUT mode (requests in flight) gives LATENCY's, the compiled-model cache, `auto`'s
measured choice, and bad input in one line."""

import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from ssran_edge.assets import MODELS
from ssran_edge.errors import RunnerError
from ssran_edge.metrics import psnr
from ssran_edge.runtime.backends import measured_cpu_backend, select_runner
from ssran_edge.runtime.runners import OpenVinoRunner, OrtRunner
from ssran_edge.srf import load_srf, simulate_msi
from ssran_edge.tiling import run_tiled
from tests.conftest import REPO

pytest.importorskip("openvino", reason="the [openvino] extra is not installed")


@pytest.fixture(scope="module")
def msi():
    """The bundled CAVE crop seen through the Nikon D700, as the demo runs it."""
    from ssran_edge.assets import demo_scene

    cube = demo_scene()
    return simulate_msi(cube.data, load_srf("nikon_d700").matrix_for(cube.wavelengths, cube.data.shape[-1]))


def tiles(runner, msi, batch=1):
    with runner:
        return run_tiled(runner.infer, msi, runner.out_bands, tile=128, halo=8, batch=batch)


@pytest.mark.parametrize("model", ["cave", "cave_ssran", "pavia"])
def test_openvino_gives_onnx_runtimes_numbers_on_the_bundled_models(model, tmp_path):
    onnx_path = MODELS[model].with_suffix(".onnx")
    runner = OpenVinoRunner(onnx_path, cache=tmp_path)
    msi = np.random.default_rng(0).random((200, 170, OrtRunner(onnx_path).card.in_bands), dtype=np.float32)
    ours, reference = tiles(runner, msi), tiles(OrtRunner(onnx_path), msi)
    # f32 arithmetic: OpenVINO's bf16 default (CPUs with AVX512-BF16/AMX) was off by up to 1.4 here
    assert psnr(reference, ours) > 80, psnr(reference, ours)
    assert runner.name == "openvino-cpu" and runner.calls > 0


def test_requests_in_flight_overlap_tiles_and_give_the_same_cube(msi, tmp_path):
    onnx_path = MODELS["cave"].with_suffix(".onnx")
    latency = OpenVinoRunner(onnx_path, hint="LATENCY", cache=tmp_path)
    throughput = OpenVinoRunner(onnx_path, hint="THROUGHPUT", cache=tmp_path)
    adaptive = OpenVinoRunner(onnx_path, cache=tmp_path)  # AUTO: LATENCY for one tile, requests for several
    a = tiles(latency, msi, batch=1)
    b = tiles(throughput, msi, batch=4)  # 4 tiles a call, spread over the requests in flight
    c = tiles(adaptive, msi, batch=3)  # 3 + 3 + 3 + 3 + 3 + 1 tiles of 128 (with halo) in a 256^2 frame
    assert latency.requests == 1 and adaptive.requests == throughput.requests  # OpenVINO's choice: 2 on 2 cores
    assert throughput.calls < latency.calls
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a, c, atol=1e-4)


def test_compiled_model_cache_serves_the_second_start(tmp_path):
    onnx_path = MODELS["cave"].with_suffix(".onnx")
    first = OpenVinoRunner(onnx_path, cache=tmp_path).activate()
    blobs = list(tmp_path.glob("*.blob"))
    assert blobs, "no compiled model in the cache"
    second = OpenVinoRunner(onnx_path, cache=tmp_path).activate()
    assert list(tmp_path.glob("*.blob")) == blobs  # read, not compiled again
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    np.testing.assert_array_equal(first.infer(x), second.infer(x))


def _activate_and_infer(cache: str) -> np.ndarray:
    x = np.random.default_rng(2).random((1, 3, 32, 32), dtype=np.float32)
    with OpenVinoRunner(MODELS["cave_ssran"].with_suffix(".onnx"), cache=cache) as runner:
        return runner.infer(x)


def test_compiles_into_the_cache_one_process_at_a_time(tmp_path):
    """Two processes compiling one uncached model into one cache raced on the blob OpenVINO writes (a batch's
    Dask workers: "cannot set permissions: No such file or directory"). A compile waits for the cache's lock,
    and processes started together all serve the model."""
    cache = tmp_path / "held"
    cache.mkdir()
    with open(cache / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process compiling
        waiting = threading.Thread(target=_activate_and_infer, args=(str(cache),))
        waiting.start()
        waiting.join(2.0)
        assert waiting.is_alive() and not list(cache.glob("*.blob")), "compiled while the cache was locked"
        fcntl.flock(held, fcntl.LOCK_UN)
    waiting.join(120)
    assert not waiting.is_alive() and list(cache.glob("*.blob"))

    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        outputs = list(pool.map(_activate_and_infer, [str(tmp_path / "shared")] * 4))
    assert all(np.array_equal(outputs[0], o) for o in outputs[1:])
    np.testing.assert_array_equal(outputs[0], _activate_and_infer(str(cache)))


def test_auto_times_both_backends_once_and_remembers(tmp_path, monkeypatch):
    monkeypatch.setenv("SSRAN_CACHE", str(tmp_path))
    onnx_path = MODELS["cave"].with_suffix(".onnx")
    choice = measured_cpu_backend(onnx_path, threads=1)
    store = tmp_path / "backend-timings.json"
    record = next(iter(json.loads(store.read_text()).values()))
    n = record["tiles"]
    assert n >= 2 and all(record[f"{b}_ms_{k}"] > 0 for b in ("ort", "openvino") for k in (1, n))
    faster = min(record[f"ort_ms_{k}"] / record[f"openvino_ms_{k}"] for k in (1, n))  # on both frame kinds
    assert choice["backend"] == ("openvino" if faster >= 1.05 else "ort")
    stamp = store.stat().st_mtime_ns
    assert measured_cpu_backend(onnx_path, threads=1) == choice and store.stat().st_mtime_ns == stamp
    selection = select_runner(onnx_path, "auto", threads=1)
    assert selection.backend == ("openvino-cpu" if choice["backend"] == "openvino" else "ort-cpu"), selection.reason


def test_run_with_the_openvino_backend_end_to_end(tmp_path):
    env = {**os.environ, "SSRAN_CACHE": str(tmp_path / "cache")}
    outputs = {}
    for backend in ("openvino", "ort"):
        out = tmp_path / f"{backend}.npy"
        result = subprocess.run([sys.executable, "-m", "ssran_edge.cli", "run", "camera_stream", "--backend", backend,
                                 "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
        assert f"backend: {backend}-cpu" in result.stderr
        outputs[backend] = np.load(out)
    assert psnr(outputs["ort"], outputs["openvino"]) > 80


@pytest.mark.parametrize("args,message", [
    (["--backend", "openvino", "--device", "NPU"], "openvino: device NPU is not present here (OpenVINO sees CPU"),
    (["--backend", "openvino", "--device", "cuda"],
     "--device 'cuda': OpenVINO devices are CPU, GPU, GPU.N, NPU or AUTO"),
    (["--device", "GPU"], "--device 'GPU': use cpu, cuda or cuda:N (an OpenVINO device: add --backend openvino)"),
])
def test_bad_openvino_input_is_one_line(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "ssran_edge.cli", "run", "camera_stream", *args, "--output",
                             str(tmp_path / "x.npy")], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and message in lines[-1] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "x.npy").exists()


def test_an_onnx_runtime_only_graph_and_a_missing_openvino_are_one_line(tmp_path):
    from ssran_edge.export.onnx_export import ort_optimize

    cpu_graph = ort_optimize(MODELS["cave"].with_suffix(".onnx"), tmp_path / "model_cpu.onnx")
    with pytest.raises(RunnerError, match=r"model_cpu.onnx: OpenVINO cannot compile it for CPU \(operators it "
                                          r"cannot convert: com\.microsoft\..*give the portable one beside it\)"):
        OpenVinoRunner(cpu_graph, cache=tmp_path).activate()
    # a machine without the extra: openvino made unimportable in a fresh interpreter
    code = ("import sys; sys.modules['openvino'] = None; from ssran_edge.cli import main; "
            "sys.exit(main(['run', 'camera_stream', '--backend', 'openvino', '--output', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.npy")], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "--backend openvino: needs the [openvino] extra: pip install 'ssran-edge[openvino]'")


def test_auto_still_decides_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SSRAN_CACHE", str(blocked / "cache"))  # below a regular file: every write fails
    choice = measured_cpu_backend(MODELS["cave"].with_suffix(".onnx"), threads=1)
    assert choice["backend"] in ("ort", "openvino") and blocked.read_text() == "not a folder"
