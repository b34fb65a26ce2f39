"""Pick a runner for a model file: an engine -> TensorRT, an ONNX -> ONNX Runtime, weights -> the ONNX
that ships beside them (ONNX Runtime, no torch needed) or PyTorch. `auto` takes the fastest backend here.

The runtime never builds an artefact: weights without an ONNX beside them need `onnx_for`, a function
the caller passes (the CLI passes export's cached exporter when the [export] extra is installed).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssran_edge.atomic import sha256_file
from ssran_edge.card import PREFIX, ModelCard
from ssran_edge.runtime.engines import read_sidecar
from ssran_edge.runtime.loaders import read_metadata
from ssran_edge.runtime.runners import OrtRunner, Runner, RunnerError, TorchRunner, TrtRunner

log = logging.getLogger("ssran_edge.runtime")
BACKENDS = ("auto", "trt", "ort", "torch")
DEVICE = re.compile(r"|cpu|cuda(:\d+)?")  # "" = the best available
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


def onnx_beside(weights: Path) -> Path | None:
    """`model.onnx` next to `model.safetensors` when it was exported from exactly these weights (the
    bundled models ship so); None otherwise."""
    onnx_path = weights.with_suffix(".onnx")
    if not onnx_path.is_file():
        return None
    if read_metadata(onnx_path).get(WEIGHTS_HASH) != sha256_file(weights):
        log.warning("%s was not exported from %s (weights hash differs); not using it", onnx_path.name, weights.name)
        return None
    return onnx_path


def _cuda_torch() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def select_runner(model: str | Path | None, backend: str = "auto", device: str = "", threads: int = 0,
                  onnx_for: Callable[[Path], Path] | None = None) -> Selection:
    from ssran_edge.assets import model_path

    if backend not in BACKENDS:
        raise RunnerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not DEVICE.fullmatch(device):  # checked even where the backend would not use it: a typo is not "auto"
        raise RunnerError(f"--device {device!r}: use cpu, cuda or cuda:N")
    path = model_path(model)
    if not path.exists():
        raise RunnerError(f"model {path}: no such file")
    selection = _select(path, backend, device, threads, onnx_for)
    selection.model = path
    return selection


def _select(path: Path, backend: str, device: str, threads: int,
            onnx_for: Callable[[Path], Path] | None) -> Selection:
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan"):
        if backend not in ("auto", "trt"):
            raise RunnerError(f"{path.name} is a TensorRT engine: use --backend trt (or auto)")
        sidecar = read_sidecar(path)
        return Selection(TrtRunner(path), "trt", "a TensorRT engine", ModelCard.from_metadata(sidecar, str(path)),
                         int(sidecar.get(PREFIX + "export_tile", 256)))
    if suffix == ".onnx":
        if backend in ("torch", "trt"):
            raise RunnerError(f"{path.name} is an ONNX model: use --backend ort (or auto); for TensorRT, "
                              "build an engine with python -m export --engine")
        return _ort(path, device, threads, "an ONNX model")
    card = ModelCard.read(path)
    if backend == "trt":
        raise RunnerError("--backend trt needs an engine: build one with python -m export --fp16 --engine")
    if backend == "torch" or (backend == "auto" and (device.startswith("cuda") or (not device and _cuda_torch()))):
        torch_device = device or ("cuda" if _cuda_torch() else "cpu")
        why = "CUDA PyTorch (no engine given)" if torch_device.startswith("cuda") else "requested"
        return Selection(TorchRunner(path, torch_device), f"torch-{torch_device}", why, card, card.inference.tile)
    onnx_path = onnx_beside(path)
    if onnx_path is None:
        if onnx_for is None:
            raise RunnerError(f"{path.name}: no ONNX exported from these weights beside them; export one "
                              "(python -m export) or run with --backend torch")
        onnx_path = onnx_for(path)
    why = "ONNX Runtime, faster than PyTorch eager on a CPU" if backend == "auto" else "requested"
    return _ort(onnx_path, device, threads, why)


def _ort(path: Path, device: str, threads: int, why: str) -> Selection:
    provider = "cuda" if device.startswith("cuda") or (not device and _ort_has_cuda()) else "cpu"
    runner = OrtRunner(path, provider, threads)
    tile = runner.card.inference.tile if runner.card else 256
    return Selection(runner, f"ort-{provider}", why, runner.card, tile)


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
