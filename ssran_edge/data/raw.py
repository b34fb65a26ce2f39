"""Camera raw files (DNG, NEF, CR2, ARW...) as linear camera-RGB cubes, through LibRaw (rawpy, the [raw] extra).

What comes out: (H/2, W/2, 3) float32 in R, G, B order, proportional to the light each channel measured, in
the camera's own colour space (no colour matrix, no white balance by LibRaw, no gamma, no auto-brightness),
oriented as the file says (the EXIF orientation, applied as LibRaw and photo viewers apply it).

Half size, not demosaicing: each output pixel is one 2x2 Bayer quad (R, the mean of the two greens, B), all
measured values. A demosaic interpolates two of every three values and makes false colour at edges, which
the network would turn into false spectra; raws are 12-45 MP, far more than a model needs, and a quarter of
the pixels is a quarter of the compute. The costs: half the resolution, and R and B sit a quarter of an
output pixel apart inside their quad.

Levels: the Bayer mosaic is binned here with numpy (`raw_image_visible`, `raw_colors_visible`,
`black_level_per_channel`, `white_level`), not by LibRaw's postprocess: the result is exactly
(raw - black) / (white - black) per channel in float32, where postprocess rounds to 16 bits, truncates the
green mean, and by default (adjust_maximum_thr=0.75) rescales to the brightest pixel of the frame, so a
scene's exposure would depend on its content. Negative values (read noise below the black level) are set to
0 after binning; values are not clipped above (see Balance).

Balance: channels are scaled so that a flat spectrum gives equal values in R, G and B, the convention of the
models' SRFs (rows normalised to unit sum). For a bundled camera (`BUNDLED_CAMERAS`, matched on the EXIF
Make and Model) the gains come from its curves: 1 / sum over wavelength of each curve, scaled so green's is
1. Otherwise LibRaw's daylight multipliers (a colour matrix from the DNG or LibRaw's camera table): close to,
not exactly, a flat spectrum; failing those the camera's as-shot multipliers; failing those none. Each
choice but the first is said in one INFO line. Highlights may exceed 1 after the gains: they are kept.

Not supported (DataError naming it): X-Trans (6x6 filter pattern), Foveon and linear DNGs (already three
values per pixel, e.g. Apple ProRAW), monochrome and CMYG sensors: only 2x2 RGB Bayer mosaics.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ssran_edge.data.cube import Cube, check_cube
from ssran_edge.errors import DataError, one_line, shown_path
from ssran_edge.extras import require
from ssran_edge.srf import load_srf

log = logging.getLogger("ssran_edge")

# LibRaw reads these; not .raw, which is ENVI data here
RAW_SUFFIXES = (".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
                ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".mef", ".mos", ".kdc", ".dcr")

# `_camera_key(make, model)` -> the bundled SRF (ssran_edge/srfs) measured on that camera
BUNDLED_CAMERAS = {"NIKON D700": "nikon_d700"}


def read_raw(path: str | Path) -> Cube:
    """A camera raw file as a half-size linear RGB cube, balanced for a flat spectrum (see the module doc)."""
    path = Path(path)
    name = shown_path(path)
    require("raw", f"{name} (a camera raw file)")
    if not path.is_file():
        raise DataError(f"{name}: no such file")
    make, model = exif_make_model(path)
    bundled = BUNDLED_CAMERAS.get(_camera_key(make, model))
    rgb, daylight, as_shot = _decode(path, name)
    camera = bundled or _camera_label(make, model)
    gains = _srf_gains(bundled, name) if bundled else _libraw_gains(daylight, as_shot, camera, name)
    rgb *= gains
    return Cube(check_cube(rgb, name), source=str(path), encoding="linear", camera=camera)


def raw_camera(path: str | Path) -> str | None:
    """The camera a raw file was taken with: its bundled SRF's name when it has one, else "Make Model"
    from the EXIF, else None (not a TIFF-structured raw, e.g. CR3 or RAF, or no such tags)."""
    make, model = exif_make_model(Path(path))
    return BUNDLED_CAMERAS.get(_camera_key(make, model)) or _camera_label(make, model)


# --- camera identity ----------------------------------------------------------------------------------


def exif_make_model(path: Path) -> tuple[str, str]:
    """TIFF tags 271 Make and 272 Model of IFD0 ("" when absent or unreadable). rawpy does not expose
    LibRaw's make/model; DNG, NEF, CR2, ARW, PEF, ORF, RW2... are TIFF-structured (ORF and RW2 with their
    own magic number, hence the IFD read directly rather than Image.open)."""
    from PIL import TiffImagePlugin

    try:
        with open(path, "rb") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on corrupt tags; LibRaw decides whether the file is bad
            head = file.read(8)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return "", ""
            order = "little" if head[:2] == b"II" else "big"
            magic = b"*\0" if order == "little" else b"\0*"
            ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=head[:2] + magic + bytes(4))
            file.seek(int.from_bytes(head[4:8], order))
            ifd.load(file)
            return _tag_text(ifd.get(271)), _tag_text(ifd.get(272))
    except Exception:  # metadata only: whatever Pillow cannot parse, LibRaw accepts or refuses below
        return "", ""


def _tag_text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return " ".join(value.replace("\0", " ").split()) if isinstance(value, str) else ""


def _camera_key(make: str, model: str) -> str:
    """"NIKON CORPORATION" + "NIKON D700" -> "NIKON D700": the make's first word, upper case, then the model
    without a leading repeat of it (EXIF models often start with the brand, sometimes not)."""
    brand = make.split()[0].upper() if make.split() else ""
    words = model.upper().split()
    if words and words[0] == brand:
        words = words[1:]
    return " ".join([brand, *words]).strip()


def _camera_label(make: str, model: str) -> str | None:
    """"Make Model" as a person reads it, without the brand twice ("Canon" + "Canon EOS R5" -> "Canon EOS R5")."""
    brand = make.split()[0] if make.split() else ""
    if brand and model.upper().startswith(brand.upper()):
        return model
    return " ".join(part for part in (make, model) if part) or None


# --- LibRaw -------------------------------------------------------------------------------------------


def _decode(path: Path, name: str) -> tuple[np.ndarray, list[float], list[float]]:
    """(binned, oriented RGB in [0, 1], daylight multipliers, as-shot multipliers) from LibRaw."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            positions = _quad_positions(raw, rawpy, name)
            colours = raw.raw_colors_visible[:2, :2].ravel()
            black = np.asarray(raw.black_level_per_channel, dtype=np.float32)[colours]
            rgb = _bin(raw.raw_image_visible, positions, black, float(raw.white_level), name)
            flip = raw.sizes.flip
            daylight, as_shot = list(raw.daylight_whitebalance), list(raw.camera_whitebalance)
    except (rawpy.LibRawError, OSError, RuntimeError) as exc:  # RuntimeError: rawpy's NotImplementedError
        raise DataError(f"{name}: unreadable raw file ({_reason(exc)})") from None
    return _orient(rgb, flip), daylight, as_shot


