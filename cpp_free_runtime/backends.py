"""Pick a runner for a model file: an engine -> TensorRT, an ONNX -> ONNX Runtime, a checkpoint ->
PyTorch or (exported once, cached) ONNX Runtime. `auto` takes the fastest backend available here."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssran_edge.runtime.runners import OrtRunner, Runner, RunnerError, TorchRunner, TrtRunner

log = logging.getLogger("ssran_edge.runtime")
BACKENDS = ("auto", "trt", "ort", "torch")


@dataclass
class Selection:
    runner: Runner
    backend: str
    reason: str
    wavelengths: list[float] | None
    tile: int


def _cache_dir() -> Path:
    return Path(os.environ.get("SSRAN_CACHE", Path.home() / ".cache" / "ssran-edge"))


def cached_onnx(weights: Path) -> Path:
    """The fp32 ONNX of a checkpoint, exported once and kept under ~/.cache/ssran-edge by hash."""
    from ssran_edge.export.onnx_export import card_metadata, export_fp32, save_onnx, set_metadata

    from ssran_edge.checkpoint import load_model, sha256_file

    path = _cache_dir() / f"{sha256_file(weights)[:20]}.onnx"
    if not path.is_file():
        model, card = load_model(weights)
        log.info("exporting %s to ONNX once (cached at %s)", weights, path)
        save_onnx(set_metadata(export_fp32(model), card_metadata(card, "fp32")), path)
    return path


def _cuda_torch() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def select_runner(model: str | Path | None, backend: str = "auto", device: str = "", threads: int = 0) -> Selection:
    from ssran_edge.assets import DEFAULT_MODEL, MODELS

    if backend not in BACKENDS:
        raise RunnerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(MODELS.get(str(model), model) if model else DEFAULT_MODEL)
    if not path.exists():
        raise RunnerError(f"model {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan"):
        if backend not in ("auto", "trt"):
            raise RunnerError(f"{path.name} is a TensorRT engine: use --backend trt (or auto)")
        from ssran_edge.export.tensorrt_engine import read_sidecar

        sidecar = read_sidecar(path)
        return Selection(TrtRunner(path), "trt", "a TensorRT engine", sidecar.get("ssran_edge.wavelengths_nm"),
                         int(sidecar.get("ssran_edge.export_tile", 256)))
    if suffix == ".onnx":
        if backend in ("torch", "trt"):
            raise RunnerError(f"{path.name} is an ONNX model: use --backend ort (or auto); for TensorRT, "
                              "build an engine with python -m export --engine")
        from ssran_edge.export.onnx_export import read_metadata

        meta = read_metadata(path)
        provider = "cuda" if device.startswith("cuda") or (not device and _ort_has_cuda()) else "cpu"
        return Selection(OrtRunner(path, provider, threads), f"ort-{provider}", "an ONNX model",
                         meta.get("ssran_edge.wavelengths_nm"), _tile(meta.get("ssran_edge.inference")))
    from ssran_edge.checkpoint import read_card

    card: dict[str, Any] = read_card(path)
    wavelengths, tile = card.get("wavelengths_nm"), _tile(card.get("inference"))
    if backend == "trt":
        raise RunnerError("--backend trt needs an engine: build one with python -m export --fp16 --engine")
    if backend == "torch" or (backend == "auto" and (device.startswith("cuda") or (not device and _cuda_torch()))):
        torch_device = device or ("cuda" if _cuda_torch() else "cpu")
        why = "CUDA PyTorch (no engine given)" if torch_device.startswith("cuda") else "requested"
        return Selection(TorchRunner(path, torch_device), f"torch-{torch_device}", why, wavelengths, tile)
    onnx_path = cached_onnx(path)
    why = "ONNX Runtime CPU, faster than PyTorch eager on a CPU" if backend == "auto" else "requested"
    return Selection(OrtRunner(onnx_path, "cpu", threads), "ort-cpu", why, wavelengths, tile)


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _tile(inference: Any) -> int:
    return int(inference.get("tile", 256)) if isinstance(inference, dict) else 256
