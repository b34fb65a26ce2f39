"""The model card: what a model is and how to run it, as one record in three places.

- `model.json` beside the weights (`ModelCard.read` / `write`): everything, training record included;
- the metadata_props of every ONNX artefact and the sidecar of a TensorRT engine (`metadata` /
  `from_metadata`): the fields a runtime needs (bands, wavelengths, SRF, inference settings), as
  `ssran_edge.<field>` strings.

A card is checked when it is read: a missing or ill-typed field is one line naming it, not a KeyError
three modules later.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from ssran_edge import __version__
from ssran_edge.atomic import write_json
from ssran_edge.errors import CheckpointError
from ssran_edge.records import read_json_object
from ssran_edge.tiling import MIN_TILE

FORMAT = "ssran-edge"
PREFIX = "ssran_edge."  # of the ONNX metadata_props and engine sidecar keys
MODES = ("tile", "patch")
# The architectures ssran_edge.model builds, by the name a card records (torch-free: a CLI lists them
# before it imports torch), and the least-squares baseline each skip variant starts from.
ARCHITECTURE_NAMES = ("ssran", "ssran_linear_skip", "ssran_rootpoly_skip", "ssran_rootpoly4_skip", "ssran_chroma_skip")
SKIP_BASELINE = {"ssran_linear_skip": "linear", "ssran_rootpoly_skip": "rootpoly3", "ssran_rootpoly4_skip": "rootpoly4",
                 "ssran_chroma_skip": "rootpoly3"}


@dataclass
class Inference:
    """How the model was selected and should be run: whole tiles (with a halo) or the paper's patches."""

    mode: str = "tile"
    tile: int = 256
    patch: int = 4


