"""TensorRT engines on this machine: can they run here (probe), is this engine ours and built for
this TensorRT and GPU (sidecar), and deserialisation. Building one is export's job
(ssran_edge.export.tensorrt_engine); this module is what a runtime-only install needs.

tensorrt and pycuda are imported lazily, inside functions: this module imports (and its pure parts
run) on machines without a GPU. Written against the TensorRT 10 Python API.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssran_edge.errors import EngineError, one_line
from ssran_edge.records import ENGINE_FORMAT as FORMAT
from ssran_edge.records import REBUILD, EngineSidecar, read_json_object

if TYPE_CHECKING:
    import tensorrt as trt


log = logging.getLogger("ssran_edge.runtime")


# ---------------------------------------------------------------- platform probe


_LOGGER = None  # one TensorRT logger per process: TensorRT warns when builders/runtimes get different ones


def _trt_logger(trt_mod: Any) -> Any:
    """A TensorRT logger that forwards to `logging` and keeps the latest errors, so a failed build or
    deserialize can say why in its one-line EngineError instead of pointing at a log."""
    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt_mod.ILogger):
            def __init__(self) -> None:
                trt_mod.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                if severity in (trt_mod.ILogger.INTERNAL_ERROR, trt_mod.ILogger.ERROR):
                    self.errors = [*self.errors[-9:], one_line(msg)]
                    log.error("TensorRT: %s", msg)
                elif severity == trt_mod.ILogger.WARNING:
                    log.warning("TensorRT: %s", msg)
                elif log.isEnabledFor(logging.DEBUG):  # builds log thousands of verbose lines: skip them cheaply
                    log.debug("TensorRT: %s", msg)

        _LOGGER = _Logger()
    return _LOGGER


def _gpu() -> tuple[str, tuple[int, int]]:
    """(name, (major, minor)) of CUDA device 0, via pycuda, else cuda-python, else torch; EngineError if none."""
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError):  # not installed, or libcuda missing
        pass
    else:
        try:
            cuda.init()
            if cuda.Device.count() < 1:
                raise EngineError("no CUDA GPU visible")
            dev = cuda.Device(0)
            major, minor = dev.compute_capability()
            return str(dev.name()), (int(major), int(minor))
        except EngineError:
            raise
        except Exception as exc:  # pycuda raises its own driver errors when there is no driver or device
            raise EngineError(f"no CUDA GPU visible ({one_line(exc)})") from None

    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python layout
    except ImportError:
        cudart = None
    if cudart is not None:
        ok = cudart.cudaError_t.cudaSuccess
        try:
            err, count = cudart.cudaGetDeviceCount()
            if err == ok and count > 0:
                err, prop = cudart.cudaGetDeviceProperties(0)
        except Exception as exc:  # e.g. libcudart cannot be loaded
            raise EngineError(f"no CUDA GPU visible ({one_line(exc)})") from None
        if err != ok or count < 1:
            raise EngineError("no CUDA GPU visible" + ("" if err == ok else f" ({err})"))
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return name.rstrip("\x00").strip(), (int(prop.major), int(prop.minor))

    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]
    if torch is not None:
        raise EngineError("no CUDA GPU visible")
    raise EngineError("cannot query the GPU: install pycuda (pip install 'ssran-edge[trt]')")


def _probe() -> dict[str, Any]:
    """Facts that decide whether an engine runs here; EngineError(short reason) when TensorRT cannot run."""
    try:
        import tensorrt as trt_mod
    except Exception as exc:  # ImportError, or OSError when libnvinfer is missing/broken
        raise EngineError(one_line(exc)) from None
    name, (major, minor) = _gpu()
    try:  # a runtime that cannot start here (driver too old, GPU unsupported) means no engine can run
        dla_cores = int(trt_mod.Runtime(_trt_logger(trt_mod)).num_DLA_cores)
    except Exception as exc:
        raise EngineError(f"TensorRT {trt_mod.__version__} cannot start on {name} ({one_line(exc)})") from None
    return {"tensorrt": str(trt_mod.__version__), "gpu": name, "compute_capability": f"{major}.{minor}",
            "dla_cores": dla_cores}


def tensorrt_status() -> tuple[bool, str]:
    """(True, "TensorRT 10.x on <gpu> (sm_XY)") or (False, short reason). Never raises."""
    try:
        info = _probe()
    except EngineError as exc:
        return False, str(exc)
    except Exception as exc:  # anything unexpected from a driver binding is still just "not available"
        return False, one_line(exc)
    return True, f"TensorRT {info['tensorrt']} on {info['gpu']} ({_sm(info['compute_capability'])})"


def platform_info() -> dict[str, Any]:
    """This machine: {"tensorrt", "gpu", "compute_capability" (e.g. "8.7"), "dla_cores"}.

    EngineError("TensorRT not available: <reason>") when there is no TensorRT or no GPU.
    """
    try:
        return _probe()
    except EngineError as exc:
        raise EngineError(f"TensorRT not available: {exc}") from None


def _sm(compute_capability: Any) -> str:
    return "sm_" + str(compute_capability).replace(".", "")


# ---------------------------------------------------------------- sidecar and compatibility


def sidecar_path(engine_path: str | Path) -> Path:
    """`ssran.plan` -> `ssran.plan.json` (appended, so it never collides with the model's own `.json` card)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    engine_path = Path(engine_path)
    path = sidecar_path(engine_path)
    obj = read_json_object(path, EngineError, fmt=FORMAT,
                           missing=f"no sidecar {path.name} beside the engine {engine_path}; {REBUILD}",
                           corrupt=f"corrupt sidecar {path} ({{why}}); {REBUILD}",
                           foreign=f"corrupt sidecar {path}: not an {FORMAT} sidecar; {REBUILD}")
    return EngineSidecar.from_dict(obj, str(path))


def check_compatible(sidecar: EngineSidecar | Mapping[str, Any], platform: Mapping[str, Any], *,
                     name: str | None = None) -> None:
    """Raise EngineError (one line) unless an engine with this sidecar can run on `platform`.

    Pure: no TensorRT import. TensorRT refuses plans from another version, and a plan's kernels are
    tuned (and may only be valid) for the GPU model it was built on, so both must match exactly.
    """
    sidecar = EngineSidecar.from_dict(sidecar, name or "sidecar")
    name = name or sidecar.engine or "this engine"
    built, here = str(sidecar.tensorrt), str(platform.get("tensorrt"))
    if built != here:
        raise EngineError(f"{name} was built with TensorRT {built} but this machine has {here}; {REBUILD}")
    b_gpu, b_cc = sidecar.gpu, str(sidecar.compute_capability)
    h_gpu, h_cc = platform.get("gpu"), str(platform.get("compute_capability"))
    if b_cc != h_cc or b_gpu != h_gpu:
        raise EngineError(f"{name} was built for {b_gpu} ({_sm(b_cc)}), this GPU is {h_gpu} ({_sm(h_cc)}); "
                          "engines are not portable between GPUs: rebuild it on this machine")
    if sidecar.dla_core is not None:
        cores = int(platform.get("dla_cores") or 0)
        if sidecar.dla_core >= cores:
            have = "no DLA" if cores == 0 else f"only {cores} DLA core{'s' if cores > 1 else ''}"
            raise EngineError(f"{name} was built for DLA core {sidecar.dla_core} but this machine has {have}; "
                              "rebuild it without dla_core or on a device with that DLA core")


# ---------------------------------------------------------------- load


def load_engine(engine_path: str | Path) -> tuple[trt.ICudaEngine, EngineSidecar]:
    """(deserialized ICudaEngine, sidecar), after checking the engine was built for this TensorRT and GPU."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineError(f"{engine_path}: no such engine; build it with python -m export")
    data = engine_path.read_bytes()
    if not data:
        raise EngineError(f"{engine_path}: empty engine file; {REBUILD}")
    sidecar = read_sidecar(engine_path)
    check_compatible(sidecar, platform_info(), name=engine_path.name)
    corrupt = f"{engine_path}: corrupt or truncated engine"
    if sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
        # Checked before TensorRT sees the bytes: a damaged plan can crash deserialization, not just fail it.
        raise EngineError(f"{corrupt} (it does not match the checksum in {sidecar_path(engine_path).name}); {REBUILD}")

    import tensorrt as trt

    logger = _trt_logger(trt)
    logger.errors = []
    runtime = trt.Runtime(logger)
    if sidecar.dla_core is not None:
        runtime.DLA_core = sidecar.dla_core  # a DLA plan must be deserialized onto its core
    engine = runtime.deserialize_cuda_engine(data)  # the engine keeps the runtime alive
    if engine is None:
        why = f" ({logger.errors[-1]})" if logger.errors else ""
        raise EngineError(f"{corrupt}{why}; {REBUILD}")
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if names != set(sidecar.inputs) | set(sidecar.outputs):
        raise EngineError(f"{engine_path}: tensors {sorted(names)} do not match its sidecar; {REBUILD}")
    return engine, sidecar
