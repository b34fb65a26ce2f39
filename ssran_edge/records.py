"""Typed records for the JSON files that cross stages, read by one reader.

- `read_json_object`: a file -> a JSON object, or one line (missing, corrupt, not ours), raised as the
  caller's error type with the caller's words; `ModelCard.read` uses it for `model.json`;
- `JsonRecord`: a dataclass stored as one JSON object: `from_dict` checks the required keys and the
  declared types (one line naming the field), keeps unknown keys in `extra`, `to_dict` writes the same
  keys back (files on disk stay as they were), `read` / `write` for files;
- `EngineSidecar`: `<engine>.json` beside a TensorRT engine (written by export's build_engine);
- `Manifest` / `ManifestArtefact`: an export folder's `manifest.json` (written by export's pipeline).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ssran_edge.atomic import write_json
from ssran_edge.errors import ArtefactError, EngineError, SSRANEdgeError, one_line

R = TypeVar("R", bound="JsonRecord")

ENGINE_FORMAT = "ssran-edge-engine"
REBUILD = "rebuild it with python -m export"
MANIFEST = "manifest.json"


def read_json_object(path: str | Path, error: type[SSRANEdgeError], *, missing: str, corrupt: str, foreign: str,
                     fmt: str | None = None) -> dict[str, Any]:
    """The JSON object in `path`; else `error` with one of the messages: `missing` (no such file),
    `corrupt` (not JSON; `{why}` is replaced by the parser's reason) or `foreign` (not an object, or its
    "format" is not `fmt`)."""
    path = Path(path)
    if not path.is_file():
        raise error(missing)
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(corrupt.replace("{why}", one_line(exc))) from None
    if not isinstance(obj, dict) or (fmt is not None and obj.get("format") != fmt):
        raise error(foreign)
    return obj


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return isinstance(value, (dict, hint))
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is list:
        return f"a list of {_type_name((typing.get_args(hint) or (Any,))[0])}"
    if origin is dict or (isinstance(hint, type) and issubclass(hint, JsonRecord)):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


@dataclass
class JsonRecord:
    """A dataclass kept as one JSON object. Fields without a default are required; `extra` holds the
    keys the class does not declare (kept, and written back). Subclasses set ERROR and may override
    `problem` (how a bad field is said) and `to_dict` (key order)."""

    ERROR: ClassVar[type[SSRANEdgeError]] = ArtefactError
    WHAT: ClassVar[str] = "record"
    FORMAT: ClassVar[str | None] = None
    KEEP_NONE: ClassVar[tuple[str, ...]] = ()  # optional fields written as null rather than left out

    @classmethod
    def problem(cls, source: str, what: str) -> SSRANEdgeError:
        return cls.ERROR(f"{source}: {what}")

    @classmethod
    def _declared(cls) -> list:
        return [f for f in fields(cls) if f.name != "extra"]

    @classmethod
    def from_dict(cls: type[R], obj: Any, source: str = "") -> R:
        source = source or cls.WHAT
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, dict):
            raise cls.problem(source, f"not {cls.WHAT} (a JSON object expected)")
        declared = cls._declared()
        missing = [f.name for f in declared if f.name not in obj and f.default is MISSING
                   and f.default_factory is MISSING]
        if missing:
            raise cls.problem(source, f"lacks {', '.join(missing)}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in declared:
            if f.name not in obj:
                continue
            value, hint = obj[f.name], hints[f.name]
            if not _type_ok(value, hint):
                raise cls.problem(source, f"{f.name} must be {_type_name(hint)}, got {value!r:.60}")
            values[f.name] = _nested(value, hint, f"{source} {f.name}")
        names = {f.name for f in declared}
        extra = {k: v for k, v in obj.items() if k not in names and k != "format"}
        return cls(**values, **({"extra": extra} if "extra" in {f.name for f in fields(cls)} else {}))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.FORMAT} if self.FORMAT else {}
        for f in self._declared():
            value = getattr(self, f.name)
            if value is not None or f.name in self.KEEP_NONE or f.default is MISSING:
                out[f.name] = _plain(value)
        return {**out, **getattr(self, "extra", {})}

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        path = Path(path)
        obj = read_json_object(path, cls.ERROR, missing=f"{path}: no such {cls.WHAT}",
                               corrupt=f"{path}: corrupt {cls.WHAT} ({{why}})", foreign=f"{path}: not {cls.WHAT}",
                               fmt=cls.FORMAT)
        return cls.from_dict(obj, str(path))

    def write(self, path: str | Path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)


def _nested(value: Any, hint: Any, source: str) -> Any:
    """Records inside a record (a list of them, or one) built from their objects."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list and args and isinstance(args[0], type) and issubclass(args[0], JsonRecord):
        return [args[0].from_dict(v, f"{source}[{i}]") for i, v in enumerate(value)]
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_dict(value, source)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------- the TensorRT engine sidecar


