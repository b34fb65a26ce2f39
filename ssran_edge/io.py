"""Writing cubes: .npy or ENVI BSQ (with wavelengths), staged under a temp name, then renamed, so an
interrupted run never leaves a partial file under the final name; and the check that an input path
is not a pipe or device, which would block a reader forever."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np

from ssran_edge.atomic import atomic_path
from ssran_edge.errors import DataError

# Large writes go to the kernel in pieces of at most 1 MiB. Measured on the project's Linux VMs:
# one 32 MB write() of a 512x512x31 float32 cube cost 34-80 ms of system time, the same bytes in
# 1 MiB pieces 7-11 ms (2 MiB pieces were as slow as one write). In a stream that is ~20 % of the
# int8 runner's time per frame, taken from the same two cores.
WRITE_CHUNK = 1 << 20

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def cache_dir(*parts: str) -> Path:
    """Where ssran-edge keeps what it can rebuild (ONNX exported from weights, OpenVINO's compiled models,
    backend timings): $SSRAN_CACHE, default ~/.cache/ssran-edge."""
    return Path(os.environ.get("SSRAN_CACHE", Path.home() / ".cache" / "ssran-edge"), *parts)


def cached_onnx_path(weights: str | Path) -> Path:
    """Where the ONNX exported once from a weights file is kept (by the weights' hash): written by
    export's cached_onnx, read by the runtime and `info`."""
    from ssran_edge.atomic import sha256_file

    return cache_dir(f"{sha256_file(weights)[:20]}.onnx")


def special_file(path: str | Path) -> str | None:
    """What a path is if it is a pipe, device or socket (opening a FIFO for reading blocks until a
    writer comes, forever if none does); None for files, folders and missing paths. stat() never blocks."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return next((what for test, what in _SPECIAL if test(mode)), None)


def write_array(f, data: np.ndarray) -> None:
    """The raw bytes of `data` to a binary file, in WRITE_CHUNK pieces. file.write reports a full disk as
    ENOSPC/EFBIG (ndarray.tofile and np.save only as a short write)."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    for start in range(0, len(view), WRITE_CHUNK):
        f.write(view[start: start + WRITE_CHUNK])


def pwrite_array(fd: int, data: np.ndarray, offset: int) -> None:
    """write_array at a file offset (os.pwrite: no shared file position, no mapped pages kept resident)."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        written = os.pwrite(fd, view[:WRITE_CHUNK], offset)
        view, offset = view[written:], offset + written


def write_cube(path: str | Path, cube: np.ndarray, wavelengths: list[float] | None = None, geo=None) -> Path:
    """(H, W, bands) -> .npy, or ENVI BSQ (.hdr + .img) with the wavelengths in the header (and, for a
    georeferenced source, its `map info` and `coordinate system string`)."""
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
                write_array(f, data)
            return path
        import spectral.io.envi as envi

        header = path.with_suffix(".hdr")
        metadata = {"description": "ssran-edge reconstruction", "wavelength units": "nm"}
        if wavelengths is not None:
            metadata["wavelength"] = [f"{w:g}" for w in wavelengths]
        if geo is not None and geo.envi_map_info() is not None:
            metadata["map info"] = geo.envi_map_info()
            metadata["coordinate system string"] = "{" + geo.crs + "}"
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