@dataclass
class ModelCard:
    arch: str
    in_bands: int
    out_bands: int
    width: int | None = None  # the architecture's size: needed to rebuild the torch model, not to run an artefact
    num_blocks: int | None = None
    eca_kernel: int | None = None
    wavelengths_nm: list[float] | None = None
    srf: str | None = None  # the camera: a bundled SRF's name (srgb: the sRGB standard of photos and video)
    # how the frames it was trained on were stored: linear (raw, float, linear TIFF) or srgb (8-bit photos
    # and video, JPEG included, decoded to linear before the model); None on cards from before it was recorded
    encoding: str | None = None
    msi_band_names: list[str] | None = None
    protocol: str | None = None
    inference: Inference = field(default_factory=Inference)
    test_metrics: dict[str, float] | None = None
    version: str = __version__
    training: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    val_psnr: float | None = None
    record: dict[str, Any] = field(default_factory=dict)  # the rest (splits, per-scene tables, notes), kept as is

    ARTEFACT_FIELDS: ClassVar[tuple[str, ...]] = (
        "in_bands", "out_bands", "wavelengths_nm", "srf", "encoding", "msi_band_names", "protocol", "arch",
        "inference", "test_metrics")
    SIZE_FIELDS: ClassVar[tuple[str, ...]] = ("width", "num_blocks", "eca_kernel")
    # Fields cards gained later: left out of a card (and an artefact's metadata) that has none, so an
    # older card writes back as it was
    RECORDED_LATER: ClassVar[tuple[str, ...]] = ("encoding",)

    # ------------------------------------------------------------ JSON card beside the weights

    @classmethod
    def from_dict(cls, obj: Any, source: str = "model card") -> ModelCard:
        if not isinstance(obj, dict):
            raise CheckpointError(f"{source}: not an ssran-edge model card (a JSON object expected)")
        declared = {f.name for f in fields(cls)} - {"record", "inference"}
        values = {k: v for k, v in obj.items() if k in declared}
        record = {k: v for k, v in obj.items() if k not in declared and k not in ("format", "inference", "record")}
        record.update(obj.get("record") or {})
        for key in ("arch", "in_bands", "out_bands"):
            if key not in obj:
                raise CheckpointError(f"{source}: model card lacks {key!r}")
        card = cls(**values, inference=_inference(obj.get("inference"), source), record=record)
        card.check(source)
        return card

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT}
        for f in fields(self):
            if f.name != "record" and not (f.name in self.RECORDED_LATER and getattr(self, f.name) is None):
                value = getattr(self, f.name)
                out[f.name] = asdict(value) if isinstance(value, Inference) else value
        return {**out, **self.record}

    @classmethod
    def read(cls, weights: str | Path) -> ModelCard:
        """The card beside a weights file (`model.safetensors` -> `model.json`)."""
        path = sidecar_path(weights)
        obj = read_json_object(path, CheckpointError, fmt=FORMAT, foreign=f"{path}: not an ssran-edge model card",
                               missing=f"{weights}: no model card {path.name} beside it; not an ssran-edge model",
                               corrupt=f"{path}: corrupt model card ({{why}})")
        card = cls.from_dict(obj, str(path))
        missing = [k for k in cls.SIZE_FIELDS if getattr(card, k) is None]
        if missing:
            raise CheckpointError(f"{path}: model card lacks {', '.join(missing)}")
        return card

    def write(self, weights: str | Path) -> Path:
        path = sidecar_path(weights)
        write_json(path, self.to_dict())
        return path

    def check(self, source: str = "model card") -> None:
        """One line naming the first field that cannot be right."""
        if not isinstance(self.arch, str) or not self.arch:
            raise CheckpointError(f"{source}: arch must be a name, got {self.arch!r}")
        for key in ("in_bands", "out_bands", *self.SIZE_FIELDS):
            value = getattr(self, key)
            if value is None and key in self.SIZE_FIELDS:
                continue
            if not _positive_int(value):
                raise CheckpointError(f"{source}: {key} must be a positive integer, got {value!r}")
        w = self.wavelengths_nm
        if w is not None and (not isinstance(w, list) or len(w) != self.out_bands
                              or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in w)):
            raise CheckpointError(f"{source}: wavelengths_nm must be {self.out_bands} finite numbers")
        for key in ("srf", "protocol"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise CheckpointError(f"{source}: {key} must be a name, got {getattr(self, key)!r}")
        if self.encoding not in (None, "linear", "srgb"):
            raise CheckpointError(f"{source}: encoding must be linear or srgb, got {self.encoding!r}")
        if not isinstance(self.training, dict):
            raise CheckpointError(f"{source}: training must be an object")

    # ------------------------------------------------------------ artefact metadata (ONNX, engine sidecar)

    def metadata(self, precision: str, **extra: Any) -> dict[str, Any]:
        """What a runtime needs to trust and use an artefact, as `ssran_edge.*` keys."""
        meta: dict[str, Any] = {f"{PREFIX}version": __version__, f"{PREFIX}precision": precision}
        for key in self.ARTEFACT_FIELDS:
            value = getattr(self, key)
            if not (key in self.RECORDED_LATER and value is None):
                meta[PREFIX + key] = asdict(value) if isinstance(value, Inference) else value
        return {**meta, **{PREFIX + k: v for k, v in extra.items()}}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], source: str = "artefact") -> ModelCard | None:
        """The card an artefact carries; None for one without our metadata (another tool's ONNX)."""
        fields_ = {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}
        if "in_bands" not in fields_ or "out_bands" not in fields_:
            return None
        fields_.setdefault("arch", "unknown")
        known = {k: fields_[k] for k in cls.ARTEFACT_FIELDS if k in fields_}
        return cls.from_dict(known, f"{source} metadata")

    def replace(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _inference(obj: Any, source: str) -> Inference:
    if obj is None:
        return Inference()
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: inference must be an object with mode and tile, got {obj!r}")
    inference = Inference(**{k: obj[k] for k in ("mode", "tile", "patch") if k in obj})
    if inference.mode not in MODES:
        raise CheckpointError(f"{source}: inference.mode must be one of {', '.join(MODES)}, got {inference.mode!r}")
    if not _positive_int(inference.patch):
        raise CheckpointError(f"{source}: inference.patch must be a positive integer, got {inference.patch!r}")
    if not _positive_int(inference.tile) or inference.tile < MIN_TILE:
        raise CheckpointError(f"{source}: inference.tile must be an integer >= {MIN_TILE} (pixels), got "
                              f"{inference.tile!r}")
    return inference
