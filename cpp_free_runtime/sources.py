"""Frame sources for the stream pipeline: folders of frames, single MSI files, very large scenes read
window by window, GDAL rasters, and hyperspectral cubes replayed through an SRF as a simulated camera;
cameras and video live in `capture.py`. `open_source(spec)` picks one from a command-line string.

Band order: every source here hands out RGB order (band 0 = red), the order of the bundled RGB SRFs
(nikon_d700: R, G, B). Pixel values: photos and video are handed out as their 8/16-bit codes with the
encoding their file says (`Frame.encoding`; the stream decodes them to linear); raw files as linear
values balanced like the models' cameras; .npy/.npz/.mat/ENVI values pass through as stored (as
`read_cube` gives them).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ssran_edge.data.cube import RASTER_SUFFIXES, Cube, RasterOptions
from ssran_edge.data.images import PHOTO_SUFFIXES, TIFF_SUFFIXES, is_picture, read_picture
from ssran_edge.data.raw import RAW_SUFFIXES
from ssran_edge.data.readers import (
    check_cube,
    check_npy_header,
    envi_files,
    envi_wavelengths,
    read_cube,
)
from ssran_edge.errors import SourceError, SSRANEdgeError, one_line
from ssran_edge.runtime.capture import (
    STREAM_SCHEMES,
    VIDEO_EXTENSIONS,
    VideoSource,
    redact,
)
from ssran_edge.runtime.frames import Frame, Source, release_pages, require_file

log = logging.getLogger("ssran_edge.runtime")

IMAGE_EXTENSIONS = PHOTO_SUFFIXES + TIFF_SUFFIXES + RAW_SUFFIXES  # through read_cube's picture/raw readers
CUBE_EXTENSIONS = (".npy", ".npz", ".mat")
ENVI_EXTENSIONS = (".hdr", ".img")  # the header, or the data file beside it
LARGE_SCENE_BYTES = 512 * 2**20  # above this a single file is read in windows, never whole
ACCEPTED_FORMS = ("camera_stream (bundled demo scene as a simulated camera), camera_stream:<device|url|file>, "
                  "a device index (0), rtsp://... or http://..., a GStreamer pipeline (contains '!'), "
                  "replay:<cube> (a hyperspectral cube through --srf), a folder of frames, "
                  "a video file (.mp4 .avi .mkv .mov), a photo (.jpg .png .webp .bmp .tif .heic), "
                  "a camera raw file (.dng .nef .cr2 .arw...; the [raw] extra), "
                  "an MSI file (.npy .npz .mat, ENVI .hdr/.img), "
                  "a GDAL raster (.tif .jp2 .vrt: GeoTIFF, COG, Sentinel-2; the [geo] extra)")


def _wavelength_list(cube: Cube) -> list[float] | None:
    return None if cube.wavelengths is None else [float(w) for w in cube.wavelengths]


def _read_cube(path: Path, variable: str | None = None) -> Cube:
    """`read_cube`, with its errors turned into one-line SourceErrors."""
    try:
        return read_cube(path, variable)
    except SSRANEdgeError as exc:
        raise SourceError(one_line(exc)) from None


class FolderSource(Source):
    """A folder of frames in name order, each file one multi-band frame: photos (JPEG, PNG, WebP, BMP,
    TIFF, HEIC: their codes and encoding; a multi-page TIFF = one band per page), camera raw files,
    .npy/.npz (H, W, B) and ENVI (.hdr beside its data). Other files are skipped. Every frame must have
    the same band count."""

    live = False

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: no such folder")
        self.name = str(self.folder)
        self.files: list[Path] = []
        self._position = 0
        self._opened = False
        self._first: Cube | None = None

    def open(self) -> None:
        if self._opened:
            return
        readable = IMAGE_EXTENSIONS + (".npy", ".npz", ".hdr")
        entries = sorted(p for p in self.folder.iterdir() if p.is_file())
        self.files = [p for p in entries if p.suffix.lower() in readable]
        skipped = len(entries) - len(self.files)
        if skipped:  # ENVI data files (.img, .raw...) are read through their .hdr, so not counted as lost
            log.debug("%s: skipped %d files of other types", self.folder, skipped)
        if not self.files:
            raise SourceError(f"{self.folder}: no frames (expected {', '.join(readable)} files)")
        # The first frame now: its band count is checked against the model before any output is opened.
        self._first = self._load(self.files[0])
        self.bands, self.wavelengths = self._first.bands, _wavelength_list(self._first)
        self.encoding, self.camera = self._first.encoding, self._first.camera
        self._opened = True

    @staticmethod
    def _load(path: Path) -> Cube:
        """A frame's file; a picture keeps its integer codes (decoded in the stream by one table lookup)."""
        if path.suffix.lower() in PHOTO_SUFFIXES + TIFF_SUFFIXES and is_picture(path):
            try:
                picture = read_picture(path)
            except SSRANEdgeError as exc:
                raise SourceError(one_line(exc)) from None
            return Cube(picture.codes, None, str(path), encoding=picture.encoding)
        return _read_cube(path)

    def read(self) -> Frame | None:
        self.open()
        if self._position >= len(self.files):
            return None
        path = self.files[self._position]
        if self._position == 0 and self._first is not None:
            cube, self._first = self._first, None
        else:
            cube = self._load(path)
        if cube.bands != self.bands:
            raise SourceError(f"{path}: {cube.bands} bands, but earlier frames in {self.folder} have {self.bands}")
        frame = Frame(self._position, cube.data, time.monotonic(), encoding=cube.encoding, camera=cube.camera,
                      meta={"path": str(path)})
        self._position += 1
        return frame


