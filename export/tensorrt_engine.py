"""TensorRT engines from the exported ONNX: build (fp32 / fp16 / int8 QDQ), a JSON sidecar, and a guarded load.

A serialized engine only runs on the TensorRT version and the GPU model it was built with, and loading a
foreign one fails deep inside TensorRT with a cryptic log (or worse). So every engine gets a sidecar
`<engine>.json` (e.g. `ssran.plan.json`) recording where it was built; `load_engine` compares it with this
machine first and refuses with one line that says what to do.

tensorrt and pycuda are imported lazily, inside functions: this module imports (and its pure parts run) on
machines without a GPU. Written against the TensorRT 10 Python API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssran_edge.checkpoint import atomic_path, sha256_file, write_json
from ssran_edge.errors import SSRANEdgeError

if TYPE_CHECKING:
    import tensorrt as trt

FORMAT = "ssran-edge-engine"
INPUT = "msi"
PRECISIONS = ("fp32", "fp16", "int8")
REBUILD = "rebuild it with python -m export"
Shape3 = tuple[int, int, int]  # (batch, height, width) of the "msi" input; channels come from the model
NCHW = tuple[int, int, int, int]

log = logging.getLogger(__name__)


class EngineError(SSRANEdgeError):
    """An engine that cannot be built or loaded here: no TensorRT/GPU, foreign or corrupt engine, bad ONNX."""


def _one_line(obj: Any) -> str:
    return " ".join(str(obj).split())


def _reason(exc: BaseException) -> str:
    return _one_line(exc) or type(exc).__name__


# ---------------------------------------------------------------- optimization profiles


def _shape3(value: Any, what: str) -> Shape3:
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise EngineError(f"profile {what} shape {value!r} is not (batch, height, width)") from None
    if len(shape) != 3 or min(shape) < 1:
        raise EngineError(f"profile {what} shape {value!r} is not three positive ints (batch, height, width)")
    return shape[0], shape[1], shape[2]


@dataclass(frozen=True)
class Profile:
    """min/opt/max (batch, height, width) of the "msi" input for one TensorRT optimization profile.

    TensorRT tunes kernels for `opt` and accepts any shape between `min` and `max` (element-wise).
    `in_bands`, when set, is checked against the model's channel count at build time.
    """

    min: Shape3
    opt: Shape3
    max: Shape3
    in_bands: int | None = None

    def __post_init__(self) -> None:
        lo, mid, hi = (_shape3(getattr(self, k), k) for k in ("min", "opt", "max"))
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise EngineError(f"profile needs min <= opt <= max in every dimension, got {lo}, {mid}, {hi}")
        if self.in_bands is not None and int(self.in_bands) < 1:
            raise EngineError(f"profile in_bands must be positive, got {self.in_bands}")
        object.__setattr__(self, "min", lo)  # normalise lists from JSON to tuples
        object.__setattr__(self, "opt", mid)
        object.__setattr__(self, "max", hi)

    @classmethod
    def for_tiles(cls, in_bands: int, tile: int, batch: int, min_tile: int | None = None) -> Profile:
        """Square tiles of up to `tile` px (the tiler's largest window, halo included), batched up to `batch`.

        Optimised for full batches of full tiles; accepts a lone tile (the last batch) down to `min_tile` px
        (default `tile`: pass a smaller value when border windows are clipped).
        """
        small = tile if min_tile is None else min_tile
        return cls(min=(1, small, small), opt=(batch, tile, tile), max=(batch, tile, tile), in_bands=in_bands)

    def shapes(self, in_bands: int | None = None) -> tuple[NCHW, NCHW, NCHW]:
        """The three NCHW shapes (min, opt, max) for IOptimizationProfile.set_shape."""
        bands = self.in_bands if in_bands is None else in_bands
        if bands is None:
            raise EngineError("profile shapes need in_bands (the model's input channel count)")
        if self.in_bands is not None and bands != self.in_bands:
            raise EngineError(f"profile is for {self.in_bands} input bands but the model takes {bands}")
        lo, mid, hi = ((n, bands, h, w) for n, h, w in (self.min, self.opt, self.max))
        return lo, mid, hi

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}
        if self.in_bands is not None:
            out["in_bands"] = self.in_bands
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Profile:
        if not isinstance(obj, dict) or any(k not in obj for k in ("min", "opt", "max")):
            raise EngineError(f"not an optimization profile: {_one_line(obj)[:200]}")
        return cls(obj["min"], obj["opt"], obj["max"], obj.get("in_bands"))


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
                    self.errors = [*self.errors[-9:], _one_line(msg)]
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
            raise EngineError(f"no CUDA GPU visible ({_reason(exc)})") from None

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
            raise EngineError(f"no CUDA GPU visible ({_reason(exc)})") from None
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
        raise EngineError(_reason(exc)) from None
    name, (major, minor) = _gpu()
    try:  # a runtime that cannot start here (driver too old, GPU unsupported) means no engine can run
        dla_cores = int(trt_mod.Runtime(_trt_logger(trt_mod)).num_DLA_cores)
    except Exception as exc:
        raise EngineError(f"TensorRT {trt_mod.__version__} cannot start on {name} ({_reason(exc)})") from None
    return {"tensorrt": str(trt_mod.__version__), "gpu": name, "compute_capability": f"{major}.{minor}",
            "dla_cores": dla_cores}


def tensorrt_status() -> tuple[bool, str]:
    """(True, "TensorRT 10.x on <gpu> (sm_XY)") or (False, short reason). Never raises."""
    try:
        info = _probe()
    except EngineError as exc:
        return False, str(exc)
    except Exception as exc:  # anything unexpected from a driver binding is still just "not available"
        return False, _reason(exc)
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


CORE_KEYS = {"format", "engine", "tensorrt", "gpu", "compute_capability", "dla_core", "precision", "profiles",
              "inputs", "outputs", "onnx", "onnx_sha256", "engine_sha256", "engine_bytes", "workspace_gib",
              "build_time", "build_seconds"}  # written by build_engine; extra_metadata may not override them
SIDECAR_KEYS = ("tensorrt", "gpu", "compute_capability", "precision", "profiles", "inputs", "outputs")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    engine_path = Path(engine_path)
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineError(f"no sidecar {path.name} beside the engine {engine_path}; {REBUILD}")
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"corrupt sidecar {path} ({_reason(exc)}); {REBUILD}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise EngineError(f"corrupt sidecar {path}: not an {FORMAT} sidecar; {REBUILD}")
    missing = [k for k in SIDECAR_KEYS if k not in sidecar]
    if missing:
        raise EngineError(f"corrupt sidecar {path}: lacks {', '.join(missing)}; {REBUILD}")
    return sidecar


def check_compatible(sidecar: dict[str, Any], platform: dict[str, Any], *, name: str | None = None) -> None:
    """Raise EngineError (one line) unless an engine with this sidecar can run on `platform`.

    Pure: no TensorRT import. TensorRT refuses plans from another version, and a plan's kernels are
    tuned (and may only be valid) for the GPU model it was built on, so both must match exactly.
    """
    name = name or sidecar.get("engine") or "this engine"
    built, here = str(sidecar.get("tensorrt")), str(platform.get("tensorrt"))
    if built != here:
        raise EngineError(f"{name} was built with TensorRT {built} but this machine has {here}; {REBUILD}")
    b_gpu, b_cc = sidecar.get("gpu"), str(sidecar.get("compute_capability"))
    h_gpu, h_cc = platform.get("gpu"), str(platform.get("compute_capability"))
    if b_cc != h_cc or b_gpu != h_gpu:
        raise EngineError(f"{name} was built for {b_gpu} ({_sm(b_cc)}), this GPU is {h_gpu} ({_sm(h_cc)}); "
                          "engines are not portable between GPUs: rebuild it on this machine")
    dla_core = sidecar.get("dla_core")
    if dla_core is not None:
        cores = int(platform.get("dla_cores") or 0)
        if int(dla_core) >= cores:
            have = "no DLA" if cores == 0 else f"only {cores} DLA core{'s' if cores > 1 else ''}"
            raise EngineError(f"{name} was built for DLA core {dla_core} but this machine has {have}; "
                              "rebuild it without dla_core or on a device with that DLA core")


# ---------------------------------------------------------------- build




def _read_onnx(onnx_path: Path) -> Any:
    """The ONNX proto (no external data loaded); refused if unreadable or if its tensors keep their data
    outside its folder, which the TensorRT parser would otherwise read."""
    import onnx
    from ssran_edge.export.onnx_export import ExportError, check_external_data

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError on a truncated or foreign file
        raise EngineError(f"{onnx_path}: not a readable ONNX model ({_reason(exc)[:200]})") from None
    try:
        check_external_data(model, onnx_path)
    except ExportError as exc:
        raise EngineError(str(exc)) from None
    return model


def _has_qdq(onnx_path: Path) -> bool:
    model = _read_onnx(onnx_path)
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def _validate_build_args(onnx_path: Path, precision: str, profiles: list[Profile], workspace_gib: float,
                         dla_core: int | None, extra_metadata: dict[str, Any] | None) -> None:
    """Everything that can be checked without TensorRT, checked first so mistakes fail fast on any machine."""
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not profiles:
        raise EngineError("at least one optimization profile is needed (Profile.for_tiles(...))")
    if not all(isinstance(p, Profile) for p in profiles):
        raise TypeError("profiles must be Profile instances")
    if not workspace_gib > 0:
        raise EngineError(f"workspace_gib must be positive, got {workspace_gib}")
    if dla_core is not None and (dla_core < 0 or precision == "fp32"):
        raise EngineError(f"dla_core={dla_core} with {precision}: DLA runs fp16 or int8 only, on core 0 or more")
    if not onnx_path.is_file():
        raise EngineError(f"{onnx_path}: no such ONNX file")
    if precision != "int8":
        _read_onnx(onnx_path)  # readable, and no external data outside its folder (int8: checked just below)
    if precision == "int8" and not _has_qdq(onnx_path):
        # TRT 10's int8 path is explicit quantization (Q/DQ); implicit calibration is deprecated.
        raise EngineError(f"{onnx_path.name} has no QuantizeLinear/DequantizeLinear nodes; int8 engines need the "
                          "QDQ model from the quantize step (onnxruntime.quantization.quantize_static)")
    clash = sorted(set(extra_metadata or {}) & CORE_KEYS)
    if clash:
        raise ValueError(f"extra_metadata may not override sidecar keys {clash}")


def _timing_cache(config: Any, path: Path | None) -> Any:
    """Attach the timing cache (reused across builds: tactic timings are the slow part of a build).
    A cache from another GPU/TensorRT, or an unreadable one, is replaced by a fresh one rather than failing."""
    if path is None:
        return None
    blob = path.read_bytes() if path.is_file() else b""
    cache = None
    try:
        cache = config.create_timing_cache(blob)
    except Exception as exc:
        log.warning("timing cache %s unreadable (%s); starting a new one", path, _reason(exc))
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if blob:
            log.warning("timing cache %s is from another GPU or TensorRT version; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, precision: str, profiles: list[Profile],
                 workspace_gib: float = 4.0, timing_cache: str | Path | None = None, dla_core: int | None = None,
                 extra_metadata: dict[str, Any] | None = None) -> Path:
    """Build a TensorRT engine from `onnx_path`, write it atomically to `engine_path` plus `<engine>.json`.

    precision: "fp32"; "fp16" (builder may pick fp16 kernels); "int8" = explicit quantization of a QDQ ONNX
    (INT8 + FP16 flags, no calibrator: TensorRT 10 deprecates IInt8Calibrator).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = None if timing_cache is None else Path(timing_cache)
    _validate_build_args(onnx_path, precision, profiles, workspace_gib, dla_core, extra_metadata)
    platform = platform_info()
    import tensorrt as trt

    logger = _trt_logger(trt)
    logger.errors = []
    builder = trt.Builder(logger)
    # TRT 10: networks are always explicit-batch (the EXPLICIT_BATCH flag is deprecated and ignored). Not
    # STRONGLY_TYPED: that would forbid the FP16/INT8 builder flags choosing precisions per layer.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    # path lets the parser find external weights stored beside the model.
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        first = parser.get_error(0) if parser.num_errors else (logger.errors[-1:] or ["unknown error"])[0]
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {_one_line(first)}")

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if [t.name for t in inputs] != [INPUT]:
        raise EngineError(f"{onnx_path.name} has inputs {[t.name for t in inputs]}; expected one named {INPUT!r}")
    in_bands = int(inputs[0].shape[1])
    if in_bands < 1:
        raise EngineError(f"{onnx_path.name}: the {INPUT!r} channel dimension must be static, got {in_bands}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers left unquantized may still run in fp16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    for p in profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT, *p.shapes(in_bands))
        config.add_optimization_profile(profile)
    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise EngineError(f"dla_core={dla_core} but this machine has {builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU instead of failing
    cache = _timing_cache(config, cache_path)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        why = logger.errors[-1] if logger.errors else "no reason logged"
        raise EngineError(f"TensorRT could not build a {precision} engine from {onnx_path.name}: {why}")

    # Drop the old sidecar first: a crash between the two writes then leaves "no sidecar", not a stale one.
    sidecar_path(engine_path).unlink(missing_ok=True)
    with atomic_path(engine_path) as tmp, tmp.open("wb") as f:
        f.write(serialized)  # IHostMemory supports the buffer protocol: no extra copy
    if cache is not None:
        with atomic_path(cache_path) as tmp, tmp.open("wb") as f:
            f.write(config.get_timing_cache().serialize())

    sidecar = {
        **(extra_metadata or {}),
        "format": FORMAT,
        "engine": engine_path.name,
        "tensorrt": platform["tensorrt"],
        "gpu": platform["gpu"],
        "compute_capability": platform["compute_capability"],
        "dla_core": dla_core,
        "precision": precision,
        "profiles": [{**p.to_json(), "in_bands": in_bands} for p in profiles],
        "inputs": [INPUT],
        "outputs": outputs,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path),
        "engine_bytes": engine_path.stat().st_size,
        "workspace_gib": workspace_gib,
        "build_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
    }
    write_json(sidecar_path(engine_path), sidecar)
    return engine_path


# ---------------------------------------------------------------- load


def load_engine(engine_path: str | Path) -> tuple[trt.ICudaEngine, dict[str, Any]]:
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
    expected = sidecar.get("engine_sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        # Checked before TensorRT sees the bytes: a damaged plan can crash deserialization, not just fail it.
        raise EngineError(f"{corrupt} (it does not match the checksum in {sidecar_path(engine_path).name}); {REBUILD}")

    import tensorrt as trt

    logger = _trt_logger(trt)
    logger.errors = []
    runtime = trt.Runtime(logger)
    if sidecar.get("dla_core") is not None:
        runtime.DLA_core = int(sidecar["dla_core"])  # a DLA plan must be deserialized onto its core
    engine = runtime.deserialize_cuda_engine(data)  # the engine keeps the runtime alive
    if engine is None:
        why = f" ({logger.errors[-1]})" if logger.errors else ""
        raise EngineError(f"{corrupt}{why}; {REBUILD}")
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if names != set(sidecar["inputs"]) | set(sidecar["outputs"]):
        raise EngineError(f"{engine_path}: tensors {sorted(names)} do not match its sidecar; {REBUILD}")
    return engine, sidecar
