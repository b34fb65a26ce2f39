"""Runners: one small life cycle for every backend (after Polygraphy's runner).

    with OrtRunner("model.onnx") as runner:      # activate(): sessions, buffers allocated once
        hsi = runner.infer(msi_batch)            # (N, in_bands, h, w) float32 -> (N, out_bands, h, w) float32
    runner.calls, runner.inference_seconds       # infer() calls and their seconds, around the backend only

The tiler, the stream pipeline, the drift gate and the benchmarks only see this contract.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ssran_edge.card import ModelCard
from ssran_edge.errors import DataError, RunnerError
from ssran_edge.io import cache_dir
from ssran_edge.runtime.engines import load_engine, read_sidecar
from ssran_edge.runtime.loaders import ort_session, read_card

log = logging.getLogger("ssran_edge.runtime")

FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}



class Runner:
    """The contract every backend keeps. The checks live here, once: infer() before activate() is a
    RunnerError; an input that is not (N, in_bands, H, W) is a DataError; so is an output that is not
    (N, out_bands, H, W) for it (a graph whose symbolic shapes promised more than it does); the output
    comes back float32. `device` is a string everywhere ("cpu", "cuda:0", OpenVINO's "CPU", "GPU.1"...)."""

    name = "runner"
    in_bands: int = 0
    out_bands: int = 0
    card: ModelCard | None = None  # None: an ONNX from another tool (bands from its static shapes)
    requests: int = 1  # tiles a call should carry to keep the backend busy (OpenVINO THROUGHPUT: its requests)
    device: str = "cpu"
    path: Path | None = None  # the artefact (or weights) it runs

    def __init__(self) -> None:
        self.active = False
        self.calls, self.inference_seconds = 0, 0.0  # running totals: bounded on an endless stream

    @property
    def tile(self) -> int:
        """The tile size the model was chosen at (its card); 256 for an ONNX from another tool."""
        return self.card.inference.tile if self.card else 256

    @property
    def label(self) -> str:
        """The backend as a run reports it: "ort-cpu", "openvino-gpu", "torch-cuda", "trt"."""
        return self.name

    @property
    def source(self) -> str:
        """How messages name what runs: the artefact's file name, else the runner's name."""
        return self.path.name if self.path is not None else self.name

    def settle_bands(self, graph_in: int, graph_out: int) -> None:
        """The graph's static band counts (0 where dynamic) against the card's: an ONNX without our
        metadata takes the graph's; a graph that disagrees with its card is refused in one line."""
        if not self.in_bands or not self.out_bands:  # an ONNX without our metadata: trust its static shapes
            if not (graph_in and graph_out):
                raise RunnerError(f"{self.source}: band counts unknown (no ssran_edge metadata, dynamic channels); "
                                  "export it with python -m export")
            self.in_bands, self.out_bands = graph_in, graph_out
        for what, static, expected in (("input", graph_in, self.in_bands), ("output", graph_out, self.out_bands)):
            if static and static != expected:
                raise RunnerError(f"{self.source}: the graph's {what} has {static} bands, its card says {expected}")

    def activate(self) -> Runner:
        if not self.active:
            self.activate_impl()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.active:
            raise RunnerError(f"{self.name}: activate() the runner before infer()")
        if batch.ndim != 4 or batch.shape[1] != self.in_bands:
            raise DataError(f"{self.name}: expected (N, {self.in_bands}, H, W) input, got {tuple(batch.shape)}")
        started = time.perf_counter()
        out = self.infer_impl(np.ascontiguousarray(batch, dtype=np.float32))
        self.inference_seconds += time.perf_counter() - started
        n, _, h, w = batch.shape
        if out.shape != (n, self.out_bands, h, w):
            raise DataError(f"{self.source}: output {tuple(out.shape)} for input {tuple(batch.shape)}; the runtime "
                            f"needs ({n}, {self.out_bands}, {h}, {w})")
        self.calls += 1
        return out.astype(np.float32, copy=False)

    def activate_impl(self) -> None: ...

    def deactivate_impl(self) -> None: ...

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        """(N, in_bands, h, w) float32 -> (N, out_bands, h, w), any float dtype (infer() checks and converts)."""
        raise NotImplementedError


def cuda_device(device: str | int) -> tuple[str, int]:
    """("cuda:N", N) from N, "cuda" or "cuda:N"; RunnerError otherwise."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return f"cuda:{device}", device
    kind, _, index = str(device).partition(":")
    if kind == "cuda" and (not index or index.isdigit()):
        return f"cuda:{int(index or 0)}", int(index or 0)
    raise RunnerError(f"device {device!r}: a CUDA device is cuda, cuda:N or N")


class TorchRunner(Runner):
    """The PyTorch reference (CPU or CUDA; fp16 on CUDA with half=True)."""

    name = "torch"

    def __init__(self, weights: str | Path, device: str = "cpu", half: bool = False):
        super().__init__()
        try:
            from ssran_edge.checkpoint import load_model
        except ImportError:
            raise RunnerError("the torch backend needs PyTorch: pip install 'ssran-edge[train]' "
                              "(on a Jetson, NVIDIA's own torch wheel)") from None

        self.path = Path(weights)
        self.model, self.card = load_model(weights)
        self.in_bands, self.out_bands = self.card.in_bands, self.card.out_bands
        self.device, self.half = str(device), half

    @property
    def label(self) -> str:
        return f"torch-{self.device}"

    def activate_impl(self) -> None:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RunnerError(f"torch: device {self.device} requested but CUDA is not available")
        self.model = self.model.to(self.device)
        if self.half:
            self.model = self.model.half()

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            y = self.model(x.half() if self.half else x)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            return y.float().cpu().numpy()


class OrtRunner(Runner):
    """ONNX Runtime with the TensorRT, CUDA or CPU execution provider (fp32/fp16/int8 artefacts)."""

    name = "ort"
    PROVIDERS = {"trt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}

    def __init__(self, onnx_path: str | Path, provider: str = "cpu", threads: int = 0, spinning: bool = False):
        super().__init__()
        self.path = Path(onnx_path)
        self.card = read_card(self.path) if self.path.is_file() else None
        if self.card is not None:
            self.in_bands, self.out_bands = self.card.in_bands, self.card.out_bands
        if provider not in self.PROVIDERS:
            raise RunnerError(f"ort: unknown provider {provider!r}; choose one of {', '.join(self.PROVIDERS)}")
        self.provider, self.threads, self.spinning = provider, threads, spinning
        self.name = f"ort-{provider}"
        self.device = "cpu" if provider == "cpu" else "cuda:0"  # the CUDA and TensorRT providers' default GPU

    def activate_impl(self) -> None:
        import onnxruntime as ort

        wanted, available = self.PROVIDERS[self.provider], ort.get_available_providers()
        if wanted not in available:
            raise RunnerError(f"ort: {wanted} is not in this onnxruntime build ({', '.join(available)})")
        providers = [wanted] + (["CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [])
        self.session = ort_session(self.path, providers, self.threads, self.spinning)
        try:
            meta, out_meta = self._check_graph(self.session.get_inputs(), self.session.get_outputs())
        except UnicodeDecodeError:  # ONNX Runtime decodes names and dimension names only when asked
            raise RunnerError(f"{self.path.name}: a tensor or dimension name is not UTF-8 text (a damaged "
                              "graph)") from None
        self.input_name = meta.name
        self.settle_bands(*(int(t.shape[1]) if isinstance(t.shape[1], int) else 0 for t in (meta, out_meta)))
        self.input_dtype = FLOAT_TYPES[meta.type]

    def _check_graph(self, inputs, outputs):
        """What the tiler needs, checked before the first frame: one float (N, bands, H, W) input with
        free H and W (tiles come in several sizes: border tiles are smaller), one float output of the
        same form. Graphs from other tools get one line naming what differs."""
        name = self.path.name
        if len(inputs) != 1:
            raise RunnerError(f"{name}: {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the runtime "
                              "feeds one (N, bands, H, W) image")
        if len(outputs) != 1:
            raise RunnerError(f"{name}: {len(outputs)} outputs ({', '.join(o.name for o in outputs)}); the "
                              "runtime reads one (N, bands, H, W) image")
        for what, tensor in (("input", inputs[0]), ("output", outputs[0])):
            shape = "(" + ", ".join(str(d) if isinstance(d, int) else "?" for d in tensor.shape) + ")"
            if tensor.type not in FLOAT_TYPES:
                raise RunnerError(f"{name}: {what} {tensor.name!r} is {tensor.type}; the runtime needs float32 or "
                                  "float16 images")
            if len(tensor.shape) != 4:
                raise RunnerError(f"{name}: {what} {tensor.name!r} has shape {shape}; the runtime needs "
                                  "(N, bands, H, W)")
            if what == "input" and any(isinstance(d, int) for d in tensor.shape[2:]):
                raise RunnerError(f"{name}: input {tensor.name!r} has a fixed height/width {shape}; the runtime "
                                  "feeds tiles of several sizes: export it with dynamic height and width")
            if what == "output" and any(isinstance(d, int) for d in tensor.shape[2:]):
                raise RunnerError(f"{name}: output {tensor.name!r} is {shape}, not an image of the input's height "
                                  "and width")
        return inputs[0], outputs[0]

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(self.input_dtype, copy=False)})[0]


class TrtRunner(Runner):
    """A TensorRT engine through tensorrt + pycuda, no C++: the sidecar is checked on load; page-locked
    host buffers and device buffers are allocated once for the profile's largest shape and reused;
    copies and execution are asynchronous on one CUDA stream."""

    name = "trt"

    def __init__(self, engine_path: str | Path, device: str | int = "cuda:0"):
        super().__init__()
        self.path = Path(engine_path)
        self.device, self.device_index = cuda_device(device)
        # build_engine merges the artefact's card metadata into the sidecar
        self.card = ModelCard.from_metadata(read_sidecar(self.path).metadata(), str(self.path))
        if self.card is not None:
            self.in_bands, self.out_bands = self.card.in_bands, self.card.out_bands

    def activate_impl(self) -> None:
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise RunnerError(f"TensorRT not available: {exc}") from None
        cuda.init()
        self.cuda = cuda
        self.context_cuda = cuda.Device(self.device_index).make_context()
        try:
            self.engine, self.sidecar = load_engine(self.path)
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self.input_name = self.sidecar.inputs[0]
            self.output_name = self.sidecar.outputs[0]
            _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.max_shape = tuple(max_shape)
            self.in_bands = int(self.max_shape[1])
            import tensorrt as trt

            self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
                           for n in (self.input_name, self.output_name)}
            n, _, h, w = self.max_shape
            self.host_in = cuda.pagelocked_empty(int(np.prod(self.max_shape)), self.dtypes[self.input_name])
            self.host_out = cuda.pagelocked_empty(n * self.out_bands * h * w, self.dtypes[self.output_name])
            self.dev_in = cuda.mem_alloc(self.host_in.nbytes)
            self.dev_out = cuda.mem_alloc(self.host_out.nbytes)
            self.context.set_tensor_address(self.input_name, int(self.dev_in))
            self.context.set_tensor_address(self.output_name, int(self.dev_out))
        except BaseException:
            self.context_cuda.pop()
            raise

    def deactivate_impl(self) -> None:
        for buf in ("dev_in", "dev_out"):
            if hasattr(self, buf):
                getattr(self, buf).free()
        self.context = self.engine = None
        self.context_cuda.pop()

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        n, c, h, w = batch.shape
        if n > self.max_shape[0] or h > self.max_shape[2] or w > self.max_shape[3]:
            raise DataError(f"trt: batch {batch.shape} exceeds the engine's profile maximum {self.max_shape}; "
                            "re-export with a larger --imgsz/--batch")
        if not self.context.set_input_shape(self.input_name, batch.shape):
            raise DataError(f"trt: shape {batch.shape} is outside the engine's optimisation profile")
        size_in, size_out = batch.size, n * self.out_bands * h * w
        self.host_in[:size_in] = batch.astype(self.dtypes[self.input_name], copy=False).ravel()
        self.cuda.memcpy_htod_async(self.dev_in, self.host_in[:size_in], self.stream)
        if not self.context.execute_async_v3(stream_handle=self.stream.handle):
            raise RunnerError("trt: execute_async_v3 failed (see the TensorRT log)")
        self.cuda.memcpy_dtoh_async(self.host_out[:size_out], self.dev_out, self.stream)
        self.stream.synchronize()
        return self.host_out[:size_out].reshape(n, self.out_bands, h, w).astype(np.float32)  # a copy: reused buffers


class OpenVinoRunner(Runner):
    """OpenVINO on Intel CPUs, integrated GPUs and NPUs, from the same ONNX artefacts (fp32, fp16, int8
    QDQ: OpenVINO runs the QDQ pairs as int8 kernels). Each call is served by the hint that fits it:
    one tile by a LATENCY-compiled request (every core on the tile), several tiles by a THROUGHPUT-
    compiled model's requests in flight, one tile each; `requests` tells the
    pipeline how many tiles a call should carry. hint="LATENCY" or "THROUGHPUT" keeps to one of them.
    Compiled models are cached (CACHE_DIR), so the second start skips compilation."""

    name = "openvino"
    HINTS = ("AUTO", "LATENCY", "THROUGHPUT")
    VIRTUAL = ("AUTO", "MULTI", "HETERO")  # device lists over the real ones: AUTO:GPU,CPU

    def __init__(self, onnx_path: str | Path, device: str = "CPU", hint: str = "AUTO", threads: int = 0,
                 cache: str | Path | None = None):
        super().__init__()
        self.path = Path(onnx_path)
        self.card = read_card(self.path) if self.path.is_file() else None
        if self.card is not None:
            self.in_bands, self.out_bands = self.card.in_bands, self.card.out_bands
        if hint.upper() not in self.HINTS:
            raise RunnerError(f"openvino: unknown performance hint {hint!r}; choose AUTO, LATENCY or THROUGHPUT")
        self.device, self.hint, self.threads = device.upper(), hint.upper(), threads
        self.cache = Path(cache) if cache else cache_dir("openvino")
        self.name = f"openvino-{self.device.lower()}"

    def activate_impl(self) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise RunnerError("the openvino backend needs OpenVINO: pip install 'ssran-edge[openvino]'") from None
        core = ov.Core()
        self._check_device(core.available_devices)
        started = time.perf_counter()
        self.request = self.queue = None
        if self.hint in ("AUTO", "LATENCY"):
            self.request = self._compile(core, "LATENCY").create_infer_request()
        if self.hint in ("AUTO", "THROUGHPUT"):
            compiled = self._compile(core, "THROUGHPUT")
            self.requests = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            # Plain requests, started and then waited in turn: no Python callbacks on OpenVINO's threads. A test
            # run with an AsyncInferQueue (callbacks) hung here for 10 minutes once (not reproduced in 5 reruns).
            self.queue = [compiled.create_infer_request() for _ in range(self.requests)]
        self.compile_seconds = time.perf_counter() - started
        self._check_graph(ov)

    def _compile(self, core, hint: str):
        # f32 arithmetic where the artefact is not int8: OpenVINO's CPU default is bf16 wherever the CPU
        # has it (AVX512-BF16, AMX), which the drift gate never saw. Measured here (EPYC, avx512_bf16): the
        # then-bundled `cave` model (a root-polynomial skip) at 17.7 dB instead of 35.8 (the skip's large
        # cancelling coefficients), `cave_ssran` off by up to 0.013.
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        cache_failure = None
        try:
            with _cache_lock(self.cache):
                # from the path, not a read model: a cache hit then skips reading the ONNX as well
                cached = {**config, "CACHE_DIR": str(self.cache)}
                self.compiled = core.compile_model(str(self.path), self.device, cached)
            return self.compiled
        except OSError:  # a read-only home: compile every start rather than fail
            pass
        except RuntimeError as exc:  # the cache is an optimisation: a model that compiles without it is served
            cache_failure = exc
        try:
            compiled = core.compile_model(str(self.path), self.device, config)
        except RuntimeError as exc:
            raise RunnerError(f"{self.path.name}: OpenVINO cannot compile it for {self.device} "
                              f"({_openvino_failure(exc)})") from None
        if cache_failure is not None:
            log.warning("%s: OpenVINO's model cache failed (%s); compiled without it", self.path.name,
                        _openvino_failure(cache_failure))
        self.compiled = compiled
        return compiled

    def _check_device(self, available: list[str]) -> None:
        kind, _, listed = self.device.partition(":")
        wanted = [d for d in listed.split(",") if d] if kind in self.VIRTUAL else [self.device]
        for device in wanted:
            if not any(a == device or a.split(".")[0] == device for a in available):
                raise RunnerError(f"openvino: device {device} is not present here (OpenVINO sees "
                                  f"{', '.join(available) or 'none'})")

    def _check_graph(self, ov) -> None:
        """The same contract as OrtRunner's: one float (N, bands, H, W) input with free H and W, one output."""
        name, inputs, outputs = self.path.name, self.compiled.inputs, self.compiled.outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise RunnerError(f"{name}: {len(inputs)} inputs and {len(outputs)} outputs; the runtime feeds one "
                              "(N, bands, H, W) image and reads one")
        shapes = {}
        for what, port in (("input", inputs[0]), ("output", outputs[0])):
            shape = port.get_partial_shape()
            if port.get_element_type() not in (ov.Type.f32, ov.Type.f16):
                raise RunnerError(f"{name}: {what} is {port.get_element_type()}; the runtime needs float images")
            if shape.rank.is_dynamic or shape.rank.get_length() != 4:
                raise RunnerError(f"{name}: {what} has shape {shape}; the runtime needs (N, bands, H, W)")
            if what == "input" and (shape[2].is_static or shape[3].is_static):
                raise RunnerError(f"{name}: input has a fixed height/width {shape}; the runtime feeds tiles of "
                                  "several sizes: export it with dynamic height and width")
            shapes[what] = shape[1].get_length() if shape[1].is_static else 0
        self.settle_bands(shapes["input"], shapes["output"])
        self.input_dtype = np.float16 if inputs[0].get_element_type() == ov.Type.f16 else np.float32

    def deactivate_impl(self) -> None:
        self.queue = self.request = self.compiled = None

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        n, _, h, w = batch.shape
        x = batch.astype(self.input_dtype, copy=False)
        if self.queue is None or (n == 1 and self.request is not None):
            out = np.asarray(self.request.infer({0: x})[0])
        else:  # one tile per request, `requests` of them in flight
            out = np.empty((n, self.out_bands, h, w), np.float32)
            for first in range(0, n, len(self.queue)):
                rows = list(zip(self.queue, range(first, min(n, first + len(self.queue))), strict=False))
                for request, row in rows:
                    request.start_async({0: x[row: row + 1]})
                for request, row in rows:
                    request.wait()
                    out[row] = request.get_output_tensor(0).data[0]
        return out


@contextmanager
def _cache_lock(cache: Path):
    """One process at a time compiles into OpenVINO's cache directory. OpenVINO writes a blob and then
    sets its permissions; two processes compiling the same uncached model at once (a batch's Dask workers)
    race on that file: "filesystem error: cannot set permissions: No such file or directory" (once in 48
    concurrent compiles here). Behind the lock the second process finds the first one's blob and loads it.
    An advisory flock: released by the kernel when a process dies holding it. Without fcntl (Windows) no
    lock: the fallback compile in _compile still serves the model."""
    cache.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(cache / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _openvino_failure(exc: BaseException) -> str:
    """OpenVINO's multi-page conversion report as one clause: the operators it could not convert."""
    text = str(exc)
    ops = []
    for line in text.splitlines():
        for lead in ("No conversion rule found for operations:", "Conversion is failed for:"):
            if lead in line:
                ops += [op.strip() for op in line.split(lead, 1)[1].split(",") if op.strip()]
    if ops:
        shown = ", ".join(ops[:4]) + (f" and {len(ops) - 4} more" if len(ops) > 4 else "")
        hint = ("; an ONNX Runtime-optimised graph (*_cpu.onnx): give the portable one beside it"
                if any(op.startswith("com.microsoft") for op in ops) else "")
        return f"operators it cannot convert: {shown}{hint}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Exception from")]
    return (lines[-1] if lines else type(exc).__name__)[:200]