class FileSource(Source):
    """A single file (a photo, a raw file, .npy, .npz, .mat, ENVI) as a one-frame stream, read whole via
    `read_cube`."""

    live = False
    single_frame = True

    def __init__(self, path: str | Path, *, variable: str | None = None) -> None:
        self.path = Path(path)
        require_file(self.path)
        self.variable = variable
        self.name = str(self.path)
        self._cube: Cube | None = None
        self._done = False

    def open(self) -> None:
        if self._cube is None:
            self._cube = _read_cube(self.path, self.variable)
            self.bands = self._cube.bands
            self.wavelengths = _wavelength_list(self._cube)
            self.encoding, self.camera = self._cube.encoding, self._cube.camera

    def read(self) -> Frame | None:
        if self._done:
            return None
        self.open()
        assert self._cube is not None
        self._done = True
        return Frame(0, self._cube.data, time.monotonic(), encoding=self._cube.encoding, camera=self._cube.camera,
                     meta={"path": str(self.path)})

    def close(self) -> None:
        self._cube = None


# --- very large scenes -------------------------------------------------------------------------------

def _open_scene(path: Path) -> tuple[np.ndarray, list[float] | None]:
    """A memory-mapped (H, W, B) view of a .npy or ENVI scene: nothing is read until sliced."""
    require_file(path)
    try:
        if path.suffix.lower() == ".npy":
            check_npy_header(path, read_whole=False)  # a truncated or lying header: our words, not mmap's
            scene = np.load(path, mmap_mode="r", allow_pickle=False)
            wavelengths = None
        else:
            import spectral.io.envi as envi

            header, data_file = envi_files(path, read_whole=False)
            image = envi.open(str(header), str(data_file))
            scene = image.open_memmap(interleave="bip")  # (rows, cols, bands) view whatever the file's interleave
            found = envi_wavelengths(image.metadata, str(path))
            wavelengths = None if found is None else [float(w) for w in found]
    except SourceError:
        raise
    except SSRANEdgeError as exc:
        raise SourceError(one_line(exc)) from None
    except Exception as exc:  # numpy/spectral raise many types for bad headers and truncated files
        raise SourceError(f"{path}: cannot memory-map scene ({type(exc).__name__}: {one_line(exc)})") from None
    if scene.ndim == 2:
        scene = scene[:, :, None]
    if scene.ndim != 3 or min(scene.shape) == 0 or scene.dtype.kind not in "fiub":
        raise SourceError(f"{path}: expected a numeric (H, W, bands) scene, got {scene.dtype} {scene.shape}")
    return scene, wavelengths