def _reason(exc: BaseException) -> str:
    """rawpy's messages are LibRaw's bytes (b'Input/output error'): decoded, with the error's type."""
    text = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    return one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _quad_positions(raw, rawpy, name: str) -> dict[str, list[int]]:
    """Where R, G and B sit in a 2x2 quad (positions 0-3, row-major); DataError for any other sensor."""
    if raw.raw_type != rawpy.RawType.Flat:
        _unsupported(name, "not a colour mosaic: three values per pixel already (a Foveon sensor, or a linear "
                           "DNG such as Apple ProRAW)")
    pattern = raw.raw_pattern
    size = pattern.shape[0] if pattern is not None else 0
    if size == 6:
        _unsupported(name, "a Fujifilm X-Trans sensor (6x6 colour filter pattern)")
    if size == 1:
        _unsupported(name, "a monochrome sensor (no colour filters)")
    if pattern is None or pattern.shape != (2, 2) or min(raw.sizes.height, raw.sizes.width) < 2:
        _unsupported(name, f"a {'x'.join(map(str, getattr(pattern, 'shape', ())))} colour filter pattern")
    letters = [chr(raw.color_desc[c]) for c in raw.raw_colors_visible[:2, :2].ravel()]
    if sorted(letters) != ["B", "G", "G", "R"]:
        _unsupported(name, f"{''.join(letters)} colour filters")
    return {c: [i for i, letter in enumerate(letters) if letter == c] for c in "RGB"}


def _unsupported(name: str, what: str) -> None:
    raise DataError(f"{name}: unsupported raw file: {what}; only 2x2 RGB Bayer mosaics are read")


