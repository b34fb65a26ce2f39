"""Writing cubes: .npy or ENVI BSQ (with wavelengths), staged under a temp name, then renamed, so an
interrupted run never leaves a partial file under the final name."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ssran_edge.checkpoint import atomic_path
from ssran_edge.errors import DataError


def write_cube(path: str | Path, cube: np.ndarray, wavelengths: list[float] | None = None) -> Path:
    """(H, W, bands) -> .npy, or ENVI BSQ (.hdr + .img) with the wavelengths in the header."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".hdr", ".img"):
        raise DataError(f"{path}: unknown output format {path.suffix!r} (use .npy or .hdr)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            data = np.ascontiguousarray(cube, dtype=np.float32)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(data))
                # file.write reports a full disk as ENOSPC/EFBIG; np.save only as a short write
                f.write(memoryview(data).cast("B"))
            return path
        import spectral.io.envi as envi

        header = path.with_suffix(".hdr")
        metadata = {"description": "ssran-edge reconstruction", "wavelength units": "nm"}
        if wavelengths is not None:
            metadata["wavelength"] = [f"{w:g}" for w in wavelengths]
        stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=header.parent))
        try:
            envi.save_image(str(stage / header.name), cube.astype(np.float32), dtype=np.float32,
                            interleave="bsq", metadata=metadata, force=True, ext=".img")
            os.replace(stage / header.with_suffix(".img").name, header.with_suffix(".img"))
            os.replace(stage / header.name, header)  # the header last: it is what readers open
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return header
    except OSError as exc:
        reason = {errno.ENOSPC: "disk full", errno.EFBIG: "file too large (size limit reached)"}.get(
            exc.errno, exc.strerror or " ".join(str(exc).split()))
        raise DataError(f"{path}: cannot write output ({reason})") from None
