"""Files that ship inside the package: the demo scene and the weights trained by this project."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssran_edge.data.cube import Cube
from ssran_edge.data.readers import check_cube
from ssran_edge.errors import CheckpointError
from ssran_edge.io import special_file

ASSETS = Path(__file__).parent
DEMO_SCENE = ASSETS / "demo_cave_crop.npz"
# cave: SSRAN + a frozen root-polynomial least-squares skip (the variant; +1.8 dB over root-polynomial
# regression, +3.2 dB over linear, on CAVE's 6 test scenes); cave_ssran: the faithful SSRAN (+2.2 dB
# over linear); both trained on 18 CAVE scenes. paris: the faithful SSRAN (paper recipe); pavia: the
# linear-skip variant on Pavia University (4 -> 103 bands). See README "Results".
MODELS = {name: ASSETS / "models" / f"{name}.safetensors"
          for name in ("cave", "cave_ssran", "srgb", "paris", "pavia")}
DEFAULT_MODEL = MODELS["cave"]
PHOTO_MODEL = MODELS["srgb"]  # srgb: trained through the sRGB camera and a photo's capture chain (8-bit, JPEG)


def model_for(name_or_path: str | Path | None, encoding: str | None) -> str | Path | None:
    """The model to run: the one named; with none named, `srgb` for sRGB-encoded frames (photos, video)
    and the default (linear camera values) for any other."""
    if name_or_path:
        return name_or_path
    return PHOTO_MODEL if encoding == "srgb" else None


def model_path(name_or_path: str | Path | None) -> Path:
    """A bundled model's weights by name (cave, cave_ssran, srgb, paris, pavia), any other path as given, or
    the default model for None/""."""
    path = Path(MODELS.get(str(name_or_path), name_or_path)) if name_or_path else DEFAULT_MODEL
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give the model file (.safetensors with its .json, .onnx "
                              "or .engine)")
    for part in (path, path.with_suffix(".json")):
        if kind := special_file(part):
            raise CheckpointError(f"{part}: is {kind}, not a model file")
    return path


def demo_scene() -> Cube:
    """The bundled crop of a CAVE test scene (see ATTRIBUTION.md): (H, W, 31) reflectance in [0, 1]."""
    with np.load(DEMO_SCENE, allow_pickle=False) as f:
        data = f["cube"].astype(np.float32) / float(f["scale"])
        wavelengths = f["wavelengths_nm"].astype(np.float32)
    return Cube(check_cube(data, str(DEMO_SCENE)), wavelengths, str(DEMO_SCENE))
