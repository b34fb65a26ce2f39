"""Pick a runner for a model file: an engine -> TensorRT, an ONNX -> ONNX Runtime or OpenVINO, weights ->
the ONNX that ships beside them (no torch needed) or PyTorch. `auto` takes the fastest backend here: on a
CPU with OpenVINO installed, whichever of ONNX Runtime and OpenVINO was measured faster on this machine
for this artefact (timed once, remembered in the cache: see `measured_cpu_backend`).

The runtime never builds an artefact: weights without an ONNX beside them need `onnx_for`, a function
the caller passes (the CLI passes export's cached exporter when the [export] extra is installed).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ssran_edge.atomic import sha256_file, write_json
from ssran_edge.card import PREFIX, ModelCard
from ssran_edge.errors import RunnerError
from ssran_edge.extras import require
from ssran_edge.io import cache_dir
from ssran_edge.runtime.engines import read_sidecar
from ssran_edge.runtime.loaders import read_metadata
from ssran_edge.runtime.runners import OpenVinoRunner, OrtRunner, Runner, TorchRunner, TrtRunner

log = logging.getLogger("ssran_edge.runtime")
DEVICE = re.compile(r"|cpu|cuda(:\d+)?")  # "" = the best available
# OpenVINO's device names: CPU, GPU, GPU.1, NPU, and lists over them: AUTO, AUTO:GPU,CPU
OPENVINO_DEVICE = re.compile(r"cpu|gpu(\.\d+)?|npu|(auto|multi|hetero)(:[a-z0-9.]+(,[a-z0-9.]+)*)?", re.IGNORECASE)
# OpenVINO is chosen by `auto` only when its timed tile is this much faster than ONNX Runtime's: a
# margin over timing noise, so the choice does not flip between equal backends.
OPENVINO_MARGIN = 1.05
WEIGHTS_HASH = PREFIX + "weights_sha256"  # in the metadata of an ONNX exported from a weights file


@dataclass
class Selection:
    runner: Runner
    backend: str
    reason: str
    card: ModelCard | None  # None: an ONNX from another tool
    tile: int
    model: Path | None = None  # the file asked for (weights, ONNX or engine)

    @property
    def wavelengths(self) -> list[float] | None:
        return self.card.wavelengths_nm if self.card else None


def exported_from(onnx_path: Path, weights: Path) -> bool:
    """Whether an ONNX records exactly these weights' hash (python -m export writes it in its metadata)."""
    return read_metadata(onnx_path).get(WEIGHTS_HASH) == sha256_file(weights)


def onnx_beside(weights: Path) -> Path | None:
    """`model.onnx` next to `model.safetensors` when it was exported from exactly these weights (the
    bundled models ship so); None otherwise."""
    onnx_path = weights.with_suffix(".onnx")
    if not onnx_path.is_file():
        return None
    if not exported_from(onnx_path, weights):
        log.warning("%s was not exported from %s (weights hash differs); not using it", onnx_path.name, weights.name)
        return None
    return onnx_path


def _cuda_torch() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------- the table: backends x artefacts -> runner


@dataclass(frozen=True)
class Backend:
    """A `--backend`: the runner it builds, the library behind it, the devices it takes."""

    name: str
    runtime: str  # the library (what a manifest's "runtimes" lists)
    module: str  # importable when the backend is installed
    runner: Callable[..., Runner]  # (path, device, threads, spinning, hint) -> an inactive runner
    best_device: Callable[[], str]  # what --device "" means to select_runner: the best this machine has
    default_device: str = "cpu"  # what --device "" means to open_runner: the same on every machine
    devices: re.Pattern = DEVICE
    device_help: str = "use cpu, cuda or cuda:N"
    extra: str | None = None  # the pip extra --backend NAME needs, checked before anything else

    def installed(self) -> bool:
        return find_spec(self.module) is not None

    def check_device(self, device: str) -> None:
        if self.extra:
            require(self.extra, f"--backend {self.name}")
        if device and not self.devices.fullmatch(device):
            hint = " (an OpenVINO device: add --backend openvino)" if OPENVINO_DEVICE.fullmatch(device) else ""
            raise RunnerError(f"--device {device!r}: {self.device_help}{hint if self.devices is DEVICE else ''}")