@dataclass
class EngineSidecar(JsonRecord):
    """`<engine>.json`: where the engine was built (TensorRT, GPU, DLA core), its profiles and tensors,
    checksums, and the model card's `ssran_edge.*` metadata (in `extra`, with any other key)."""

    ERROR: ClassVar[type[SSRANEdgeError]] = EngineError
    WHAT: ClassVar[str] = f"an {ENGINE_FORMAT} sidecar"
    FORMAT: ClassVar[str | None] = ENGINE_FORMAT
    KEEP_NONE: ClassVar[tuple[str, ...]] = ("dla_core",)

    tensorrt: Any
    gpu: Any
    compute_capability: Any  # "8.7"
    precision: str
    profiles: list[dict]
    inputs: list[str]
    outputs: list[str]
    engine: str | None = None
    dla_core: int | None = None
    onnx: str | None = None
    onnx_sha256: str | None = None
    engine_sha256: str | None = None
    engine_bytes: int | None = None
    workspace_gib: float | None = None
    build_time: str | None = None
    build_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def problem(cls, source: str, what: str) -> SSRANEdgeError:
        return EngineError(f"corrupt sidecar {source}: {what}; {REBUILD}")

    ORDER: ClassVar[tuple[str, ...]] = (
        "format", "engine", "tensorrt", "gpu", "compute_capability", "dla_core", "precision", "profiles", "inputs",
        "outputs", "onnx", "onnx_sha256", "engine_sha256", "engine_bytes", "workspace_gib", "build_time",
        "build_seconds")

    def to_dict(self) -> dict[str, Any]:
        """The keys build_engine writes, in its order: the card's metadata first."""
        core = {k: v for k, v in super().to_dict().items() if k not in self.extra}
        return {**self.extra, **{k: core[k] for k in self.ORDER if k in core}}

    @property
    def export_tile(self) -> int:
        """The tile the export chose, where the sidecar records it; 256 otherwise."""
        return int(self.extra.get("ssran_edge.export_tile", 256))

    def metadata(self) -> dict[str, Any]:
        """Everything the sidecar holds as one mapping (the card reads its `ssran_edge.*` keys)."""
        return self.to_dict()

    def replace(self, **changes: Any) -> EngineSidecar:
        return EngineSidecar.from_dict({**self.to_dict(), **changes}, "sidecar")


# ---------------------------------------------------------------- an export folder's manifest.json


@dataclass
class ManifestArtefact(JsonRecord):
    """One artefact an export landed: its file, precision, checksum and size, the runtimes its drift gate
    ran it on when more than one, and what the exporter noted (in `extra`: exporter, calibration...)."""

    WHAT: ClassVar[str] = "an export manifest artefact"

    file: str
    precision: str
    sha256: str
    bytes: int
    runtimes: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "precision": self.precision, "sha256": self.sha256, "bytes": self.bytes,
                **self.extra, **({"runtimes": self.runtimes} if self.runtimes else {})}


@dataclass
class Manifest(JsonRecord):
    """`manifest.json`: what `python -m export` made, from which weights, and how."""

    WHAT: ClassVar[str] = "an export manifest"

    ssran_edge_version: str
    source_weights: str
    source_sha256: str
    protocol: str | None
    bands: list[int]
    tile: int
    halo: int
    artefacts: list[ManifestArtefact]
    drift: list[dict]
    tensorrt: str  # "built" or "skipped: <reason>"
    options: dict[str, Any]
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def in_folder(cls, folder: str | Path) -> Manifest:
        return cls.read(Path(folder) / MANIFEST)

    @property
    def in_bands(self) -> int:
        return self.bands[0]

    @property
    def calibration(self) -> tuple[Any, Any, Any]:
        """(method, samples, tile) the int8 artefacts were calibrated with."""
        return tuple(self.options.get(k) for k in ("calib_method", "calib_samples", "calib_tile"))  # type: ignore

    def made(self, *precisions: str) -> bool:
        """Whether the export was asked for these precisions (`fp16`, `int8`)."""
        return all(self.options.get(p) for p in precisions)
