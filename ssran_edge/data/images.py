"""Photos in: JPEG, PNG, WebP, BMP, GIF, TIFF without georeferencing and (the [heic] extra) HEIC, each
decoded the same way wherever it enters (`predict`, `run`, folders of frames, training) by `read_picture`.

The decoder is Pillow: it reads every one of these formats and the metadata that changes the pixels (EXIF
orientation, an embedded ICC profile, PNG's gAMA). One exception, measured: Pillow keeps only the top 8
bits of a 16-bit *colour* PNG/TIFF, so those pixels are read by OpenCV (which ignores orientation and ICC;
both are still taken from Pillow and applied here, so the result does not depend on which library read it).

What comes out is a `Picture`: the integer codes (H, W, 3) in R, G, B order, and the encoding the file
says they are in (the table in docs/inputs.md):
  * 8-bit anything -> sRGB; 16-bit PNG/TIFF -> sRGB unless the file says linear (PNG gAMA 1.0, or an
    ICC profile whose tone curve is linear); a multi-page TIFF (one band per page) -> linear.
  * An ICC profile other than sRGB (a phone's Display P3) is converted to sRGB with ImageCms first, and
    the log says so; a profile that cannot be parsed is refused (its colours would be guessed).
  * Orientation applied; alpha dropped; palette and grey converted to RGB (grey: R = G = B).
  * Refused in one line: CMYK and other non-RGB colour modes, animated GIF/PNG/WebP (frames of an
    animation are not one picture: extract them to a folder), images under MIN_SIDE px, truncated files.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssran_edge.data.cube import Encoding
from ssran_edge.errors import DataError, MissingExtra, one_line, shown_path

log = logging.getLogger("ssran_edge")

HEIF_SUFFIXES = (".heic", ".heif", ".hif")
TIFF_SUFFIXES = (".tif", ".tiff")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif") + HEIF_SUFFIXES
MIN_SIDE = 8  # px: below this an "image" is an icon or a tracking pixel, not a scene
_GEOTIFF_TAGS = (33550, 33922, 34264, 34735)  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeys
_ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")  # MPO (stereo JPEG) and HEIC sequences: the primary image is used


@dataclass(frozen=True)
class Picture:
    """A decoded image file: `codes` (H, W, C) uint8 or uint16, colour in R, G, B order (C = 3), or one
    band per page of a multi-page TIFF; `encoding` as the file says."""

    codes: np.ndarray
    encoding: Encoding
    source: str

    @property
    def bits(self) -> int:
        return self.codes.dtype.itemsize * 8

    def scaled(self) -> np.ndarray:
        """The codes divided by full scale (255 or 65535): float32 in [0, 1], still in `encoding`."""
        from ssran_edge.encoding import scaled_codes

        return scaled_codes(self.codes)


def is_picture(path: Path) -> bool:
    """A file `read_picture` reads: a photo suffix, or a TIFF that is an image rather than a raster."""
    suffix = path.suffix.lower()
    return suffix in PHOTO_SUFFIXES or (suffix in TIFF_SUFFIXES and is_photo_tiff(path))


def is_photo_tiff(path: Path) -> bool:
    """A TIFF that is a picture (1-4 integer samples of at most 16 bits, no GeoTIFF tags; or a multi-page
    band stack) rather than a raster for GDAL (georeferenced, float, or more bands): the encoding rule
    depends on it. A TIFF Pillow cannot open at all goes to GDAL too, whose error then names it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            tags = im.tag_v2
            if any(t in tags for t in _GEOTIFF_TAGS) or 3 in _as_tuple(tags.get(339, 1)):  # 339 SampleFormat: 3 = float
                return False
            return int(tags.get(277, 1)) <= 4 and max(_as_tuple(tags.get(258, 8))) <= 16
    except Exception:  # noqa: BLE001 - not a TIFF Pillow reads: the raster reader says why
        return False


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


# EXIF orientation (tag 0x0112) -> how to turn the stored pixels upright, on an (H, W, C) array.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels as stored -> upright, as EXIF orientation 1-8 says (what Pillow's exif_transpose does)."""
    turn = _ORIENT.get(int(orientation))
    return np.ascontiguousarray(turn(array)) if turn else array