@dataclass(frozen=True)
class Artefact:
    """A kind of model file: how it is recognised, what it holds, who opens it."""

    kind: str
    what: str  # "a TensorRT engine": the selection's reason where nothing else decides
    matches: Callable[[Path], bool]
    opens: tuple[str, ...]  # the backends that open the file itself, preferred first
    precisions: tuple[str, ...]
    portable: bool  # runs on other machines and other runtimes' versions
    refusal: str  # for a backend that cannot take it; {name} is the file's name
    via_onnx: bool = False  # also runs as the ONNX exported from it (ort, openvino)

    @property
    def accepts(self) -> tuple[str, ...]:
        return self.opens + (ONNX_BACKENDS if self.via_onnx else ())

    @property
    def runtimes(self) -> list[str]:
        return [BACKEND[b].runtime for b in self.opens]

    def refuse_unless(self, backend: str, path: Path) -> None:
        if backend != "auto" and backend not in self.accepts:
            raise RunnerError(self.refusal.format(name=path.name))


def _suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda path: path.suffix.lower() in suffixes


def _cpu_graph(path: Path) -> bool:
    """ONNX Runtime's optimised CPU graph of an export (`model_cpu.onnx`, `model_int8_cpu.onnx`): fused
    and com.microsoft operators, NCHWc layouts: ONNX Runtime's CPU provider only."""
    return path.suffix.lower() == ".onnx" and path.stem.endswith("_cpu")


ONNX_BACKENDS = ("ort", "openvino")
TABLE = (
    Backend("trt", "tensorrt", "tensorrt", lambda p, d, t, spinning, hint: TrtRunner(p, d), lambda: "cuda:0",
            default_device="cuda:0"),
    Backend("ort", "onnxruntime", "onnxruntime",
            lambda p, d, t, spinning, hint: OrtRunner(p, "cuda" if d.startswith("cuda") else "cpu", t, spinning),
            lambda: "cuda" if _ort_has_cuda() else "cpu"),
    Backend("openvino", "openvino", "openvino",
            lambda p, d, t, spinning, hint: OpenVinoRunner(p, d, hint=hint, threads=t), lambda: "CPU",
            default_device="CPU", devices=OPENVINO_DEVICE,
            device_help="OpenVINO devices are CPU, GPU, GPU.N, NPU or AUTO", extra="openvino"),
    Backend("torch", "torch", "torch", lambda p, d, t, spinning, hint: TorchRunner(p, d),
            lambda: "cuda" if _cuda_torch() else "cpu"),
)
BACKEND = {b.name: b for b in TABLE}
ARTEFACTS = (  # the first that matches a path is its kind
    Artefact("engine", "a TensorRT engine", _suffix(".engine", ".plan"), ("trt",), ("fp32", "fp16", "int8"), False,
             "{name} is a TensorRT engine: use --backend trt (or auto)"),
    Artefact("onnx-cpu", "an ONNX model", _cpu_graph, ("ort",), ("fp32", "int8"), False,
             "{name} is ONNX Runtime's own CPU graph (*_cpu.onnx): use --backend ort (or auto); for OpenVINO or "
             "TensorRT, give the portable ONNX beside it"),
    Artefact("onnx", "an ONNX model", _suffix(".onnx"), ONNX_BACKENDS, ("fp32", "fp16", "int8"), True,
             "{name} is an ONNX model: use --backend ort, openvino (or auto); for TensorRT, build an engine with "
             "python -m export --engine"),
    Artefact("weights", "weights", lambda path: True, ("torch",), ("fp32",), True,
             "--backend trt needs an engine: build one with python -m export --fp16 --engine", via_onnx=True),
)
BACKENDS = ("auto", *BACKEND)  # the CLI's --backend choices: ("auto", "trt", "ort", "openvino", "torch")