def _bin(mosaic: np.ndarray, positions: dict[str, list[int]], black: np.ndarray, white: float,
         name: str) -> np.ndarray:
    """(H/2, W/2, 3): per quad, (value - black) / (white - black) of R, of the mean of the greens, of B.
    `black` is per quad position. An odd last row or column has no full quad and is dropped."""
    if white <= black.max():
        raise DataError(f"{name}: unreadable raw file (white level {white:g} not above black level {black.max():g})")
    h, w = mosaic.shape[0] // 2, mosaic.shape[1] // 2
    quads = mosaic[: 2 * h, : 2 * w].reshape(h, 2, w, 2)
    rgb = np.empty((h, w, 3), dtype=np.float32)
    clipped = np.zeros((h, w), dtype=bool)
    for channel, letter in enumerate("RGB"):
        rgb[..., channel] = 0
        for i in positions[letter]:
            sample = quads[:, i // 2, :, i % 2]
            clipped |= sample >= white
            rgb[..., channel] += (sample.astype(np.float32) - black[i]) / (white - black[i])
        rgb[..., channel] /= len(positions[letter])
    if clipped.any():  # a clipped channel is a wrong colour, so a wrong spectrum, at that pixel
        log.info("%s: %.3g%% of pixels reach the sensor's white level (clipped highlights: wrong colour there)",
                 name, 100 * clipped.mean())
    return np.maximum(rgb, 0, out=rgb)  # below black is read noise; no light is negative


def _orient(rgb: np.ndarray, flip: int) -> np.ndarray:
    """LibRaw's `flip` (from the EXIF orientation) as LibRaw's own output applies it: bit 2 flips rows,
    bit 1 flips columns, then bit 4 transposes (dcraw's flip_index)."""
    if flip & 2:
        rgb = rgb[::-1]
    if flip & 1:
        rgb = rgb[:, ::-1]
    if flip & 4:
        rgb = rgb.transpose(1, 0, 2)
    return np.ascontiguousarray(rgb)


# --- balance ------------------------------------------------------------------------------------------


def _srf_gains(srf_name: str, name: str) -> np.ndarray:
    """1 / sum of each curve, green's gain 1: a flat spectrum then gives R = G = B. A plain sum over the
    CSV's samples, as the models normalise their SRF rows (same grid: 10 nm)."""
    srf = load_srf(srf_name)
    sums = dict(zip(srf.band_names, srf.curves.sum(axis=0), strict=True))
    gains = np.array([sums["G"] / sums[c] for c in "RGB"], dtype=np.float32)
    log.info("%s: balanced for a flat spectrum with the bundled %s curves (R x%.3f, B x%.3f)",
             name, srf_name, gains[0], gains[2])
    return gains


def _libraw_gains(daylight: list[float], as_shot: list[float], camera: str | None, name: str) -> np.ndarray:
    who = f"{camera} is not a bundled camera" if camera else "the file names no camera"
    if (gains := _multipliers(daylight)) is not None:
        log.info("%s: balanced with LibRaw's daylight multipliers (R x%.3f, B x%.3f): %s; daylight is close "
                 "to, not exactly, a flat spectrum", name, gains[0], gains[2], who)
        return gains
    if (gains := _multipliers(as_shot)) is not None:
        log.info("%s: balanced with the camera's as-shot multipliers (R x%.3f, B x%.3f): %s and LibRaw has no "
                 "daylight ones; the scene's light, not a flat spectrum, comes out grey", name, gains[0],
                 gains[2], who)
        return gains
    log.info("%s: not balanced (raw camera response): %s and LibRaw has neither daylight nor as-shot "
             "multipliers for it", name, who)
    return np.ones(3, dtype=np.float32)


def _multipliers(values: list[float]) -> np.ndarray | None:
    """LibRaw's R, G, B, G2 multipliers as R, G, B gains with green 1; None when it has none: any zero, or
    exactly 1, 1, 1 (LibRaw's placeholder when it has no colour data for the camera)."""
    r, g, b, g2 = (float(v) for v in values[:4])
    if g2 > 0:  # the second green's own multiplier, when LibRaw keeps one
        g = (g + g2) / 2
    if min(r, g, b) <= 0 or (r, g, b) == (1.0, 1.0, 1.0) or not np.isfinite([r, g, b]).all():
        return None
    return np.array([r / g, 1.0, b / g], dtype=np.float32)
