"""Georeferenced rasters through rasterio (GDAL): GeoTIFF, COG, JPEG 2000, VRT... in; GeoTIFF/COG out.

The `[geo]` extra. What a remote-sensing scene carries besides pixels travels with it: the CRS and
geotransform (`GeoInfo`), the band descriptions, the scale/offset that turn digital numbers into
reflectance, and nodata. Masked pixels are never fed to the network as data: `tiling.fill_masked`
replaces them inside the MSI (see there why with the nearest valid pixel), and the output has nodata there.
The command-line flags for all this are in `ssran_edge.arguments`.

Band selection is 1-based like GDAL's (`--bands 2,3,4`) or by description (`--bands B02,B03,B04`).
Reflectance = DN x scale + offset (GDAL's convention). Sentinel-2 L2A since processing baseline
04.00: reflectance = (DN + BOA_ADD_OFFSET) / QUANTIFICATION_VALUE = (DN - 1000) / 10000, so
`--scale 0.0001 --offset -0.1`; DN 0 is nodata.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssran_edge.atomic import atomic_path
from ssran_edge.data.cube import Cube, GeoInfo, RasterOptions
from ssran_edge.errors import DataError, one_line

OUTPUT_SUFFIXES = (".tif", ".tiff")
DTYPES = ("float32", "float16")
BLOCK = 256  # output tiles: GDAL's and COG's usual block, and the runtime's default tile


@dataclass(frozen=True)
class GeoTiffOptions:
    """How a GeoTIFF output is written: sample type (float32, or float16 stored as NBITS=16), a
    Cloud-Optimized GeoTIFF or a plain tiled one, its compression, and the file-wide tags (what made
    these pixels: the model card's essentials)."""

    dtype: str = "float32"
    cog: bool = False
    compress: str = "deflate"
    tags: dict[str, str] = field(default_factory=dict)


def _rasterio():
    from ssran_edge.extras import require

    require("geo", "reading or writing a GeoTIFF/JP2")
    # GDAL's block cache defaults to 5 % of RAM (1.2 GB here) and fills with a window-by-window
    # writer's dirty blocks: an 8192^2 run peaked at 2.3 GB. 256 MB holds several windows' blocks;
    # a GDAL_CACHEMAX the user set wins. Read by GDAL when its cache is first used.
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    import rasterio

    return rasterio


def _band_indexes(src, wanted: list[str] | None, path: Path) -> list[int]:
    """1-based band indexes from indices or descriptions (case-insensitive)."""
    if wanted is None:
        return list(range(1, src.count + 1))
    descriptions = [(d or "").strip().lower() for d in src.descriptions]
    indexes = []
    for item in wanted:
        if item.isdigit():
            index = int(item)
            if not 1 <= index <= src.count:
                raise DataError(f"{path}: band {index} does not exist (bands 1 to {src.count})")
        else:
            matches = [i + 1 for i, d in enumerate(descriptions) if d == item.lower()]
            if not matches:
                named = ", ".join(d for d in src.descriptions if d) or "none"
                raise DataError(f"{path}: no band named {item!r} (band descriptions: {named})")
            index = matches[0]
        indexes.append(index)
    if len(set(indexes)) != len(indexes):
        raise DataError(f"{path}: --bands names a band twice ({', '.join(wanted)})")
    return indexes


def _scales(src, indexes: list[int], scale: float | None, offset: float | None):
    """(scale, offset) per selected band: the flags if given, else the file's own (GDAL metadata)."""
    scales = np.array([scale if scale is not None else (src.scales[i - 1] or 1.0) for i in indexes], np.float64)
    offsets = np.array([offset if offset is not None else (src.offsets[i - 1] or 0.0) for i in indexes], np.float64)
    return scales, offsets


@dataclass
class Raster:
    """An open raster with its band selection and calibration: reads whole or by window."""

    path: Path
    indexes: list[int]
    scales: np.ndarray
    offsets: np.ndarray
    geo: GeoInfo
    height: int
    width: int
    block_shape: tuple[int, int]
    wavelengths: np.ndarray | None
    _src: Any = None

    @property
    def bands(self) -> int:
        return len(self.indexes)

    def read(self, row0: int = 0, row1: int | None = None, col0: int = 0, col1: int | None = None):
        """(H, W, bands) float32 reflectance and an (H, W) bool of valid pixels (every band valid)."""
        from rasterio.windows import Window

        row1 = self.height if row1 is None else row1
        col1 = self.width if col1 is None else col1
        window = Window(col0, row0, col1 - col0, row1 - row0)
        try:
            raw = self._src.read(self.indexes, window=window, masked=True)
        except Exception as exc:  # rasterio's RasterioIOError and GDAL's CPLE_* for a damaged file
            raise DataError(f"{self.path}: unreadable raster data ({one_line(exc)})") from None
        valid = ~np.ma.getmaskarray(raw).any(axis=0)
        data = np.ma.getdata(raw).astype(np.float64)
        data *= self.scales[:, None, None]
        data += self.offsets[:, None, None]
        data = np.moveaxis(data.astype(np.float32), 0, -1)
        if valid.any() and not np.isfinite(data[valid]).all():
            raise DataError(f"{self.path}: scale/offset give NaN or Inf pixels")
        return np.ascontiguousarray(data), valid

    def close(self) -> None:
        if self._src is not None:
            self._src.close()
            self._src = None

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_raster(path: str | Path, options: RasterOptions | None = None) -> Raster:
    """Open any GDAL raster; nothing is read yet (`options`: its bands, scale, offset). Errors are one
    line naming the file."""
    bands, scale, offset = (options.bands, options.scale, options.offset) if options else (None, None, None)
    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if scale is not None and (not math.isfinite(scale) or scale == 0):
        raise DataError(f"--scale {scale}: must be a finite, non-zero number")
    if offset is not None and not math.isfinite(offset):
        raise DataError(f"--offset {offset}: must be a finite number")
    try:
        with warnings.catch_warnings():  # said once, by the caller, not as rasterio's warning per open
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(f"{path}: not a readable raster ({one_line(exc)})") from None
    try:
        indexes = _band_indexes(src, bands, path)
        kinds = {np.dtype(src.dtypes[i - 1]).kind for i in indexes}
        if kinds - set("fiu"):
            raise DataError(f"{path}: bands of type {', '.join(sorted(set(src.dtypes)))}; expected numbers")
        scales, offsets = _scales(src, indexes, scale, offset)
        transform = tuple(src.transform)[:6] if src.transform is not None else None
        geo = GeoInfo(src.crs.to_wkt() if src.crs else None, transform, src.nodata,
                      [src.descriptions[i - 1] or "" for i in indexes], src.driver)
        return Raster(path, indexes, scales, offsets, geo, src.height, src.width,
                      tuple(src.block_shapes[indexes[0] - 1]), _wavelengths(src, indexes), src)
    except BaseException:
        src.close()
        raise


def _wavelengths(src, indexes: list[int]) -> np.ndarray | None:
    """Band centres in nm, if the file says: our own WAVELENGTH band tags, GDAL's IMAGERY domain
    (CENTRAL_WAVELENGTH_UM, GDAL >= 3.10), or an ENVI-style `wavelength` list."""
    values = []
    for i in indexes:
        tags = src.tags(i)
        imagery = src.tags(i, ns="IMAGERY")
        try:
            if "WAVELENGTH" in tags:
                unit = tags.get("WAVELENGTH_UNITS", "nm").lower()
                values.append(float(tags["WAVELENGTH"]) * (1000.0 if unit.startswith("micro") or unit == "um" else 1))
            elif "CENTRAL_WAVELENGTH_UM" in imagery:
                values.append(float(imagery["CENTRAL_WAVELENGTH_UM"]) * 1000.0)
            else:
                return None
        except ValueError:
            return None
    array = np.asarray(values, np.float32)
    return array if np.isfinite(array).all() else None


def read_raster(path: str | Path, options: RasterOptions | None = None) -> Cube:
    """The whole raster as a Cube with its GeoInfo and valid-pixel mask."""
    with open_raster(path, options) as raster:
        data, valid = raster.read()
        if not valid.any():
            raise DataError(f"{path}: every pixel is nodata (or masked)")
        return Cube(data, raster.wavelengths, str(path), geo=raster.geo, valid=None if valid.all() else valid)


def _profile(height: int, width: int, bands: int, dtype: str, geo: GeoInfo | None, compress: str) -> dict:
    rasterio = _rasterio()
    from affine import Affine

    # float16: GDAL < 3.11 has no Float16 type, but GeoTIFF stores Float32 bands as half floats with NBITS=16
    # (readers get float32 back, with half precision): half the bytes of float32.
    profile = dict(driver="GTiff", height=height, width=width, count=bands, dtype="float32", nodata=float("nan"),
                   tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress=compress, predictor=3,
                   interleave="band", BIGTIFF="IF_SAFER", **({"NBITS": 16} if dtype == "float16" else {}))
    if compress == "zstd":
        profile["zstd_level"] = 9
    if geo is not None and geo.crs is not None:
        profile["crs"] = rasterio.crs.CRS.from_wkt(geo.crs)
    if geo is not None and geo.transform is not None:
        profile["transform"] = Affine(*geo.transform)
    return profile


def _describe(dst, wavelengths: list[float] | None, card_tags: dict[str, str] | None) -> None:
    if wavelengths is not None:
        for i, w in enumerate(wavelengths, start=1):
            dst.set_band_description(i, f"{w:g} nm")
            dst.update_tags(i, WAVELENGTH=f"{w:g}", WAVELENGTH_UNITS="nm")
            dst.update_tags(i, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=f"{w / 1000:g}")
        # ENVI-style, as GDAL's ENVI driver writes them: one list for the whole file
        dst.update_tags(wavelength="{" + ", ".join(f"{w:g}" for w in wavelengths) + "}",
                        wavelength_units="Nanometers")
    if card_tags:
        dst.update_tags(**card_tags)


class GeoTiffWriter:
    """A float GeoTIFF written window by window under a temp name, renamed when complete (or, with
    `cog`, copied into a Cloud-Optimized GeoTIFF by GDAL's COG driver, which builds the overviews)."""

    def __init__(self, path: str | Path, height: int, width: int, bands: int, *, geo: GeoInfo | None = None,
                 wavelengths: list[float] | None = None, options: GeoTiffOptions | None = None) -> None:
        rasterio = _rasterio()
        options = options or GeoTiffOptions()
        dtype, cog, compress = options.dtype, options.cog, options.compress
        if dtype not in DTYPES:
            raise DataError(f"--dtype {dtype}: use {' or '.join(DTYPES)}")
        if compress not in ("deflate", "zstd", "lzw", "none"):
            raise DataError(f"compression {compress!r}: use deflate, zstd, lzw or none")
        self.path, self.cog, self.dtype, self.compress = Path(path), cog, dtype, compress
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial.tif", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        profile = _profile(height, width, bands, dtype, geo, "none" if cog else compress)
        try:
            with warnings.catch_warnings():  # an output without a CRS is said once by the caller
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dst = rasterio.open(self._tmp, "w", **profile)
            _describe(self._dst, wavelengths, options.tags)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, cube: np.ndarray, row0: int = 0, col0: int = 0, valid: np.ndarray | None = None) -> None:
        """(h, w, bands) at (row0, col0); pixels where `valid` is False become nodata (NaN)."""
        from rasterio.windows import Window

        data = np.moveaxis(np.asarray(cube, np.float32), -1, 0).copy()
        if self.dtype == "float16":  # round to nearest here: GDAL's NBITS=16 conversion truncates
            data = data.astype(np.float16).astype(np.float32)
        if valid is not None:
            data[:, ~valid] = np.nan
        h, w = cube.shape[:2]
        self._dst.write(data, window=Window(col0, row0, w, h))

    def close(self) -> Path:
        """Finish: flush, (COG: copy with overviews), rename onto the final name."""
        _rasterio()
        from rasterio.shutil import copy as gdal_copy

        self._dst.close()
        try:
            if self.cog:
                with atomic_path(self.path) as final:
                    final.unlink(missing_ok=True)
                    gdal_copy(self._tmp, final, driver="COG", compress=self.compress.upper()
                              if self.compress != "none" else "NONE", predictor="YES", blocksize=BLOCK,
                              overview_resampling="average", BIGTIFF="IF_SAFER",
                              **({"NBITS": 16} if self.dtype == "float16" else {}))
            else:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        try:
            self._dst.close()
        finally:
            self._tmp.unlink(missing_ok=True)