def artefact_of(path: str | Path) -> Artefact:
    """The table's row for a model file (weights where nothing else matches)."""
    return next(a for a in ARTEFACTS if a.matches(Path(path)))


def open_runner(path: str | Path, backend: str, device: str = "", threads: int = 0, *, spinning: bool = False,
                hint: str = "AUTO") -> Runner:
    """The one place a runner is built for a model file: `backend` must open its kind (the table), `device`
    "" is the backend's default here ("cpu", OpenVINO's "CPU", "cuda:0" for TensorRT), not the best one
    (select_runner decides that). spinning: ONNX Runtime's workers; hint: OpenVINO's performance hint."""
    path = Path(path)
    if backend not in BACKEND:
        raise RunnerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND)}")
    artefact = artefact_of(path)
    if backend not in artefact.opens:
        raise RunnerError(artefact.refusal.format(name=path.name))
    row = BACKEND[backend]
    return row.runner(path, device or row.default_device, threads, spinning, hint)


def select_runner(model: str | Path | None, backend: str = "auto", device: str = "", threads: int = 0,
                  onnx_for: Callable[[Path], Path] | None = None) -> Selection:
    from ssran_edge.assets import model_path

    if backend not in BACKENDS:
        raise RunnerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    # checked even where the backend would not use it: a typo is not "auto"
    BACKEND.get(backend, BACKEND["ort"]).check_device(device)
    path = model_path(model)
    if not path.exists():
        raise RunnerError(f"model {path}: no such file")
    artefact = artefact_of(path)
    selection = SELECT[artefact.kind](path, artefact, backend, device, threads, onnx_for)
    selection.model = path
    return selection


def _engine(path: Path, artefact: Artefact, backend: str, device: str, threads: int, onnx_for) -> Selection:
    artefact.refuse_unless(backend, path)
    sidecar = read_sidecar(path)
    runner = open_runner(path, "trt", device if device.startswith("cuda") else "")
    return Selection(runner, runner.label, artefact.what, ModelCard.from_metadata(sidecar.metadata(), str(path)),
                     sidecar.export_tile)


def _weights(path: Path, artefact: Artefact, backend: str, device: str, threads: int, onnx_for) -> Selection:
    card = ModelCard.read(path)
    artefact.refuse_unless(backend, path)
    if backend == "auto" and (device.startswith("cuda") or (not device and _cuda_torch())):
        backend = "torch"
    if backend in artefact.opens:  # the weights themselves: PyTorch
        runner = open_runner(path, backend, device or BACKEND[backend].best_device())
        why = "CUDA PyTorch (no engine given)" if runner.device.startswith("cuda") else "requested"
        return Selection(runner, runner.label, why, card, card.inference.tile)
    why = "faster than PyTorch eager on a CPU" if backend == "auto" else "requested"
    onnx_path = onnx_beside(path)
    if onnx_path is None:
        if onnx_for is None:
            raise RunnerError(f"{path.name}: no ONNX exported from these weights beside them; export one "
                              "(python -m export) or run with --backend torch")
        onnx_path = onnx_for(path)
    return _onnx(onnx_path, artefact_of(onnx_path), backend, device, threads, onnx_for, why)


def _onnx(path: Path, artefact: Artefact, backend: str, device: str, threads: int, onnx_for,
          why: str = "") -> Selection:
    artefact.refuse_unless(backend, path)
    why = why or ("requested" if backend != "auto" else artefact.what)
    if backend == "auto":
        backend = "ort"
        if "openvino" in artefact.opens and not device.startswith("cuda") and not _ort_has_cuda():
            choice = measured_cpu_backend(path, threads)
            if choice is not None and choice["backend"] == "openvino":
                backend, device = "openvino", "CPU"
                why = f"{why}; OpenVINO measured >= {choice['ratio']:.2f}x faster than ONNX Runtime on this CPU"
    runner = open_runner(path, backend, device or BACKEND[backend].best_device(), threads)
    return Selection(runner, runner.label, why, runner.card, runner.tile)


