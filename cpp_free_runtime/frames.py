"""What flows through the stream pipeline: frames in, cubes out, and the two small contracts that
sources and sinks implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ssran_edge.data.cube import Encoding
from ssran_edge.errors import SourceError
from ssran_edge.io import special_file

if TYPE_CHECKING:
    from ssran_edge.data.cube import GeoInfo



@dataclass
class Frame:
    """One multispectral frame (H, W, bands), or one window of a large scene: float32, or the integer codes
    of an 8/16-bit image or video frame (full scale = the dtype's maximum). The stream's preprocess stage
    decodes every frame to linear float32 as its `encoding` says (`ssran_edge.encoding.to_linear`).

    For a window of a large scene, `region` = (row0, col0, full_height, full_width) says where its
    pixels go in the full output; `core` = (row0, row1, col0, col1) within `data` marks the pixels it
    owns (the rest is halo, context for the convs that a neighbouring window owns).

    What the stages decide on is typed: `valid` (H, W) bool is False where the source has nodata (None:
    every pixel valid; masked pixels are filled before inference and NaN in the output); `tile` is the
    chunk size a sink should align to (None: its own guess); `encoding` says how the values relate to
    light; `camera` names the SRF the frame was taken (or simulated) with, when known. `meta` holds
    informational extras only (file path, video position...): nothing decides on it."""

    index: int
    data: np.ndarray
    timestamp: float = 0.0
    region: tuple[int, int, int, int] | None = None
    core: tuple[int, int, int, int] | None = None
    valid: np.ndarray | None = None
    tile: int | None = None
    encoding: Encoding = "linear"
    camera: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Source:
    """Yields Frames. `live` sources (cameras, RTSP) may drop frames when inference falls behind;
    file sources never drop. `read()` returns None at the end of the stream and raises SourceError
    (one clear line) when the source fails beyond its retries."""

    live: bool = False
    name: str = "source"
    bands: int | None = None  # known band count, if the source knows it before the first frame
    wavelengths: list[float] | None = None  # of the frames' bands, when known
    single_frame: bool = False  # exactly one frame (a file): an output file name is used as given
    geo: GeoInfo | None = None  # a georeferenced source's grid (known once open), handed to Sink.open
    camera: str | None = None  # the SRF its frames were taken (or simulated) with, when known
    encoding: Encoding | None = None  # how its frames' values relate to light, when known before the first
    reference: np.ndarray | None = None  # ground truth of a simulated camera, for per-frame quality

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None: ...

    def interrupt(self) -> None:
        """Called from another thread (a signal handler) to stop: a source that can block (a stalled
        camera) returns from read() soon, ending the stream. Sources that never block need nothing."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame


class Sink:
    """Takes output cubes (H, W, out_bands) float32 with their Frame. `write` either stores a whole
    frame or nothing; `close` finalises (an interrupted run leaves only whole frames on disk).
    `cube` is only lent for the call: the stream reuses the array for a later frame, so a sink that
    keeps data copies it. `geo` (the source's GeoInfo, or None) georeferences outputs that can carry it."""

    def open(self, out_bands: int, wavelengths: list[float] | None, geo: GeoInfo | None = None) -> None: ...

    def write(self, frame: Frame, cube: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None: ...


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a file-backed array (np.memmap, or a view of one).

    Pages of a mapped file that were read or written (and flushed) stay mapped and count as the
    process's resident memory; a scene of many GB streamed window by window would grow RSS to the
    scene's size. MADV_DONTNEED hands them back to the page cache (the data stays on disk)."""
    import mmap

    while array is not None and not isinstance(getattr(array, "_mmap", None), mmap.mmap):
        array = getattr(array, "base", None)
        if not isinstance(array, np.ndarray):
            return
    if array is not None and hasattr(mmap, "MADV_DONTNEED"):
        array._mmap.madvise(mmap.MADV_DONTNEED)


def require_file(path: Path, name: str | None = None) -> None:
    """A regular file, or one line: a FIFO or device would block the reader (or never end)."""
    if kind := special_file(path):
        raise SourceError(f"{name or path}: is {kind}, not a file")
    if not path.is_file():
        raise SourceError(f"{name or path}: no such file")
