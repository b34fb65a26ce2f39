"""TensorRT engines from the exported ONNX: build (fp32 / fp16 / int8 QDQ), a JSON sidecar, and a guarded load.

A serialized engine only runs on the TensorRT version and the GPU model it was built with, and loading a
foreign one fails deep inside TensorRT with a cryptic log (or worse). So every engine gets a sidecar
`<engine>.json` (e.g. `ssran.plan.json`) recording where it was built; `load_engine` compares it with this
machine first and refuses with one line that says what to do.

tensorrt and pycuda are imported lazily, inside functions: this module imports (and its pure parts run) on
machines without a GPU. Written against the TensorRT 10 Python API.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ssran_edge.atomic import atomic_path, sha256_file
from ssran_edge.errors import EngineError, one_line
from ssran_edge.records import EngineSidecar
from ssran_edge.runtime.engines import _trt_logger, platform_info, sidecar_path

INPUT = "msi"
PRECISIONS = ("fp32", "fp16", "int8")
Shape3 = tuple[int, int, int]  # (batch, height, width) of the "msi" input; channels come from the model
NCHW = tuple[int, int, int, int]

log = logging.getLogger("ssran_edge.export")


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
            raise EngineError(f"not an optimization profile: {one_line(obj)[:200]}")
        return cls(obj["min"], obj["opt"], obj["max"], obj.get("in_bands"))


CORE_KEYS = {"format", "engine", "tensorrt", "gpu", "compute_capability", "dla_core", "precision", "profiles",
              "inputs", "outputs", "onnx", "onnx_sha256", "engine_sha256", "engine_bytes", "workspace_gib",
              "build_time", "build_seconds"}  # written by build_engine; extra_metadata may not override them
# ---------------------------------------------------------------- build




def _read_onnx(onnx_path: Path) -> Any:
    """The ONNX proto (no external data loaded); refused if unreadable or if its tensors keep their data
    outside its folder, which the TensorRT parser would otherwise read."""
    import onnx

    from ssran_edge.errors import ArtefactError
    from ssran_edge.runtime.loaders import check_external_data

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError on a truncated or foreign file
        raise EngineError(f"{onnx_path}: not a readable ONNX model ({one_line(exc)[:200]})") from None
    try:
        check_external_data(model, onnx_path)
    except ArtefactError as exc:
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
        log.warning("timing cache %s unreadable (%s); starting a new one", path, one_line(exc))
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
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {one_line(first)}")

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

    EngineSidecar(
        engine=engine_path.name,
        tensorrt=platform["tensorrt"],
        gpu=platform["gpu"],
        compute_capability=platform["compute_capability"],
        dla_core=dla_core,
        precision=precision,
        profiles=[{**p.to_json(), "in_bands": in_bands} for p in profiles],
        inputs=[INPUT],
        outputs=outputs,
        onnx=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        engine_sha256=sha256_file(engine_path),
        engine_bytes=engine_path.stat().st_size,
        workspace_gib=workspace_gib,
        build_time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(seconds, 2),
        extra=dict(extra_metadata or {}),
    ).write(sidecar_path(engine_path))
    return engine_path