def read_picture(path: str | Path) -> Picture:
    """Decode one image file (see the module's docstring for what is accepted, converted and refused)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() in HEIF_SUFFIXES:
        _register_heif(path)
    try:
        with Image.open(path) as im:
            return _decode(path, im)
    except (DataError, MissingExtra):
        raise
    except MemoryError:
        raise DataError(f"{path}: too large for this machine's memory") from None
    except Exception as exc:  # Pillow raises many types: UnidentifiedImageError, OSError (truncated), SyntaxError...
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {one_line(exc)})") from None


def encode_picture(codes: np.ndarray, jpeg: int = 0) -> bytes:
    """(H, W, 3) uint8 sRGB codes as the bytes of a JPEG of quality `jpeg` (4:2:0 chroma, as cameras and
    most encoders write) or, with 0, a PNG: what the capture chain writes (ssran_edge.conditions.photo)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(codes), "RGB")
    if jpeg:
        image.save(buffer, "JPEG", quality=int(jpeg), subsampling=2)  # 2 = 4:2:0
    else:
        image.save(buffer, "PNG", compress_level=0)  # lossless at any level; 0 is the fastest
    return buffer.getvalue()


def decode_picture(data: bytes, name: str = "picture") -> Picture:
    """`read_picture` for a file's bytes in memory: the same decoder and rules."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return _decode(Path(name), im, data)


def _register_heif(path: Path) -> None:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        raise MissingExtra(f"{shown_path(path)} (a HEIC/HEIF photo): needs the [heic] extra: "
                           "pip install 'ssran-edge[heic]'") from None
    register_heif_opener()


def _decode(path: Path, im, data: bytes | None = None) -> Picture:
    """The picture `im` opened from `path` (or from `data`, the file's bytes, named `path`)."""
    fmt = im.format or path.suffix.lstrip(".").upper()
    frames = getattr(im, "n_frames", 1)
    if fmt == "TIFF" and frames > 1:
        return _band_stack(path, im, frames)
    if frames > 1 and fmt in _ANIMATED_FORMATS and getattr(im, "is_animated", False):
        raise DataError(f"{path}: an animated {fmt} ({frames} frames), not one picture; extract its frames to a "
                        f"folder (ffmpeg -i {path.name} frames/%05d.png) and run the folder")
    width, height = im.size
    if min(width, height) < MIN_SIDE:
        raise DataError(f"{path}: {width}x{height} px; an image needs at least {MIN_SIDE}x{MIN_SIDE} px")
    orientation = int(im.getexif().get(0x0112, 1) or 1)
    icc = im.info.get("icc_profile")
    profile = _profile(path, icc, im.mode) if icc else None
    bits = _stored_bits(path, im, fmt, data)
    if bits == 16 and im.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        codes = _colour16(path, im)  # Pillow would keep 8 of the 16 bits
    else:
        im.load()  # a truncated file fails here, inside read_picture's one-line handler
        im, codes = _eight_or_grey16(path, im, profile)
    codes = orient(codes, orientation)
    if codes.shape[2] == 1:  # grey: R = G = B, so an RGB model takes it
        codes = np.repeat(codes, 3, axis=2)
    encoding = _encoding(path, im, bits, profile)
    return Picture(codes, encoding, str(path))


def _stored_bits(path: Path, im, fmt: str, data: bytes | None = None) -> int:
    """Bits per sample as stored (Pillow's mode hides 16-bit colour): PNG's IHDR, TIFF's BitsPerSample."""
    if fmt == "PNG":  # IHDR's bit depth
        if data is None:
            with open(path, "rb") as f:
                data = f.read(26)
        header = data[:26]
        return header[24] if len(header) == 26 else 8
    if fmt == "TIFF":
        return max(int(b) for b in _as_tuple(im.tag_v2.get(258, 8)))
    return 16 if im.mode.startswith("I;16") else 8


def _profile(path: Path, icc: bytes, mode: str):
    """The embedded ICC profile, parsed; one that cannot be parsed is refused: its colours are unknown."""
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
    except Exception as exc:  # noqa: BLE001 - littleCMS refuses damaged profiles with several types
        raise DataError(f"{path}: its embedded ICC colour profile is broken ({one_line(exc) or type(exc).__name__}); "
                        "re-save the image with a valid profile, or without one (then it is read as sRGB)") from None
    colour = mode in ("RGB", "RGBA", "P", "PA")
    if colour and space != "RGB" or not colour and space not in ("GRAY", "RGB"):
        raise DataError(f"{path}: its ICC profile is for {space} pixels, but the image is {mode}")
    return profile


def _description(profile) -> str:
    from PIL import ImageCms

    return (ImageCms.getProfileDescription(profile) or "").strip() or "unnamed"


def _is_srgb(profile) -> bool:
    return "srgb" in _description(profile).lower().replace(" ", "")


def _eight_or_grey16(path: Path, im, profile):
    """8-bit pixels (any mode Pillow decodes to RGB/grey) and 16-bit grey, as codes; a non-sRGB ICC profile
    converted to sRGB on 8-bit colour."""
    from PIL import ImageCms

    mode = im.mode
    if mode in ("CMYK", "YCbCr", "LAB", "HSV") or mode.startswith("F"):
        raise DataError(f"{path}: {mode} pixels; convert the image to RGB first (only RGB and grey are decoded)")
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    elif mode in ("1", "LA", "La"):
        im = im.convert("L")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        im = im.convert("RGB")  # alpha says where the picture is, not how much light: dropped
    if profile is not None and im.mode == "RGB" and not _is_srgb(profile):
        srgb = ImageCms.createProfile("sRGB")
        im = ImageCms.profileToProfile(im, profile, srgb, outputMode="RGB")
        log.info("%s: converted its ICC profile (%s) to sRGB", path.name, _description(profile))
    codes = np.asarray(im)
    if codes.dtype.kind == "i" or codes.dtype.byteorder not in ("=", "|"):  # "I" / "I;16B": grey, 16-bit
        codes = codes.astype(np.uint16)
    if codes.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: {im.mode} pixels ({codes.dtype}); only 8- and 16-bit images are decoded")
    return im, codes if codes.ndim == 3 else codes[:, :, None]


def _colour16(path: Path, im) -> np.ndarray:
    """16-bit colour pixels through OpenCV (BGR(A) -> RGB, alpha dropped), checked against Pillow's size."""
    import cv2  # a base dependency (opencv-python-headless)

    level = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    try:
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF turn, no 8-bit reduction
    except cv2.error:
        array = None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if array is None or array.shape[:2] != im.size[::-1] or array.dtype != np.uint16:
        raise DataError(f"{path}: unreadable 16-bit image (truncated or damaged)")
    if array.ndim == 2:
        return array[:, :, None]
    channels = array.shape[2]
    return array[:, :, :1] if channels == 2 else np.ascontiguousarray(array[:, :, 2::-1])


def _band_stack(path: Path, im, frames: int) -> Picture:
    """A multi-page TIFF: one band per page (a multispectral camera's stack), linear."""
    pages = []
    for page in range(frames):
        im.seek(page)
        im.load()
        pages.append(np.asarray(im))
    if len({(p.shape, p.dtype) for p in pages}) != 1 or pages[0].ndim != 2:
        raise DataError(f"{path}: TIFF pages differ in size or bit depth, or are not single-band")
    codes = np.stack(pages, axis=2)
    if codes.dtype.kind == "i" or codes.dtype.byteorder not in ("=", "|"):
        codes = codes.astype(np.uint16)
    return Picture(codes, "linear", str(path))


def _encoding(path: Path, im, bits: int, profile) -> Encoding:
    """The file's word on its encoding: PNG gAMA 1.0 or a linear ICC tone curve say linear; else sRGB."""
    gamma = im.info.get("gamma")
    if isinstance(gamma, (int, float)) and abs(float(gamma) - 1.0) < 0.01:
        return "linear"
    if profile is not None and bits == 16:
        if _linear_curve(profile):
            return "linear"
        if not _is_srgb(profile):
            log.warning("%s: its ICC profile (%s) is not applied to 16-bit pixels (ImageCms converts 8-bit "
                        "ones); decoded as sRGB", path.name, _description(profile))
    return "srgb"


def _linear_curve(profile) -> bool:
    """Whether the profile's tone curve is linear: its mid-grey, converted to sRGB, lands near code 188
    (linear 0.5 encoded), not near 128 as a gamma curve's does."""
    from PIL import Image, ImageCms

    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2), "RGB")
    if profile.profile.xcolor_space.strip() != "RGB":
        return False
    out = np.asarray(ImageCms.profileToProfile(ramp, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"))
    return float(out[0, 128].mean()) > 165
