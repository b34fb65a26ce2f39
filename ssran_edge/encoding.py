"""From encoded pixel values to the linear values the models take.

The models were trained on linear camera values (proportional to light). Photos, video and most 8-bit
files are sRGB-encoded (IEC 61966-2-1: a 2.4 power curve with a linear toe); fed undecoded they score
like noise. `to_linear` decodes a frame as its encoding says: integer codes through a lookup table (256
or 65536 entries, built once from colour-science's sRGB EOTF), so a frame costs one table lookup; float
values (already scaled to [0, 1]) through the same function directly.

Which files are which (`--input-encoding auto`): see docs/inputs.md. The rule lives with the readers
that know the files (`ssran_edge.data.images`); this module only decodes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ssran_edge.data.cube import Encoding
from ssran_edge.errors import DataError

ENCODINGS = ("auto", "linear", "srgb")  # --input-encoding: auto = as each file says


def resolve(requested: str, detected: Encoding) -> Encoding:
    """The encoding a frame is decoded with: the file's own unless the user named one."""
    return detected if requested == "auto" else requested  # type: ignore[return-value]


def srgb_eotf(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear, float64 (IEC 61966-2-1, via colour-science)."""
    from colour.models import eotf_sRGB

    return np.asarray(eotf_sRGB(np.asarray(encoded, dtype=np.float64)), dtype=np.float64)


def srgb_codes(linear: np.ndarray, bits: int = 8) -> np.ndarray:
    """Linear values -> sRGB codes of `bits` (8 -> uint8): clipped to [0, 1], encoded by the sRGB inverse
    EOTF (colour-science), rounded to the nearest code: what a camera writes into a photo."""
    from colour.models import eotf_inverse_sRGB

    encoded = eotf_inverse_sRGB(np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0))
    top = 2**bits - 1
    return np.rint(encoded * top).astype(np.uint8 if bits == 8 else np.uint16)


def scaled_codes(codes: np.ndarray) -> np.ndarray:
    """Integer codes divided by full scale (255, 65535) as float32, correctly rounded (a division, not a
    multiplication by the rounded reciprocal): the values `srgb_table` is evaluated at."""
    return codes.astype(np.float32) / np.float32(np.iinfo(codes.dtype).max)


@lru_cache(maxsize=2)
def srgb_table(bits: int) -> np.ndarray:
    """Linear value of every `bits`-bit sRGB code (8 -> 256 entries, 16 -> 65536), float32. Evaluated at
    the scaled codes as float32 holds them, so decoding codes and decoding their scaled values (a photo
    read whole by `predict`) agree bit for bit."""
    dtype = np.uint8 if bits == 8 else np.uint16
    table = srgb_eotf(scaled_codes(np.arange(2**bits, dtype=dtype))).astype(np.float32)
    table.setflags(write=False)
    return table


def to_linear(data: np.ndarray, encoding: Encoding, name: str = "frame") -> np.ndarray:
    """A frame's values as linear float32. Integer data are codes at full scale (the dtype's maximum:
    uint8 -> 255); float data are values already on a [0, 1] scale (linear ones pass through as stored)."""
    if data.dtype.kind in "ub":
        data = data.astype(np.uint8) if data.dtype.kind == "b" else data
        bits = data.dtype.itemsize * 8
        if encoding == "srgb" and bits in (8, 16):
            return np.take(srgb_table(bits), data)  # np.take: ~2x faster than table[data] here
        return scaled_codes(data)
    if data.dtype.kind == "i":  # signed codes (a 16-bit signed TIFF): full scale is the positive maximum
        data = scaled_codes(data)
    if encoding == "linear":
        return data.astype(np.float32, copy=False)
    if data.dtype.kind != "f":
        raise DataError(f"{name}: expected numeric pixels, got dtype {data.dtype}")
    lo, hi = float(np.min(data)), float(np.max(data))
    if not (0.0 <= lo and hi <= 1.0):  # NaN fails both comparisons too
        raise DataError(f"{name}: --input-encoding srgb needs values on a 0-1 scale (encoded codes divided "
                        f"by their maximum); these span {lo:.4g} to {hi:.4g}")
    return srgb_eotf(data).astype(np.float32)