SELECT = {"engine": _engine, "onnx-cpu": _onnx, "onnx": _onnx, "weights": _weights}  # by Artefact.kind


def measured_cpu_backend(path: Path, threads: int = 0) -> dict | None:
    """ONNX Runtime or OpenVINO for this artefact on this CPU. Both are timed once, as `run` would call
    them: one tile of the model's size (a small frame) and a batch of as many tiles as OpenVINO keeps
    requests in flight (a large frame), medians of 3 after a warm-up, ~2-5 s in all. OpenVINO is chosen
    only when it is OPENVINO_MARGIN faster on both. The timings are kept in
    $SSRAN_CACHE/backend-timings.json, keyed by the artefact's hash, the CPU, the thread count and both
    libraries' versions, so every later start reads one small file. None when OpenVINO is not installed
    or cannot run the artefact."""
    try:
        import openvino
    except ImportError:
        return None
    import onnxruntime

    key = "|".join([sha256_file(path)[:20], _cpu_name(), f"threads={threads}", f"ort={onnxruntime.__version__}",
                    f"openvino={openvino.__version__}"])
    store = cache_dir("backend-timings.json")
    try:
        timings = json.loads(store.read_text()) if store.is_file() else {}
    except ValueError:
        timings = {}  # a damaged cache is re-measured, not an error
    if key not in timings:
        try:
            with OpenVinoRunner(path, "CPU", threads=threads) as ov_runner, OrtRunner(path, "cpu", threads) as ort:
                tiles = max(2, ov_runner.requests)
                record = {f"{name}_ms_{n}": round(_ms_per_tile(runner, n), 2)
                          for n in (1, tiles) for name, runner in (("ort", ort), ("openvino", ov_runner))}
        except RunnerError as exc:  # e.g. an ONNX Runtime-only graph: ONNX Runtime it is
            log.debug("openvino cannot run %s here (%s): not measured", path.name, exc)
            return None
        timings[key] = {**record, "tiles": tiles}
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            write_json(store, timings)
        except OSError as exc:  # a read-only home: decide for this run, measure again next time
            log.debug("cannot keep the timings in %s (%s)", store, exc)
        log.debug("timed %s per tile (1 tile / %d a call): ONNX Runtime %.1f / %.1f ms, OpenVINO %.1f / %.1f ms "
                 "(kept in %s)", path.name, tiles, record["ort_ms_1"], record[f"ort_ms_{tiles}"],
                 record["openvino_ms_1"], record[f"openvino_ms_{tiles}"], store)
    record = timings[key]
    ratio = min(record[f"ort_ms_{n}"] / max(record[f"openvino_ms_{n}"], 1e-9) for n in (1, record["tiles"]))
    return {**record, "ratio": ratio, "backend": "openvino" if ratio >= OPENVINO_MARGIN else "ort"}


def _ms_per_tile(runner: Runner, tiles: int, repeats: int = 3) -> float:
    x = np.random.default_rng(0).random((tiles, runner.in_bands, runner.tile, runner.tile), dtype=np.float32)
    runner.infer(x)  # warm-up: first-call allocations and kernel choices
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000 / tiles


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


_OPENED: dict[tuple, Selection] = {}
_OPENED_LOCK = threading.Lock()


def opened_runner(model: str | Path | None, backend: str = "auto", device: str = "", threads: int = 0,
                  onnx_for: Callable[[Path], Path] | None = None) -> Selection:
    """select_runner, its runner opened, once per process for each (model, backend, device, threads): a
    Dask worker or a dask task thread reuses the session (seconds to create) for every scene or chunk."""
    key = (str(model or ""), backend, device, threads)
    with _OPENED_LOCK:
        if key not in _OPENED:
            selection = select_runner(model or None, backend, device, threads, onnx_for=onnx_for)
            selection.runner.__enter__()
            _OPENED[key] = selection
        return _OPENED[key]
