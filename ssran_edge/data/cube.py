"""What every reader returns, where a raster sits and how to read one: the core's data records, with
no reader behind them, and `check_cube`, the check every reader's pixels pass (readers, raw, images and
geo all import this; it imports none of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ssran_edge.errors import DataError


@dataclass
class GeoInfo:
    """Where a raster sits: CRS (WKT, or None), affine transform (a, b, c, d, e, f as rasterio's
    Affine), and the source's nodata and band descriptions, for the record."""

    crs: str | None = None
    transform: tuple[float, ...] | None = None
    nodata: float | None = None
    descriptions: list[str] = field(default_factory=list)
    driver: str = ""

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None or (self.transform is not None and self.transform != (1, 0, 0, 0, 1, 0))

    def shifted(self, row: int, col: int) -> GeoInfo:
        """The same grid, origin moved to pixel (row, col): a window's own transform."""
        if self.transform is None:
            return self
        a, b, c, d, e, f = self.transform
        return GeoInfo(self.crs, (a, b, c + a * col + b * row, d, e, f + d * col + e * row), self.nodata,
                       self.descriptions, self.driver)

    def envi_map_info(self) -> str | None:
        """ENVI's `map info` for a north-up grid (no rotation) with a CRS; None otherwise."""
        if self.transform is None or self.crs is None:
            return None
        a, b, c, d, e, f = self.transform
        if b or d:
            return None  # ENVI's map info has no rotation terms
        return f"{{Arbitrary, 1, 1, {c!r}, {f!r}, {a!r}, {-e!r}, units=Meters}}"


# How pixel values relate to light: "linear" (proportional to radiance: what the models were trained on)
# or "srgb" (IEC 61966-2-1 gamma-encoded, as photos and video are; decoded by ssran_edge.encoding).
Encoding = Literal["linear", "srgb"]


@dataclass
class Cube:
    data: np.ndarray  # (H, W, bands) float32; for an "srgb" cube the encoded values scaled to [0, 1]
    wavelengths: np.ndarray | None = None  # (bands,) nm
    source: str = ""
    geo: GeoInfo | None = None  # a GDAL raster's CRS and transform, else None
    valid: np.ndarray | None = None  # (H, W) bool, False where the source has nodata; None: all valid
    encoding: Encoding = "linear"  # as the file says (see ssran_edge.encoding.detect rules in the docs)
    camera: str | None = None  # the camera it was taken with, when the file says (a raw's EXIF)

    @property
    def bands(self) -> int:
        return self.data.shape[2]

    def crop(self, rows: slice = slice(None), cols: slice = slice(None)) -> Cube:
        row0, col0 = rows.indices(self.data.shape[0])[0], cols.indices(self.data.shape[1])[0]
        return Cube(np.ascontiguousarray(self.data[rows, cols]), self.wavelengths, self.source,
                    self.geo.shifted(row0, col0) if self.geo is not None else None,
                    None if self.valid is None else self.valid[rows, cols], self.encoding, self.camera)


RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")  # read through rasterio (GDAL): ssran_edge.geo




@dataclass(frozen=True)
class RasterOptions:
    """How to read a GDAL raster: bands by 1-based index or description (None: every band), and
    reflectance = DN x scale + offset (None: the file's own)."""

    bands: tuple[str, ...] | None = None
    scale: float | None = None
    offset: float | None = None


# The model is close to scale-invariant (output / input held at ~8.6 from 1e3 to 1e30), but at ~3e38
# (float32's limit) its sums overflow: torch and the stream then wrote NaN cubes and exited 0.
MAX_ABS_VALUE = 1e30


def check_cube(data: np.ndarray, name: str = "cube", bands: int | None = None) -> np.ndarray:
    """Validate an (H, W, bands) array: numeric, 3-D, non-empty, finite. Returns float32."""
    data = np.asarray(data)
    if data.dtype.kind not in "fiub":
        raise DataError(f"{name}: expected numeric pixels, got dtype {data.dtype}")
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{name}: expected an (H, W, bands) array, got shape {data.shape}")
    if min(data.shape) == 0:
        raise DataError(f"{name}: empty array of shape {data.shape}")
    if bands is not None and data.shape[2] != bands:
        raise DataError(f"{name}: expected {bands} bands, got {data.shape[2]}")
    lo, hi = float(data.min()), float(data.max())  # before the cast (1e300 would become inf); NaN propagates
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"{name}: {bad} NaN/Inf values; mask or fill them first")
    if max(-lo, hi) > MAX_ABS_VALUE:
        raise DataError(f"{name}: values up to {max(-lo, hi):.3g}; beyond {MAX_ABS_VALUE:.0e} the model's float32 "
                        "arithmetic overflows to NaN (scale the data: reflectance or digital numbers)")
    return data.astype(np.float32, copy=False)
