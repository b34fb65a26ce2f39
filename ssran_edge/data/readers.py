"""Readers for hyperspectral / multispectral cubes. Each returns a `Cube`: (H, W, bands) float32 data
plus band-centre wavelengths in nm where the format records them.

Formats: MATLAB .mat (v5 via scipy, v7.3 via h5py), CAVE scene folders (31 16-bit PNGs), ENVI
.hdr/.img (via `spectral`), .npy/.npz; photos (`images.read_picture`: encoded values scaled to [0, 1],
the encoding in `Cube.encoding`) and camera raw files (`raw.read_raw`, the [raw] extra). Band-major
matrices (Jasper Ridge, Samson: Y is bands x pixels in MATLAB column order) are reshaped with
`band_major_shape`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ssran_edge.data.cube import RASTER_SUFFIXES, Cube, RasterOptions, check_cube  # check_cube: imported from here too
from ssran_edge.data.images import is_picture, read_picture
from ssran_edge.data.matlab import load_mat_variables
from ssran_edge.data.raw import RAW_SUFFIXES
from ssran_edge.errors import DataError, one_line
from ssran_edge.io import special_file


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def memory_bytes() -> int:
    """Physical memory of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_size(path: Path, shape: tuple, dtype: np.dtype, needed: int, available: int, claimant: str,
                data_name: str, kind: str, read_whole: bool = True) -> None:
    """Refuse a file whose header claims more data than the file holds, or (read_whole) a cube that
    cannot fit in memory when read whole (as float32, beside the stored copy)."""
    dims = "x".join(str(d) for d in shape)
    if needed > available:
        raise DataError(f"{path}: unreadable {kind} file: truncated, or the header lies: {claimant} says "
                        f"{dims} {dtype} ({_size(needed)}), but {data_name} holds {_size(max(available, 0))}")
    whole = needed + int(np.prod(shape, dtype=object)) * 4
    memory = memory_bytes()
    if read_whole and memory and whole > memory:
        raise DataError(f"{path}: {dims} {dtype} is too large to read whole ({_size(whole)} with its float32 copy, "
                        f"{_size(memory)} of memory here); `ssran-edge run SCENE --window 1024` reads it in windows")