def _first_ifd_offsets(path: Path) -> tuple[int, ...]:
    """Where a COG's main IFD may start: right after the TIFF header (8 bytes, BigTIFF 16), or right after
    GDAL's structural-metadata block ("GDAL_STRUCTURAL_METADATA_SIZE=nnnnnn bytes\n" + nnnnnn bytes)."""
    with open(path, "rb") as f:
        head = f.read(64)
    start = 16 if head[2:4] in (b"+\x00", b"\x00+") else 8  # version 43: BigTIFF
    key = b"GDAL_STRUCTURAL_METADATA_SIZE="
    if head[start: start + len(key)] != key:
        return (start,)
    line_end = head.index(b"\n", start)
    end = line_end + 1 + int(head[start + len(key): start + len(key) + 6])
    return end, end + (end % 2)  # word-aligned


def cog_problems(path: str | Path) -> list[str]:
    """Why a file is not a Cloud-Optimized GeoTIFF, by GDAL's own markers (empty: it is one): the
    layout flag GDAL's COG driver writes (IMAGE_STRUCTURE LAYOUT=COG), the main IFD at the start of
    the file, tiles, and internal overviews when the image is larger than one 512 px tile."""
    rasterio = _rasterio()
    problems = []
    with rasterio.open(path) as src:
        if src.driver != "GTiff":
            problems.append(f"driver {src.driver}, not GTiff")
        if src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "").upper() != "COG":
            problems.append("no LAYOUT=COG (not written by GDAL's COG driver)")
        if int(src.get_tag_item("IFD_OFFSET", "TIFF", bidx=1) or -1) not in _first_ifd_offsets(Path(path)):
            problems.append("the main IFD is not at the start of the file")
        if not src.profile.get("tiled", False):
            problems.append("not tiled")
        if max(src.width, src.height) > 512 and not src.overviews(1):
            problems.append("no overviews")
        if any(str(f).lower().endswith(".ovr") for f in src.files):
            problems.append("external .ovr overviews")
    return problems


def write_geotiff(path: str | Path, cube: np.ndarray, wavelengths: list[float] | None = None, *,
                  geo: GeoInfo | None = None, valid: np.ndarray | None = None,
                  options: GeoTiffOptions | None = None) -> Path:
    """A whole (H, W, bands) cube as a GeoTIFF/COG, block row by block row, atomically."""
    h, w, bands = cube.shape
    writer = GeoTiffWriter(path, h, w, bands, geo=geo, wavelengths=wavelengths, options=options)
    try:
        for row in range(0, h, BLOCK):
            writer.write(cube[row: row + BLOCK], row, 0, None if valid is None else valid[row: row + BLOCK])
    except BaseException:
        writer.abort()
        raise
    return writer.close()
