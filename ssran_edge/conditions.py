"""Capture conditions: what a real sensor adds to the linear MSI before a model sees it.

    from ssran_edge.conditions import CONDITIONS, capture
    noisy = capture(msi, CONDITIONS["read 1%"], "face")   # (H, W, bands) float32, not clipped

Noise is Gaussian on the linear MSI (full scale 1.0: a white reflector), with variance
read² + shot · signal -- the Poisson-Gaussian model of a photon-counting sensor, Gaussian-approximated.
It is not clipped: a dark pixel may read negative, as a raw value minus its black level does.
The draw is fixed by (condition, scene name), so every method and every run sees the same noise on
the same scene, whatever order the scenes come in.

sRGB conditions (a photo or video frame of the `srgb` camera) go on through the capture chain after the
noise: clipped to [0, 1] (highlights and out-of-gamut colours clip, as in a camera), sRGB-encoded to 8
bits, written as a PNG (lossless) or a JPEG (4:2:0 chroma) and read back by the decoder every photo
goes through (`ssran_edge.data.images`), then decoded to linear: what `predict` feeds a model.

Evaluation scores each method under each condition; a baseline is fitted on training scenes that went
through the same condition (`ssran_edge.train.report`), the strongest simple method for it rather than a
clean fit fed noisy pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Condition:
    name: str
    read: float = 0.0  # read-noise sigma, fraction of full scale
    shot: float = 0.0  # shot-noise gain k: variance k * signal
    encoding: str = "linear"  # "srgb": then through the capture chain as an 8-bit file
    jpeg: int = 0  # the file's JPEG quality; 0 = PNG (lossless)

    @property
    def clean(self) -> bool:
        return self.read == 0 and self.shot == 0 and self.encoding == "linear"

    def describe(self) -> str:
        if self.clean:
            return "clean linear MSI"
        parts = [f"read noise sigma {self.read:.3g}"] if self.read else []
        parts += [f"shot noise variance {self.shot:g} x signal"] if self.shot else []
        if self.encoding == "srgb":
            parts.append(f"8-bit sRGB {f'JPEG quality {self.jpeg} (4:2:0)' if self.jpeg else 'PNG'}, decoded to linear")
        return " + ".join(parts)


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("clean"),
    Condition("read 0.5%", read=0.005),
    Condition("read 1%", read=0.01),
    Condition("read 0.5% + shot", read=0.005, shot=0.0005),
)}
NOISY_SELECTION = CONDITIONS["read 1%"]  # training chooses its epoch on the mean of clean and this
# A photo of the sRGB camera: the clean row is the clipped float frame (a 16-bit or float file).
SRGB_CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("clean"),
    Condition("sRGB 8-bit PNG", encoding="srgb"),
    Condition("sRGB JPEG q90", encoding="srgb", jpeg=90),
    Condition("sRGB JPEG q75", encoding="srgb", jpeg=75),
    Condition("read 1% + sRGB 8-bit PNG", read=0.01, encoding="srgb"),
)}


def conditions_for(encoding: str) -> dict[str, Condition]:
    """The capture conditions a model is evaluated under: a linear camera's, or a photo's (encoding srgb)."""
    return SRGB_CONDITIONS if encoding == "srgb" else CONDITIONS


def condition_named(name: str) -> Condition:
    for table in (CONDITIONS, SRGB_CONDITIONS):
        if name in table:
            return table[name]
    known = ", ".join(dict.fromkeys([*CONDITIONS, *SRGB_CONDITIONS]))
    raise ValueError(f"unknown capture condition {name!r}; known: {known}")


def capture(msi: np.ndarray, condition: Condition, scene: str, seed: int = 0) -> np.ndarray:
    """The MSI as the sensor would read it under `condition`; the clean condition returns it as is."""
    msi = np.asarray(msi, dtype=np.float32)
    if condition.clean:
        return msi
    if condition.read or condition.shot:
        rng = np.random.default_rng([seed, zlib.crc32(f"{condition.name}/{scene}".encode())])
        variance = condition.read ** 2 + condition.shot * np.maximum(msi, 0)
        msi = (msi + np.sqrt(variance) * rng.standard_normal(msi.shape, dtype=np.float32)).astype(np.float32)
    return photo(msi, condition.jpeg) if condition.encoding == "srgb" else msi


def photo(frame: np.ndarray, jpeg: int = 0) -> np.ndarray:
    """A linear sRGB frame (H, W, 3) as a photo file gives it back: clipped to [0, 1], sRGB-encoded to 8
    bits, written as a JPEG of quality `jpeg` (4:2:0) or, with 0, a PNG, read by the photo decoder and
    decoded to linear float32."""
    from ssran_edge.data.images import decode_picture, encode_picture
    from ssran_edge.encoding import srgb_codes, to_linear

    picture = decode_picture(encode_picture(srgb_codes(frame), jpeg), "JPEG" if jpeg else "PNG")
    return to_linear(picture.codes, picture.encoding)