def scene_bytes(path: str | Path) -> int:
    """Size of a scene's pixel data (.npy file size; ENVI rows*cols*bands*bytes from its header)."""
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz", ".mat"):
        return path.stat().st_size
    scene, _ = _open_scene(path)
    return int(scene.nbytes)


class WindowedSceneSource(Source):
    """A scene too large for memory, read in `window` x `window` windows (row-major) with `halo` pixels
    of context on each side (clipped at the borders). Each Frame's `region` = (row0, col0, H, W) places
    data[0, 0] in the full scene; `core` = (r0, r1, c0, c1) within data are the pixels it owns. The cores
    tile the scene exactly. Only one window is in memory at a time."""

    live = False
    encoding = "linear"  # a scene file or raster holds linear values: known before it opens

    def __init__(self, path: str | Path, *, window: int = 1024, halo: int = 8) -> None:
        if window < 1 or halo < 0:
            raise SourceError(f"{path}: window must be >= 1 and halo >= 0 (got {window}, {halo})")
        self.path, self.window, self.halo = Path(path), int(window), int(halo)
        self.name = str(self.path)
        self._scene: np.ndarray | None = None
        self._size = (0, 0)  # scene height, width
        self._origins: list[tuple[int, int]] = []
        self._position = 0
        require_file(self.path)

    def _plan(self, height: int, width: int) -> None:
        self._size = (height, width)
        self._origins = [(r, c) for r in range(0, height, self.window) for c in range(0, width, self.window)]

    def open(self) -> None:
        if self._scene is not None:
            return
        self._scene, self.wavelengths = _open_scene(self.path)
        height, width, self.bands = self._scene.shape
        self._plan(height, width)
        log.info("%s: %dx%dx%d scene in %d windows of %d (+%d halo)", self.name, height, width, self.bands,
                 len(self._origins), self.window, self.halo)

    @property
    def windows(self) -> int:
        self.open()
        return len(self._origins)

    def read(self) -> Frame | None:
        self.open()
        if self._position >= len(self._origins):
            return None
        height, width = self._size
        r, c = self._origins[self._position]
        r_end, c_end = min(r + self.window, height), min(c + self.window, width)
        row0, col0 = max(r - self.halo, 0), max(c - self.halo, 0)
        row1, col1 = min(r_end + self.halo, height), min(c_end + self.halo, width)
        try:
            data, valid = self._read_window(row0, row1, col0, col1)
        except SSRANEdgeError as exc:
            raise SourceError(one_line(exc)) from None
        frame = Frame(self._position, data, time.monotonic(), region=(row0, col0, height, width),
                      core=(r - row0, r_end - row0, c - col0, c_end - col0), valid=valid,
                      meta={"window": self._position, "windows": len(self._origins)})
        self._position += 1
        return frame

    def _read_window(self, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The pixels of rows row0:row1, cols col0:col1 as float32, and their valid mask (None: all valid)."""
        assert self._scene is not None
        label = f"{self.path} window {self._position} (rows {row0}:{row1}, cols {col0}:{col1})"
        data = check_cube(np.array(self._scene[row0:row1, col0:col1], dtype=np.float32), label)  # reads just this
        release_pages(self._scene)  # keep memory bounded by the window, not the scene
        return data, None

    def close(self) -> None:
        self._scene = None  # drops the memmap (and its file handle)
        self._position = 0


# Windows of 512 px: a 31-band float32 output window is 33 MB, and a run holds (queue + 3) of them; at
# 1024 px an 8192^2 GeoTIFF peaked at 1.71 GB. The halo costs 6 % more pixels than at 1024 (3 %).
RASTER_WINDOW = 512


class RasterSource(WindowedSceneSource):
    """A GDAL raster (GeoTIFF, COG, JP2, VRT...) through rasterio, read window by window like any large
    scene, whatever its size: windows (RASTER_WINDOW px) are whole multiples of the file's blocks, so each block is
    decompressed once per window. Bands are chosen and calibrated as `options` say (see
    `geo.open_raster`); each Frame's `valid` marks the pixels that are not nodata. `geo` is the
    raster's GeoInfo, for a georeferenced output."""

    def __init__(self, path: str | Path, *, window: int | None = None, halo: int = 8,
                 options: RasterOptions | None = None) -> None:
        super().__init__(path, window=window or 1024, halo=halo)
        self._requested_window = window
        self._options = options
        self._raster: Any = None

    def open(self) -> None:
        if self._raster is not None:
            return
        from ssran_edge.geo import open_raster

        try:
            self._raster = open_raster(self.path, self._options)
        except SSRANEdgeError as exc:
            raise SourceError(one_line(exc)) from None
        raster = self._raster
        self.bands, self.geo = raster.bands, raster.geo
        self.wavelengths = None if raster.wavelengths is None else [float(w) for w in raster.wavelengths]
        if not self._requested_window:  # RASTER_WINDOW, rounded to whole blocks (a striped file: whole strips)
            bh, bw = raster.block_shape
            self.window = max(bh * max(1, round(RASTER_WINDOW / bh)) if bh <= RASTER_WINDOW else RASTER_WINDOW,
                              bw * max(1, round(RASTER_WINDOW / bw)) if bw <= RASTER_WINDOW else RASTER_WINDOW)
        self._plan(raster.height, raster.width)
        log.info("%s: %dx%dx%d raster (%s, blocks %dx%d) in %d windows of %d (+%d halo)", self.name, raster.height,
                 raster.width, raster.bands, raster.geo.driver, *raster.block_shape, len(self._origins), self.window,
                 self.halo)

    def _read_window(self, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray | None]:
        data, valid = self._raster.read(row0, row1, col0, col1)
        return data, (None if valid.all() else valid)

    def close(self) -> None:
        if self._raster is not None:
            self._raster.close()
            self._raster = None
        self._position = 0


# --- simulated camera ----------------------------------------------------------------------------------

class ReplaySource(Source):
    """A hyperspectral cube through an SRF as a simulated camera: every frame is simulate_msi(cube, D),
    repeated `frames` times. With no cube the bundled demo scene is used; with no SRF, nikon_d700 (RGB).
    The ground-truth cube is `.reference` (for quality metrics). `wavelengths` is None (SRF bands are
    not single wavelengths); `band_names` names them."""

    live = False

    def __init__(self, cube: str | Path | None = None, srf: Any = None, *, frames: int = 1,
                 variable: str | None = None) -> None:
        from ssran_edge.srf import SRF, load_srf

        if frames < 1:
            raise SourceError(f"replay: frames must be >= 1, got {frames}")
        self.cube_path = None if cube is None or str(cube) == "" else Path(cube)
        self.variable, self.frames = variable, int(frames)
        self.single_frame = self.frames == 1
        try:
            self.srf: SRF = srf if isinstance(srf, SRF) else load_srf(srf or "nikon_d700")
        except SSRANEdgeError as exc:
            raise SourceError(one_line(exc)) from None
        if self.cube_path is not None and not self.cube_path.exists():
            raise SourceError(f"replay: {self.cube_path}: no such file or folder")
        self.name = f"replay:{self.cube_path or 'demo'}@{self.srf.name}"
        self.camera = self.srf.name
        self.band_names: list[str] = list(self.srf.band_names)
        self.bands = self.srf.bands
        self.wavelengths = None
        self.hsi_wavelengths: list[float] | None = None
        self._reference: np.ndarray | None = None
        self._msi: np.ndarray | None = None
        self._position = 0

    def open(self) -> None:
        if self._msi is not None:
            return
        from ssran_edge.srf import simulate_msi

        if self.cube_path is None:
            from ssran_edge.assets import demo_scene

            cube = demo_scene()
        else:
            cube = _read_cube(self.cube_path, self.variable)
        try:
            matrix = self.srf.matrix_for(cube.wavelengths, cube.bands)
            self._msi = simulate_msi(cube.data, matrix)
        except SSRANEdgeError as exc:
            raise SourceError(f"replay {self.cube_path or 'demo'}: {one_line(exc)}") from None
        self._reference = cube.data
        self.hsi_wavelengths = _wavelength_list(cube)

    @property
    def reference(self) -> np.ndarray:
        """The hyperspectral cube (H, W, hsi_bands) every frame was simulated from."""
        self.open()
        assert self._reference is not None
        return self._reference

    def read(self) -> Frame | None:
        self.open()
        assert self._msi is not None
        if self._position >= self.frames:
            return None
        # A copy per frame: a consumer that normalises in place must not alter later frames.
        frame = Frame(self._position, self._msi.copy(), time.monotonic(), camera=self.camera,
                      meta={"band_names": self.band_names, "replay": self._position})
        self._position += 1
        return frame


class CubeSource(Source):
    """One in-memory cube as a one-frame stream (`predict`): its pixels, valid mask and grid, the SRF it
    was simulated through (`camera`) and the ground truth it was simulated from (`reference`), if any."""

    live = False
    single_frame = True

    def __init__(self, cube: Cube, *, camera: str | None = None, reference: np.ndarray | None = None) -> None:
        self.cube, self.camera, self.reference = cube, camera or cube.camera, reference
        self.name, self.bands, self.geo, self.encoding = cube.source, cube.bands, cube.geo, cube.encoding
        self.wavelengths = _wavelength_list(cube)
        self._done = False

    def read(self) -> Frame | None:
        if self._done:
            return None
        self._done = True
        return Frame(0, self.cube.data, time.monotonic(), valid=self.cube.valid, camera=self.camera,
                     encoding=self.cube.encoding, meta={"path": self.cube.source})


# --- dispatch ------------------------------------------------------------------------------------------

def open_source(spec: str, *, srf: Any = None, frames: int = 1, window: int | None = None,
                variable: str | None = None, read_timeout: float | None = 10.0,
                raster: RasterOptions | None = None) -> Source:
    """A Source from a command-line string (see ACCEPTED_FORMS). Bare "camera_stream" is the bundled
    demo scene through `srf` (default nikon_d700) as a simulated camera, so the stream runs anywhere;
    "camera_stream:<x>" is a real camera/stream/file <x> through OpenCV. MSI files over ~512 MB, or any
    with `window` given, are read in windows. `read_timeout`: seconds a live camera's read may block
    before it counts as failed (retry, reconnect)."""
    text = str(spec).strip()
    if text == "camera_stream":
        return ReplaySource(None, srf, frames=frames)
    if text.startswith("camera_stream:"):
        target = text[len("camera_stream:"):].strip()
        if not target:
            raise SourceError("camera_stream: name a device index, URL, pipeline or video file after the colon")
        return VideoSource(target, read_timeout=read_timeout)
    if text.startswith("replay:"):
        return ReplaySource(text[len("replay:"):].strip() or None, srf, frames=frames, variable=variable)
    if text.isdigit() or text.lower().startswith(STREAM_SCHEMES) or "!" in text:
        return VideoSource(text, read_timeout=read_timeout)
    path = Path(text).expanduser()
    if text and path.is_dir():
        return FolderSource(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS and (suffix not in TIFF_SUFFIXES or is_picture(path)):
        require_file(path)
        return FileSource(path)
    if suffix in RASTER_SUFFIXES:
        from ssran_edge.extras import require

        require("geo", f"reading {path.name} (a GeoTIFF/JP2/VRT)")
        require_file(path)
        return RasterSource(path, window=window, options=raster)
    if suffix in VIDEO_EXTENSIONS:
        return VideoSource(str(path), read_timeout=read_timeout)
    if suffix in CUBE_EXTENSIONS + ENVI_EXTENSIONS:
        require_file(path)
        windowable = suffix in (".npy",) + ENVI_EXTENSIONS
        if windowable and (window is not None or scene_bytes(path) > LARGE_SCENE_BYTES):
            return WindowedSceneSource(path, window=window or 1024)
        return FileSource(path, variable=variable)
    raise SourceError(f"unknown source {redact(text)!r}; accepted: {ACCEPTED_FORMS}")