def band_major_shape(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(bands, rows*cols) matrix in MATLAB column-major pixel order -> (rows, cols, bands)."""
    if matrix.ndim != 2 or matrix.shape[1] != rows * cols:
        raise DataError(f"band-major matrix of shape {matrix.shape} does not hold {rows}x{cols} pixels")
    return matrix.T.reshape(rows, cols, matrix.shape[0], order="F")


# --- MATLAB ---------------------------------------------------------------------------------------

def read_mat(path: str | Path, variable: str | None = None) -> Cube:
    """A cube from a .mat file. With no variable named, the single 3-D array in the file is used."""
    variables = load_mat_variables(path)
    # Band-major unmixing files (Jasper Ridge, Samson): Y is bands x pixels, with nRow/nCol beside it.
    rows, cols = (int(np.ravel(variables[k])[0]) if k in variables else None for k in ("nRow", "nCol"))
    if variable:
        if variable not in variables:
            raise DataError(f"{path}: no variable named {variable!r}")
        data = variables[variable]
    else:
        cubes = {k: v for k, v in variables.items() if isinstance(v, np.ndarray)
                 and (v.ndim == 3 or (v.ndim == 2 and rows and cols and v.shape[1] == rows * cols))}
        if len(cubes) != 1:
            raise DataError(f"{path}: name the variable to read; cube-shaped arrays here: {sorted(cubes)}")
        variable, data = next(iter(cubes.items()))
    if data.ndim == 2 and rows and cols and data.shape[1] == rows * cols:
        data = band_major_shape(data, rows, cols)
    cube = check_cube(data, f"{path}:{variable}")
    return Cube(cube, _mat_wavelengths(variables, cube.shape[2]), f"{path}:{variable}")


def _mat_wavelengths(variables: dict, bands: int) -> np.ndarray | None:
    """Band centres stored beside the cube (MUUFL's `wavelengths`, AVIRIS' `wl` in um), in nm."""
    for key in ("wavelengths_nm", "wavelengths", "wavelength", "wl"):
        value = variables.get(key)
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiu" and value.size == bands:
            nm = value.astype(np.float32).ravel()
            return nm * 1000.0 if nm.max() < 30 else nm  # micrometres -> nm
    return None


# --- CAVE -----------------------------------------------------------------------------------------

CAVE_WAVELENGTHS = np.arange(400, 701, 10, dtype=np.float32)


def read_cave_scene(folder: str | Path) -> Cube:
    """A CAVE scene folder: <scene>_ms_01.png ... _31.png, 16-bit, scaled by 1/65535."""
    from PIL import Image

    folder = Path(folder)
    files = sorted(folder.glob("*_ms_[0-9][0-9].png"))
    if len(files) != 31:
        raise DataError(f"{folder}: expected 31 CAVE band PNGs (*_ms_01.png..*_ms_31.png), found {len(files)}")
    bands = []
    for f in files:
        try:
            with Image.open(f) as im:
                band = np.asarray(im)
        except Exception as exc:
            raise DataError(f"{f}: unreadable PNG ({exc})") from None
        if band.ndim == 3:  # a few CAVE files are stored as 8-bit RGBA: take the grey channel
            band = band[..., 0].astype(np.float32) * 257.0
        bands.append(band.astype(np.float32))
    if len({b.shape for b in bands}) != 1:
        raise DataError(f"{folder}: band images differ in size")
    data = np.stack(bands, axis=-1) / 65535.0
    return Cube(check_cube(data, str(folder)), CAVE_WAVELENGTHS.copy(), str(folder))


# --- ENVI -----------------------------------------------------------------------------------------

def envi_files(path: str | Path, read_whole: bool = True) -> tuple[Path, Path]:
    """(header, data file) of an ENVI image given either one, after checking that the header's
    lines x samples x bands x data type fit in the data file: a truncated file or a header that lies
    about its size is refused here, before `spectral` maps or allocates what the header claims; so is
    (read_whole) an image too large for memory."""
    import spectral.io.envi as envi

    path = Path(path)
    header = path if path.suffix.lower() == ".hdr" else path.with_suffix(".hdr")
    if not header.is_file():
        raise DataError(f"{path}: no ENVI header {header.name} beside it")
    try:
        meta = envi.read_envi_header(str(header))
        lines, samples, bands = (int(meta[k]) for k in ("lines", "samples", "bands"))
        offset = int(meta.get("header offset", 0))
        dtype = np.dtype(envi.envi_to_dtype[str(int(meta["data type"]))])
    except KeyError as exc:
        raise DataError(f"{header}: ENVI header lacks or misstates {exc}") from None
    except Exception as exc:  # not an ENVI header, non-numeric fields...
        raise DataError(f"{header}: unreadable ENVI header ({type(exc).__name__}: {one_line(exc)})") from None
    if path != header:
        data_file = path
    else:  # the data file beside the header, as spectral.io.envi.open looks for it
        stem = str(header)[: -len(header.suffix)]
        exts = [e.lower() for e in envi.KNOWN_EXTS] + [str(meta.get("interleave", "bsq")).lower()]
        names = [stem] + [f"{stem}.{e}" for e in exts] + [f"{stem}.{e.upper()}" for e in exts]
        data_file = next((Path(n) for n in names if Path(n).is_file()), None)
        if data_file is None:
            raise DataError(f"{header}: no ENVI data file beside it ({Path(stem).name}.img, .dat, .raw...)")
    if not data_file.is_file():
        raise DataError(f"{data_file}: no such file")
    if min(lines, samples, bands) < 1 or offset < 0:
        raise DataError(f"{header}: header says {lines} lines x {samples} samples x {bands} bands at offset "
                        f"{offset}; an image needs at least one of each")
    _check_size(path, (lines, samples, bands), dtype, lines * samples * bands * dtype.itemsize,
                data_file.stat().st_size - offset, f"header {header.name}", data_file.name, "ENVI", read_whole)
    return header, data_file


def read_envi(path: str | Path) -> Cube:
    """ENVI header + binary (BSQ/BIL/BIP) through `spectral`; wavelengths from the header (um -> nm)."""
    import spectral.io.envi as envi

    path = Path(path)
    header, data_file = envi_files(path)
    try:
        image = envi.open(str(header), str(data_file))
        data = np.asarray(image.load())
    except MemoryError:
        raise DataError(f"{path}: too large for this machine's memory") from None
    except Exception as exc:
        raise DataError(f"{path}: unreadable ENVI file ({type(exc).__name__}: {one_line(exc)})") from None
    return Cube(check_cube(data, str(path)), envi_wavelengths(image.metadata, str(path)), str(path))


def envi_wavelengths(metadata: dict, source: str) -> np.ndarray | None:
    """Band centres in nm from an ENVI header's `wavelength` (micrometres converted; no units: guessed
    from the values). Text or non-finite values are one line naming them, not a traceback."""
    centres = metadata.get("wavelength")
    if not centres:
        return None
    try:
        wavelengths = np.asarray([float(w) for w in centres], dtype=np.float32)
    except (TypeError, ValueError):
        bad = next(w for w in centres if not _is_number(w))
        raise DataError(f"{source}: the header's wavelengths are not numbers ({bad!r}...)") from None
    if not np.isfinite(wavelengths).all():
        raise DataError(f"{source}: the header's wavelengths hold NaN/Inf")
    units = str(metadata.get("wavelength units", "")).lower()
    if units.startswith(("micro", "um", "µm")) or (units not in ("nm", "nanometers") and wavelengths.max() < 30):
        wavelengths *= 1000.0
    return wavelengths


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# --- NumPy ----------------------------------------------------------------------------------------

def check_npy_header(path: str | Path, read_whole: bool = True) -> None:
    """Check an .npy header against the file before loading: a header whose shape needs more bytes
    than the file holds (truncated, or lying), or (read_whole) more memory than this machine has, is
    refused here instead of failing deep inside NumPy (or asking the OS for terabytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except Exception:  # not an .npy header: np.load says why
            return
        start = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: unreadable NumPy file: it holds Python objects (pickles are never loaded)")
    count = int(np.prod(shape, dtype=object))
    _check_size(path, shape, dtype, count * dtype.itemsize, path.stat().st_size - start, "its header", path.name,
                "NumPy", read_whole)


def read_numpy(path: str | Path, key: str | None = None) -> Cube:
    """.npy array, or .npz with the cube under `key` (default: 'cube', else the only 3-D array);
    an .npz may carry 'wavelengths_nm' or 'wavelengths'."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(6)
        if not magic:
            raise DataError(f"{path}: unreadable NumPy file: empty file")
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # np.load would try it as a pickle
            raise DataError(f"{path}: unreadable NumPy file: no .npy header and not an .npz (zip)")
    try:
        if path.suffix.lower() == ".npy":
            check_npy_header(path)
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return Cube(check_cube(loaded, str(path)), None, str(path))
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: an array in it is too large for this machine's memory") from None
    except Exception as exc:  # ValueError, OSError, EOFError, BadZipFile, SyntaxError (a mangled header)...
        raise DataError(f"{path}: unreadable NumPy file ({one_line(exc)})") from None
    if key is None:
        cubes = [k for k, v in arrays.items() if v.ndim == 3]
        key = "cube" if "cube" in arrays else (cubes[0] if len(cubes) == 1 else None)
        if key is None:
            raise DataError(f"{path}: name the array to read; 3-D arrays here: {cubes}")
    if key not in arrays:
        raise DataError(f"{path}: no array named {key!r}")
    wl = arrays.get("wavelengths_nm", arrays.get("wavelengths"))
    return Cube(check_cube(arrays[key], f"{path}:{key}"),
                None if wl is None else np.asarray(wl, dtype=np.float32).ravel(), f"{path}:{key}")


def read_cube(path: str | Path, variable: str | None = None, raster: RasterOptions | None = None) -> Cube:
    """Dispatch on the path: a folder of CAVE PNGs, .mat, .npy/.npz, ENVI .hdr/.img/.raw/.bsq, a photo
    (JPEG/PNG/WebP/BMP/HEIC, a TIFF that is not a raster), a camera raw file, or a GDAL raster
    (.tif/.jp2/.vrt, the [geo] extra; `raster`: its bands, scale, offset, see geo.open_raster)."""
    path = Path(path)
    if path.is_dir():
        return read_cave_scene(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if kind := special_file(path):
        raise DataError(f"{path}: is {kind}, not a file; a cube is read from a regular file or a CAVE folder")
    suffix = path.suffix.lower()
    if raster is None and is_picture(path):  # --bands/--scale/--offset make a TIFF a raster
        picture = read_picture(path)
        return Cube(check_cube(picture.scaled(), str(path)), None, str(path), encoding=picture.encoding)
    if suffix in RAW_SUFFIXES:
        from ssran_edge.data.raw import read_raw

        return read_raw(path)
    if suffix in RASTER_SUFFIXES:
        from ssran_edge.geo import read_raster

        return read_raster(path, raster)
    if suffix == ".mat":
        return read_mat(path, variable)
    if suffix in (".npy", ".npz"):
        return read_numpy(path, variable)
    if suffix in (".hdr", ".img", ".raw", ".bsq", ".bil", ".bip", ".dat") or path.with_suffix(".hdr").is_file():
        return read_envi(path)
    raise DataError(f"{path}: unknown input format {suffix!r} (expected a photo: .jpg .png .webp .bmp .tif .heic; "
                    "a camera raw file: .dng .nef .cr2 .arw...; a cube: .mat .npy .npz, ENVI, a GeoTIFF/JP2; "
                    "or a CAVE folder)")


def read_wavelength_csv(path: str | Path) -> np.ndarray:
    """The 'wavelength_nm' column of a CSV (as in CAVE's and PaviaU's wavelengths_nm.csv)."""
    text = Path(path).read_text().strip().splitlines()
    header = [h.strip() for h in text[0].split(",")]
    if "wavelength_nm" not in header:
        raise DataError(f"{path}: no 'wavelength_nm' column")
    col = header.index("wavelength_nm")
    return np.asarray([float(re.split(",", line)[col]) for line in text[1:] if line.strip()], np.float32)
