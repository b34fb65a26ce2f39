"""PNG previews of output cubes beside a stream (not a sink: a look at the data, written per frame):
a false-colour image and a plot of a few pixels' spectra."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssran_edge.atomic import atomic_path
from ssran_edge.errors import SinkError
from ssran_edge.extras import require
from ssran_edge.runtime.frames import Frame
from ssran_edge.runtime.sinks import io_errors


class Preview:
    """PNG previews of output cubes: `<prefix>_000001.png`, a false-colour image from the bands nearest
    `rgb_wavelengths` (each stretched to its 2nd-98th percentile), and `<prefix>_000001_spectra.png`,
    the spectra of a few pixels ((row, col) list; default three at fixed fractions of the frame).

    Without wavelengths (an ONNX that carries none) bands go by index: the false colour takes the bands
    at 80, 50 and 20 % of the range (where 640, 550 and 460 nm sit in a 400-700 nm cube) and the plot's
    axis is the band number. The prefix's folder is checked (made, probed) when the Preview is made,
    so an unwritable one is one line before the first frame, not an error after it."""

    FRACTIONS = ((0.25, 0.25), (0.5, 0.5), (0.75, 0.75))
    BAND_FRACTIONS = (0.8, 0.5, 0.2)  # red, green, blue of a cube with no wavelengths

    def __init__(self, path_prefix: str | Path, *, wavelengths: Sequence[float] | None,
                 pixels: Sequence[tuple[int, int]] | None = None,
                 rgb_wavelengths: tuple[float, float, float] = (640, 550, 460)) -> None:
        require("preview", "--preview")
        self.prefix = Path(path_prefix)
        self.wavelengths = None if wavelengths is None else np.asarray(wavelengths, dtype=float)
        self.pixels = [tuple(p) for p in pixels] if pixels is not None else None
        self.rgb = (None if self.wavelengths is None
                    else [int(np.argmin(np.abs(self.wavelengths - w))) for w in rgb_wavelengths])
        self._check_folder()

    def _check_folder(self) -> None:
        """The prefix's folder exists (made if missing) and takes files: else one SinkError line."""
        folder = self.prefix.parent
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise SinkError(f"--preview {self.prefix}: {existing} is not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{self.prefix.name}.probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise SinkError(f"--preview {self.prefix}: cannot write previews in {folder} "
                            f"({exc.strerror or type(exc).__name__})") from None

    def _bands(self, bands: int) -> tuple[list[int], np.ndarray]:
        """(the false colour's three band indexes, the spectra plot's x values) for a cube of `bands` bands."""
        if self.wavelengths is not None and self.rgb is not None:
            return self.rgb, self.wavelengths
        return [round((bands - 1) * f) for f in self.BAND_FRACTIONS], np.arange(bands, dtype=float)

    def _pixels(self, h: int, w: int) -> list[tuple[int, int]]:
        if self.pixels is None:
            return [(min(int(fr * h), h - 1), min(int(fc * w), w - 1)) for fr, fc in self.FRACTIONS]
        bad = [p for p in self.pixels if not (0 <= p[0] < h and 0 <= p[1] < w)]
        if bad:
            raise SinkError(f"{self.prefix}: preview pixels {bad} outside the {h}x{w} frame")
        return self.pixels  # type: ignore[return-value]

    @staticmethod
    def _stretch(band: np.ndarray) -> np.ndarray:
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            return np.zeros(band.shape, np.uint8)
        lo, hi = np.percentile(finite, (2, 98))
        scaled = (band - lo) / (hi - lo) if hi > lo else np.zeros_like(band)
        return (np.nan_to_num(np.clip(scaled, 0, 1)) * 255).round().astype(np.uint8)

    def preview(self, frame: Frame, cube: np.ndarray) -> tuple[Path, Path]:
        import cv2

        if cube.ndim != 3 or (self.wavelengths is not None and cube.shape[2] != len(self.wavelengths)):
            known = "no" if self.wavelengths is None else len(self.wavelengths)
            raise SinkError(f"{self.prefix}: preview of a cube shaped {tuple(cube.shape)} with {known} wavelengths")
        h, w, bands = cube.shape
        rgb_bands, x = self._bands(bands)
        image_path = self.prefix.parent / f"{self.prefix.name}_{frame.index:06d}.png"
        spectra_path = self.prefix.parent / f"{self.prefix.name}_{frame.index:06d}_spectra.png"
        rgb = np.stack([self._stretch(cube[:, :, b]) for b in rgb_bands], axis=-1)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
        if not ok:
            raise SinkError(f"{image_path}: PNG encoding failed")
        pixels = self._pixels(h, w)
        with io_errors(image_path):
            # encode then write: the temp name has no .png suffix for cv2.imwrite to go by
            with atomic_path(image_path) as tmp:
                tmp.write_bytes(png.tobytes())
            with atomic_path(spectra_path) as tmp:
                self._plot(cube, pixels, frame.index, tmp, x)
        return image_path, spectra_path

    def _plot(self, cube: np.ndarray, pixels: list[tuple[int, int]], index: int, dest: Path, x: np.ndarray) -> None:
        # Figure + Agg canvas directly: no pyplot state, no display needed, safe off the main thread.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for r, c in pixels:
            ax.plot(x, cube[r, c], marker=".", label=f"({r}, {c})")
        ax.set_xlabel("wavelength (nm)" if self.wavelengths is not None else "band")
        ax.set_ylabel("value")
        ax.set_title(f"frame {index}: spectra")
        ax.grid(alpha=0.3)
        ax.legend(title="(row, col)")
        fig.tight_layout()
        fig.savefig(dest, format="png")
