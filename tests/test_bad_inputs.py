"""Bad input, tried: one table of cases across the command line (`ssran-edge predict|run|info`,
`python -m export`, `python -m train`) and the library (readers, checkpoints, ONNX runners, engine
sidecars, INT8 calibration). docs/bad_input.md is the same table for users (checked below).

What every case must show:
  * command line, in-process (the real `main(argv)`, output captured at the file descriptors):
    exit code 2, stderr exactly one non-empty line `<prog>: error: ...` holding a phrase that names the
    problem, no traceback, nothing written: no file in the output location or the working directory
    (no temp files, no final output), nothing new beside the inputs;
  * command line, as a real process (`python -m ssran_edge.cli`, the `ssran-edge` script, `python -m
    export`): the same, as a user's terminal sees it (logging and warnings included);
  * full disk, as a real process under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail
    with EFBIG) or, where user namespaces allow it, on a 64 kB tmpfs (ENOSPC): exit 2, the error is one
    line (a `run` prints its progress lines first: it fails mid-stream), no file left behind;
  * library: our own exception type (an SSRANEdgeError) with a one-line message naming the problem.
A checkpoint's pickle payload must never run: its sentinel file must not appear.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ssran_edge.assets import DEFAULT_MODEL, model_path
from ssran_edge.errors import ArtefactError, CheckpointError, DataError, EngineError, SSRANEdgeError
from ssran_edge.runtime.runners import OrtRunner
from tests.conftest import REPO

SENTINEL = "PAYLOAD_RAN"  # a pickle payload would create this file in the case's folder
DOC = REPO / "docs" / "bad_input.md"


# ------------------------------------------------------------------------------------------------ inputs

def last(*steps: Any) -> Any:
    """The last of several steps (the others ran for their effect): `make` lambdas build inputs in order."""
    return steps[-1]


def geotiff(path: Path, bands: int = 4, names: tuple[str, ...] = ("B02", "B03", "B04", "B08")) -> Path:
    """A small uint16 GeoTIFF (UTM 31N, 10 m, nodata 0, scale 1e-4) with described bands."""
    import rasterio
    from affine import Affine

    dn = (np.random.default_rng(0).random((bands, 16, 16)) * 9000 + 1000).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=bands, dtype="uint16", nodata=0,
                       crs="EPSG:32631", transform=Affine(10, 0, 600_000, 0, -10, 5_500_000)) as dst:
        dst.write(dn)
        for i, name in enumerate(names[:bands], start=1):
            dst.set_band_description(i, name)
        dst.scales = (1e-4,) * bands
    return path


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def rgb(h: int = 16, w: int = 16, bands: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((h, w, bands), dtype=np.float32)


def poked(array: np.ndarray, value: float) -> np.ndarray:
    """The array with its first value replaced."""
    array.flat[0] = value
    return array


def fifo(path: Path) -> Path:
    """A named pipe with no writer: opening it for reading blocks forever."""
    os.mkfifo(path)
    return path


def npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def cut(path: Path, keep: float = 0.5) -> Path:
    """Truncate a file to a fraction of its size."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def npy_header_only(path: Path, shape: tuple[int, ...], data_bytes: int = 100, sparse: bool = False) -> Path:
    """An .npy whose header claims `shape` float32; followed by `data_bytes` zeros, or (sparse) by a hole
    as long as the header says, so the file is consistent but enormous without using the disk."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with open(path, "wb") as f:
        f.write(header.getvalue())
        if sparse:
            f.truncate(len(header.getvalue()) + int(np.prod(shape, dtype=object)) * 4)
        else:
            f.write(b"\0" * data_bytes)
    return path


def huge_side() -> int:
    """n such that an n x n x 3 float32 cube is 3x this machine's memory (at least 100000)."""
    from ssran_edge.data.readers import memory_bytes

    return max(100000, int((memory_bytes() / 4) ** 0.5) + 1)


def envi(path: Path, cube: np.ndarray, **header_changes: Any) -> Path:
    """ENVI BSQ float32 (.hdr + .img); header fields replaced afterwards (a header that lies)."""
    import spectral.io.envi as envi_io

    envi_io.save_image(str(path), cube, dtype=np.float32, interleave="bsq", force=True, ext=".img")
    text = path.read_text()
    for key, value in header_changes.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    path.write_text(text)
    return path


def mat(path: Path, **variables: np.ndarray) -> Path:
    import scipy.io

    scipy.io.savemat(path, variables)
    return path


def cave_folder(folder: Path, broken: int = 5) -> Path:
    """A CAVE scene folder of 31 16-bit PNGs, band `broken` truncated."""
    from PIL import Image

    folder.mkdir()
    for band in range(1, 32):
        Image.fromarray((rgb(8, 8, 1)[:, :, 0] * 65535).astype(np.uint16)).save(folder / f"s_ms_{band:02d}.png")
    cut(folder / f"s_ms_{broken:02d}.png")
    return folder


def picture(path: Path, mode: str = "RGB", side: int = 16, **save: Any) -> Path:
    """A small photo (Pillow) in `mode`, saved with `save`'s options (icc_profile=..., quality=...)."""
    from PIL import Image

    Image.fromarray((rgb(side, side) * 255).astype(np.uint8)).convert(mode).save(path, **save)
    return path


def animation(path: Path, frames: int = 3) -> Path:
    from PIL import Image

    images = [Image.fromarray((np.roll(rgb(), k, axis=1) * 255).astype(np.uint8)) for k in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


def dng(path: Path) -> Path:
    """A real DNG (pidng), as the raw tests write them."""
    from tests.test_raw import NIKON, known_image, mosaic_of, write_dng

    return write_dng(path, mosaic_of(known_image()), NIKON)


def folder_with(folder: Path, *files: Path) -> Path:
    """`folder`, which already holds `files` (built by the calls that name them)."""
    assert all(f.parent == folder for f in files)
    return folder


def tiff(path: Path) -> Path:
    import cv2

    cv2.imwrite(str(path), (rgb() * 255).astype(np.uint8))
    return cut(path)


class Payload:
    """Unpickling this runs a shell command that creates the sentinel file."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch '{self.sentinel}'",))


def with_card(weights: Path) -> Path:
    """A model card beside `weights`, copied from the bundled model: only the weights are bad."""
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), weights.with_suffix(".json"))
    return weights


def pickle_checkpoint(path: Path) -> Path:
    """torch.save of a dict holding a payload object (a .pt, or the same bytes named .safetensors)."""
    import torch

    torch.save({"model": {"w": Payload(path.parent / SENTINEL)}}, path)
    return with_card(path)


def onnx_model(path: Path, location: str | None = None) -> Path:
    """A 1x1 Conv 3 -> 31 bands; with `location`, its weight is external data at that location."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((31, 3, 1, 1), np.float32), "W")
    if location is not None:
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in {"location": location, "offset": "0", "length": str(31 * 3 * 4)}.items():
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Conv", ["msi", "W"], ["hsi"])], "g",
                              [helper.make_tensor_value_info("msi", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("hsi", TensorProto.FLOAT, ["n", 31, "h", "w"])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def foreign_onnx(path: Path, kind: str) -> Path:
    """A 3 -> 31 band ONNX as other tools write them, each unlike what the tiler needs in one way."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((31, 3, 1, 1), np.float32), "W")
    image = ["n", 3, "h", "w"]
    inputs = [helper.make_tensor_value_info("msi", TensorProto.FLOAT, image)]
    nodes, out_shape, source = [], ["n", 31, "h", "w"], "msi"
    if kind == "fixed-size":
        inputs = [helper.make_tensor_value_info("msi", TensorProto.FLOAT, [1, 3, 64, 64])]
        out_shape = [1, 31, 64, 64]
    elif kind == "int64-input":
        inputs = [helper.make_tensor_value_info("msi", TensorProto.INT64, image)]
        nodes.append(helper.make_node("Cast", ["msi"], ["msi_f"], to=TensorProto.FLOAT))
        source = "msi_f"
    elif kind == "two-inputs":
        inputs.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Mul", ["msi", "gain"], ["msi_g"]))
        source = "msi_g"
    nodes.append(helper.make_node("Conv", [source, "W"], ["conv"]))
    if kind == "rank2-output":
        nodes += [helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["hsi"])]
        out_shape = ["n", 31]
    elif kind == "pooled-output":
        nodes.append(helper.make_node("GlobalAveragePool", ["conv"], ["hsi"]))
        out_shape = ["n", 31, 1, 1]
    else:
        nodes.append(helper.make_node("Identity", ["conv"], ["hsi"]))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("hsi", TensorProto.FLOAT,
                                                                                   out_shape)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def outside_data_onnx(inp: Path, location: str = "../secret.bin") -> Path:
    (inp / "secret.bin").write_bytes(np.arange(93, dtype=np.float32).tobytes())
    return onnx_model(inp / "models" / "m.onnx", location)


def symlinked_data_onnx(inp: Path) -> Path:
    (inp / "secret.bin").write_bytes(np.arange(93, dtype=np.float32).tobytes())
    (inp / "models").mkdir()
    (inp / "models" / "weights.bin").symlink_to(inp / "secret.bin")
    return onnx_model(inp / "models" / "m.onnx", "weights.bin")


def sidecar(platform: dict[str, str], **changes: Any) -> dict[str, Any]:
    from ssran_edge.export.tensorrt_engine import Profile

    return {"format": "ssran-edge-engine", "engine": "m.engine", "dla_core": None, "precision": "fp16",
            "profiles": [Profile.for_tiles(3, 272, 4).to_json()], "inputs": ["msi"], "outputs": ["hsi"],
            **platform, **changes}


HERE = {"tensorrt": "10.7.0", "gpu": "NVIDIA H200", "compute_capability": "9.0", "dla_cores": 0}


def calibration(pairs_msi: list[np.ndarray]) -> Callable[[], Any]:
    from ssran_edge.data.protocols import Pair
    from ssran_edge.export.quantize import TileCalibrationReader

    pairs = [Pair(m, np.zeros((1, 1, 31), np.float32), f"region{k}") for k, m in enumerate(pairs_msi)]
    return lambda: TileCalibrationReader(pairs, in_bands=3, samples=4, tile=8)


# ------------------------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class Case:
    """One bad input. `make(inp, out)` builds the input under `inp` and returns, for a command-line
    case, (program, argv) with any output directed into `out`; for a library case, a call."""

    id: str
    surface: str  # "cli": in-process main(argv); "process": a real process; "library"
    what: str  # the bad input, in words (the docs' column)
    make: Callable[[Path, Path], Any]
    expect: str  # a phrase the one-line error must contain
    error: type[SSRANEdgeError] = SSRANEdgeError  # library: the exception type
    # "user": not root (root ignores permissions); "shared_data"; "unshare", "unshare-ro": a tmpfs mounted in a
    # user namespace; "unprivileged": as root, run in a user namespace that drops root's permission override
    needs: str = ""
    fsize: int = 0  # process: run under this file-size limit (bytes)
    mid_stream: bool = False  # process: a `run` that fails mid-stream prints its progress lines first


def predict(*argv: str) -> tuple[str, list[str]]:
    return "ssran-edge", ["predict", *argv]


def predict_below_a_file(inp: Path, name: str | Path) -> tuple[str, list[str]]:
    """predict with --output `inp`/file/`name`, where `file` is a regular file: no folder can be made there."""
    (inp / "file").write_text("x")
    return predict(str(npy(inp / "x.npy", rgb())), "--output", str(inp / "file" / name))


def run(*argv: str) -> tuple[str, list[str]]:
    return "ssran-edge", ["run", *argv, "--backend", "torch"]  # torch: no ONNX export cached on the way


def run_auto(*argv: str) -> tuple[str, list[str]]:
    return "ssran-edge", ["run", *argv]


def info(*argv: str) -> tuple[str, list[str]]:
    return "ssran-edge", ["info", *argv]


def batch(*argv: str) -> tuple[str, list[str]]:
    return "ssran-edge", ["batch", *argv]


def export(*argv: str) -> tuple[str, list[str]]:
    return "python -m export", list(argv)


def train(*argv: str) -> tuple[str, list[str]]:
    return "python -m train", list(argv)


def files_protocol(inp: Path, *extra: str) -> list[str]:
    cubes = [mat(inp / f"{name}.mat", cube=np.random.default_rng(seed).random((16, 16, 31)),
                 wavelengths_nm=np.arange(400.0, 701.0, 10.0)) for seed, name in enumerate(("train", "test"))]
    return ["--protocol", "files", "--train-files", str(cubes[0]), "--test-files", str(cubes[1]),
            "--srf", "nikon_d700", "--epochs", "1", "--no-report", *extra]


CASES: list[Case] = [
    # --- ssran-edge predict ---------------------------------------------------------------------------
    Case("predict-wrong-band-count", "cli", "a 5-band .npy for a 3-band model",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(bands=5))), "--output", str(o / "y.npy")),
         "5 bands, but the model takes 3"),
    Case("predict-wrong-dtype", "cli", "complex64 pixels",
         lambda i, o: predict(str(npy(i / "x.npy", rgb().astype(np.complex64))), "--output", str(o / "y.npy")),
         "expected numeric pixels, got dtype complex64"),
    Case("predict-text-pixels", "cli", "an .npy of strings",
         lambda i, o: predict(str(npy(i / "x.npy", np.full((4, 4, 3), "a"))), "--output", str(o / "y.npy")),
         "expected numeric pixels, got dtype <U1"),
    Case("predict-nan-pixels", "cli", "NaN pixels",
         lambda i, o: predict(str(npy(i / "x.npy", np.where(rgb() > 0.5, np.nan, rgb()))),
                              "--output", str(o / "y.npy")),
         "NaN/Inf values"),
    Case("predict-inf-pixels", "cli", "+Inf pixels",
         lambda i, o: predict(str(npy(i / "x.npy", np.full((8, 8, 3), np.inf, np.float32))),
                              "--output", str(o / "y.npy")),
         "192 NaN/Inf values"),
    Case("predict-zero-size", "cli", "a 0x8x3 array",
         lambda i, o: predict(str(npy(i / "x.npy", np.zeros((0, 8, 3), np.float32))), "--output", str(o / "y.npy")),
         "empty array of shape (0, 8, 3)"),
    Case("predict-absurd-dims", "cli", ".npy header claiming 200000x200000x3 over 100 bytes",
         lambda i, o: predict(str(npy_header_only(i / "x.npy", (200000, 200000, 3))), "--output", str(o / "y.npy")),
         "header says 200000x200000x3 float32 (480 GB), but x.npy holds 100 bytes"),
    Case("predict-too-large", "cli", "a consistent but sparse float32 .npy of 3x this machine's memory",
         lambda i, o: predict(str(npy_header_only(i / "x.npy", (huge_side(), huge_side(), 3), sparse=True)),
                              "--output", str(o / "y.npy")),
         "is too large to read whole"),
    Case("predict-truncated-npy", "cli", "an .npy cut in half",
         lambda i, o: predict(str(cut(npy(i / "x.npy", rgb()))), "--output", str(o / "y.npy")),
         "truncated, or the header lies"),
    Case("predict-truncated-mat", "cli", "a .mat (v5) cut in half",
         lambda i, o: predict(str(cut(mat(i / "x.mat", cube=rgb(32, 32)))), "--output", str(o / "y.npy")),
         "not a readable .mat file"),
    Case("predict-truncated-envi", "cli", "an ENVI .img shorter than its header says",
         lambda i, o: last(cut(envi(i / "x.hdr", rgb()).with_suffix(".img")),
                           predict(str(i / "x.hdr"), "--output", str(o / "y.npy"))),
         "header x.hdr says 16x16x3 float32 (3.07 kB), but x.img holds 1.54 kB"),
    Case("predict-envi-header-lies", "cli", "an ENVI header claiming 10^9 x 10^9 pixels",
         lambda i, o: predict(str(envi(i / "x.hdr", rgb(), lines=10**9, samples=10**9)), "--output", str(o / "y.npy")),
         "truncated, or the header lies: header x.hdr says 1000000000x1000000000x3"),
    Case("predict-envi-zero-lines", "cli", "an ENVI header with lines = 0",
         lambda i, o: predict(str(envi(i / "x.hdr", rgb(), lines=0)), "--output", str(o / "y.npy")),
         "an image needs at least one of each"),
    Case("predict-truncated-png", "cli", "a CAVE folder with one band PNG cut in half",
         lambda i, o: predict(str(cave_folder(i / "scene")), "--output", str(o / "y.npy")),
         "s_ms_05.png: unreadable PNG"),
    Case("predict-missing-variable", "cli", "--variable naming no array in the .mat",
         lambda i, o: predict(str(mat(i / "x.mat", cube=rgb())), "--variable", "msi", "--output", str(o / "y.npy")),
         "no variable named 'msi'"),
    Case("predict-empty-file", "cli", "a 0-byte .npy",
         lambda i, o: last((i / "x.npy").write_bytes(b""), predict(str(i / "x.npy"), "--output", str(o / "y.npy"))),
         "x.npy: unreadable NumPy file: empty file"),
    Case("predict-unknown-format", "cli", "an input named .txt",
         lambda i, o: last((i / "x.txt").write_text("1 2 3"), predict(str(i / "x.txt"), "--output", str(o / "y.npy"))),
         "unknown input format '.txt'"),
    Case("predict-truncated-jpeg", "cli", "a JPEG cut in half",
         lambda i, o: predict(str(cut(picture(i / "x.jpg"))), "--output", str(o / "y.npy")),
         "x.jpg: unreadable image ("),
    Case("predict-cmyk-jpeg", "cli", "a CMYK JPEG (print files)",
         lambda i, o: predict(str(picture(i / "x.jpg", "CMYK")), "--output", str(o / "y.npy")),
         "x.jpg: CMYK pixels; convert the image to RGB first"),
    Case("predict-animated-gif", "cli", "an animated GIF (3 frames): refused, not its first frame taken",
         lambda i, o: predict(str(animation(i / "x.gif")), "--output", str(o / "y.npy")),
         "x.gif: an animated GIF (3 frames), not one picture"),
    Case("predict-animated-webp", "cli", "an animated WebP (3 frames)",
         lambda i, o: predict(str(animation(i / "x.webp")), "--output", str(o / "y.npy")),
         "x.webp: an animated WEBP (3 frames), not one picture"),
    Case("predict-one-pixel-image", "cli", "a 1x1 PNG",
         lambda i, o: predict(str(picture(i / "x.png", side=1)), "--output", str(o / "y.npy")),
         "x.png: 1x1 px; an image needs at least 8x8 px"),
    Case("predict-broken-icc-profile", "cli", "a PNG whose embedded ICC profile is garbage",
         lambda i, o: predict(str(picture(i / "x.png", icc_profile=b"not a profile" * 20)), "--output",
                              str(o / "y.npy")),
         "x.png: its embedded ICC colour profile is broken"),
    Case("predict-raw-without-rawpy", "cli", "a DNG with the [raw] extra not installed (rawpy hidden)",
         lambda i, o: last((i / "x.dng").write_bytes(b"II*\x00" + bytes(64)), predict(str(i / "x.dng"), "--output",
                                                                                      str(o / "y.npy"))),
         "needs the [raw] extra: pip install 'ssran-edge[raw]'", needs="without:rawpy"),
    Case("predict-corrupt-dng", "cli", "a DNG whose bytes after the TIFF header are zeros",
         lambda i, o: last(dng(i / "x.dng"), (i / "x.dng").write_bytes((i / "x.dng").read_bytes()[:16]
                                                                      + bytes(4096)),
                           predict(str(i / "x.dng"), "--output", str(o / "y.npy"))),
         "x.dng: unreadable raw file", needs="raw"),
    Case("predict-heic-without-pillow-heif", "cli", "a .heic with the [heic] extra not installed (pillow_heif hidden)",
         lambda i, o: last((i / "x.heic").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64)),
                           predict(str(i / "x.heic"), "--output", str(o / "y.npy"))),
         "x.heic (a HEIC/HEIF photo): needs the [heic] extra", needs="without:pillow_heif"),
    Case("predict-srgb-encoding-out-of-range", "cli", "--input-encoding srgb on a float .npy holding 2.0",
         lambda i, o: predict(str(npy(i / "x.npy", poked(rgb(), 2.0))), "--input-encoding", "srgb",
                              "--output", str(o / "y.npy")),
         "--input-encoding srgb needs values on a 0-1 scale"),
    Case("predict-unknown-input-encoding", "cli", "--input-encoding gamma",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--input-encoding", "gamma", "--output", str(o / "y.npy")),
         "argument --input-encoding: invalid choice: 'gamma'"),
    Case("run-folder-with-a-cmyk-jpeg", "cli", "run on a folder whose first photo is CMYK",
         lambda i, o: run(str(folder_with(i, picture(i / "a.jpg", "CMYK"), picture(i / "b.jpg"))),
                          "--output", str(o / "frames")),
         "a.jpg: CMYK pixels"),
    Case("run-animated-gif", "cli", "run on an animated GIF",
         lambda i, o: run(str(animation(i / "x.gif")), "--output", str(o / "frames")),
         "x.gif: an animated GIF (3 frames)"),
    Case("predict-missing-input", "cli", "a path that does not exist",
         lambda i, o: predict(str(i / "absent.npy"), "--output", str(o / "y.npy")),
         "absent.npy: no such file or folder"),
    Case("predict-pickle-checkpoint", "cli", ".safetensors holding a torch.save pickle with a payload",
         lambda i, o: predict("--model", str(pickle_checkpoint(i / "m.safetensors")), "--output", str(o / "y.npy")),
         "cannot load checkpoint safely"),
    Case("predict-truncated-checkpoint", "cli", "the bundled weights cut in half (card intact)",
         lambda i, o: last(shutil.copy(DEFAULT_MODEL, i / "m.safetensors"), cut(with_card(i / "m.safetensors")),
                           predict("--model", str(i / "m.safetensors"), "--output", str(o / "y.npy"))),
         "cannot load checkpoint safely"),
    Case("predict-unknown-output-format", "cli", "--output y.txt",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--output", str(o / "y.txt")),
         "unknown output format '.txt'"),
    Case("predict-unwritable-output", "cli", "--output in a folder chmod 0500",
         lambda i, o: last(o.chmod(0o500), predict(str(npy(i / "x.npy", rgb())), "--output", str(o / "y.npy"))),
         "y.npy: cannot be written (Permission denied)", needs="user"),
    Case("predict-output-under-a-file", "cli", "--output below a regular file",
         lambda i, o: predict_below_a_file(i, "sub/y.npy"),
         "file is a file, not a folder"),
    Case("predict-output-control-character", "cli", "--output $'bad\\nname.npy' below a regular file (the newline "
         "split the one-line error in two)",
         lambda i, o: predict_below_a_file(i, "bad\nname.npy"),
         "bad\\nname.npy': "),
    # --- GeoTIFF / JP2 (the [geo] extra: rasterio's GDAL) ---------------------------------------------------
    Case("geo-corrupt-tiff", "cli", "a .tif whose bytes after the TIFF magic are garbage",
         lambda i, o: last((i / "x.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4),
                           predict(str(i / "x.tif"), "--output", str(o / "y.tif"))),
         "x.tif: not a readable raster"),
    Case("geo-truncated-tiff", "cli", "a GeoTIFF cut in half",
         lambda i, o: predict(str(truncated(geotiff(i / "x.tif"))), "--bands", "3,2,1", "--output", str(o / "y.tif")),
         "x.tif: "),
    Case("geo-band-name-not-in-file", "cli", "--bands B04,B03,B05 on a file with B02 B03 B04 B08",
         lambda i, o: predict(str(geotiff(i / "x.tif")), "--bands", "B04,B03,B05", "--output", str(o / "y.tif")),
         "no band named 'B05' (band descriptions: B02, B03, B04, B08)"),
    Case("geo-band-count", "cli", "a 4-band GeoTIFF for the 3-band model, no --bands",
         lambda i, o: predict(str(geotiff(i / "x.tif")), "--output", str(o / "y.tif")),
         "4 bands, but the model takes 3; choose them with --bands"),
    Case("geo-scale-to-inf", "cli", "--scale 1e308 (every DN x scale overflows)",
         lambda i, o: predict(str(geotiff(i / "x.tif")), "--bands", "3,2,1", "--scale", "1e308",
                              "--output", str(o / "y.tif")),
         "scale/offset give NaN or Inf pixels"),
    Case("geo-scale-nan", "cli", "--scale nan",
         lambda i, o: predict(str(geotiff(i / "x.tif")), "--bands", "3,2,1", "--scale", "nan",
                              "--output", str(o / "y.tif")),
         "--scale nan: must be a finite, non-zero number"),
    Case("geo-output-under-a-file", "cli", "--output y.tif below a regular file",
         lambda i, o: last((i / "file").write_text("x"), predict(str(geotiff(i / "x.tif")), "--bands", "3,2,1",
                                                                 "--output", str(i / "file" / "y.tif"))),
         "file is a file, not a folder"),
    Case("geo-cog-for-npy", "cli", "--cog with an .npy output",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--cog", "--output", str(o / "y.npy")),
         "--cog, --dtype and --compress apply to a GeoTIFF output"),
    Case("geo-bands-for-npy", "cli", "--bands with an .npy input",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--bands", "1,2,3", "--output", str(o / "y.npy")),
         "--bands, --scale and --offset apply to a GeoTIFF/JP2/VRT input"),
    Case("geo-run-band-name", "cli", "run --bands with a name the raster does not have",
         lambda i, o: run(str(geotiff(i / "x.tif")), "--bands", "red,green,blue", "--output", str(o / "y.tif")),
         "no band named 'red'"),
    Case("predict-negative-tile", "cli", "--tile -5",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--tile", "-5", "--output", str(o / "y.npy")),
         "argument --tile: -5 is not a usable tile size (>= 16 px)"),
    Case("run-tile-8", "cli", "run --tile 8 (mostly halo: a scene would take thousands of windows)",
         lambda i, o: run(str(npy(i / "x.npy", rgb())), "--tile", "8", "--output", str(o / "y.npy")),
         "argument --tile: 8 is not a usable tile size (>= 16 px)"),
    Case("predict-unknown-flag", "cli", "--foo",
         lambda i, o: predict("--foo", "--output", str(o / "y.npy")),
         "ssran-edge: error: unrecognized arguments: --foo"),
    Case("predict-srf-complex", "cli", "--srf a .mat whose D is complex (its imaginary part was dropped)",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(bands=31))), "--srf",
                              str(mat(i / "s.mat", D=np.ones((3, 31)) * (1 + 1j))), "--output", str(o / "y.npy")),
         "matrix D is complex; an SRF is real"),
    Case("predict-srf-cell", "cli", "--srf a .mat whose D is a cell array",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(bands=31))), "--srf",
                              str(mat(i / "s.mat", D=np.array([[np.ones(3), np.ones(2)]], dtype=object))),
                              "--output", str(o / "y.npy")),
         "D is not a numeric matrix"),
    Case("predict-envi-text-wavelengths", "cli", "an ENVI header whose wavelengths are band names",
         lambda i, o: last(envi(i / "x.hdr", rgb()), (i / "x.hdr").open("a").write("wavelength = {Band 1, B2, B3}\n"),
                           predict(str(i / "x.hdr"), "--output", str(o / "y.npy"))),
         "the header's wavelengths are not numbers ('Band 1'...)"),
    Case("predict-nan-wavelengths", "cli", "a 31-band cube whose wavelengths are NaN, through a curve SRF",
         lambda i, o: last(np.savez(i / "c.npz", cube=rgb(bands=31), wavelengths_nm=np.full(31, np.nan)),
                           predict(str(i / "c.npz"), "--srf", "nikon_d700", "--output", str(o / "y.npy"))),
         "the cube's wavelengths must be finite and increasing"),
    Case("predict-model-folder", "cli", "--model a folder",
         lambda i, o: last((i / "m").mkdir(), predict(str(npy(i / "x.npy", rgb())), "--model", str(i / "m"),
                                                       "--output", str(o / "y.npy"))),
         "m: is a folder; give the model file"),
    Case("run-device-cuda-without-cuda", "cli", "run --device cuda on a machine whose torch has no CUDA",
         lambda i, o: run(str(npy(i / "x.npy", rgb())), "--device", "cuda", "--output", str(o / "y.npy")),
         "device cuda requested but CUDA is not available", needs="no_cuda"),
    Case("predict-device-typo", "cli", "--device cuda:x",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--device", "cuda:x", "--output", str(o / "y.npy")),
         "--device 'cuda:x': use cpu, cuda or cuda:N"),
    Case("run-openvino-device-absent", "cli", "run --backend openvino --device NPU on a machine without an NPU",
         lambda i, o: run_auto(str(npy(i / "x.npy", rgb())), "--backend", "openvino", "--device", "NPU",
                               "--output", str(o / "y.npy")),
         "openvino: device NPU is not present here (OpenVINO sees", needs="openvino_no_npu"),
    Case("predict-openvino-device-without-backend", "cli", "--device GPU (an OpenVINO name) with another backend",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--device", "GPU", "--output", str(o / "y.npy")),
         "--device 'GPU': use cpu, cuda or cuda:N (an OpenVINO device: add --backend openvino)"),
    Case("predict-bad-choice", "cli", "--mode zigzag",
         lambda i, o: predict("--mode", "zigzag", "--output", str(o / "y.npy")),
         "argument --mode: invalid choice: 'zigzag'"),
    # --- ssran-edge info --------------------------------------------------------------------------------
    Case("info-unknown-model", "cli", "a model name that is neither bundled nor a file",
         lambda i, o: info("nonexistent"), "no model card nonexistent.json"),
    Case("info-corrupt-card", "cli", "a model card that is not JSON",
         lambda i, o: last((i / "m.json").write_text("{not json"), info(str(i / "m.safetensors"))),
         "corrupt model card"),
    Case("info-foreign-card", "cli", "a JSON card not written by ssran-edge",
         lambda i, o: last((i / "m.json").write_text('{"format": "other"}'), info(str(i / "m.safetensors"))),
         "not an ssran-edge model card"),
    Case("info-card-unknown-encoding", "cli", "a model card whose encoding is neither linear nor srgb",
         lambda i, o: last(shutil.copy(DEFAULT_MODEL, i / "m.safetensors"),
                           (i / "m.json").write_text(json.dumps({**json.loads(DEFAULT_MODEL.with_suffix(".json")
                                                                              .read_text()), "encoding": "gamma"})),
                           info(str(i / "m.safetensors"))),
         "encoding must be linear or srgb, got 'gamma'"),
    # --- ssran-edge run ----------------------------------------------------------------------------------
    Case("run-wrong-band-count", "cli", "a 5-band .npy into a 3-band model",
         lambda i, o: run(str(npy(i / "x.npy", rgb(bands=5))), "--output", str(o / "frames")),
         "5 bands, but the model takes 3"),
    Case("run-preview-under-dev-null", "cli", "run --preview /dev/null/x (was three lines, after the first frame)",
         lambda i, o: run("camera_stream", "--preview", "/dev/null/x"),
         "--preview /dev/null/x: /dev/null is not a folder"),
    Case("run-preview-under-proc", "cli", "run --preview under a /proc path that cannot hold files",
         lambda i, o: run("camera_stream", "--preview", "/proc/ssran-nowhere/prefix"),
         "cannot write previews in /proc/ssran-nowhere"),
    Case("run-nan-pixels", "cli", "an .npy frame with NaN",
         lambda i, o: run(str(npy(i / "x.npy", np.full((8, 8, 3), np.nan, np.float32))), "--output", str(o / "f")),
         "NaN/Inf values"),
    Case("run-truncated-npy", "cli", "an .npy scene cut in half",
         lambda i, o: run(str(cut(npy(i / "x.npy", rgb()))), "--output", str(o / "frames")),
         "truncated, or the header lies"),
    Case("run-envi-header-lies", "cli", "a large-scene ENVI (--window 64) whose header claims 10^9 lines",
         lambda i, o: run(str(envi(i / "x.hdr", rgb(), lines=10**9)), "--window", "64", "--output", str(o / "s.hdr")),
         "unreadable ENVI file: truncated, or the header lies: header x.hdr says 1000000000x16x3"),
    Case("run-empty-onnx", "cli", "--model a 0-byte .onnx",
         lambda i, o: last((i / "m.onnx").write_bytes(b""),
                           run_auto(str(npy(i / "x.npy", rgb())), "--model", str(i / "m.onnx"),
                                    "--output", str(o / "frames"))),
         "missing or empty ONNX file"),
    Case("run-onnx-data-outside", "cli", "--model an ONNX whose weights are external data at ../secret.bin",
         lambda i, o: run_auto(str(npy(i / "x.npy", rgb())), "--model", str(outside_data_onnx(i)),
                               "--output", str(o / "frames")),
         "keeps its data outside the model's folder ('../secret.bin'); refusing to load it"),
    *[Case(f"run-foreign-onnx-{kind}", "cli", f"--model an ONNX from another tool: {what}",
           lambda i, o, kind=kind: run_auto(str(npy(i / "x.npy", rgb())), "--model",
                                            str(foreign_onnx(i / "m.onnx", kind)), "--output", str(o / "frames")),
           expect) for kind, what, expect in [
        ("fixed-size", "input fixed at 1x3x64x64", "input 'msi' has a fixed height/width (1, 3, 64, 64)"),
        ("int64-input", "an int64 input", "input 'msi' is tensor(int64); the runtime needs float32 or float16"),
        ("two-inputs", "two inputs", "2 inputs (msi, gain); the runtime feeds one (N, bands, H, W) image"),
        ("rank2-output", "a (N, 31) output", "output 'hsi' has shape (?, 31); the runtime needs (N, bands, H, W)"),
        ("pooled-output", "a (N, 31, 1, 1) output", "output 'hsi' is (?, 31, 1, 1), not an image of the input's"),
    ]],
    Case("run-engine-without-sidecar", "cli", "--model a .engine with no .engine.json sidecar",
         lambda i, o: last((i / "m.engine").write_bytes(os.urandom(256)),
                           run_auto(str(npy(i / "x.npy", rgb())), "--model", str(i / "m.engine"),
                                    "--output", str(o / "frames"))),
         "no sidecar m.engine.json beside the engine"),
    Case("run-unwritable-output", "cli", "--output in a folder chmod 0500",
         lambda i, o: last(o.chmod(0o500), run(str(npy(i / "x.npy", rgb())), "--output", str(o))),
         "output folder is not writable", needs="user"),
    Case("run-output-under-a-file", "cli", "--output below a regular file",
         lambda i, o: last((i / "file").write_text("x"),
                           run(str(npy(i / "x.npy", rgb())), "--output", str(i / "file" / "frames"))),
         "cannot create output folder"),
    Case("run-unknown-source", "cli", "a source that is no file, device, URL or pipeline",
         lambda i, o: run("nowhere.xyz", "--output", str(o / "frames")), "unknown source 'nowhere.xyz'"),
    Case("run-unknown-output-form", "cli", "--output y.txt",
         lambda i, o: run(str(npy(i / "x.npy", rgb())), "--output", str(o / "y.txt")), "unknown output form"),
    Case("run-negative-halo", "cli", "--halo -3",
         lambda i, o: run(str(npy(i / "x.npy", rgb())), "--halo", "-3"), "argument --halo: -3 is not zero or more"),
    Case("run-device-typo", "cli", "--device banana (the auto backend used to ignore it)",
         lambda i, o: run_auto(str(npy(i / "x.npy", rgb())), "--device", "banana", "--output", str(o / "f")),
         "--device 'banana': use cpu, cuda or cuda:N"),
    Case("run-summary-json-folder", "cli", "--summary-json an existing folder (found after the last frame before)",
         lambda i, o: run(str(npy(i / "x.npy", rgb())), "--summary-json", str(i), "--output", str(o / "f")),
         "--summary-json"),
    Case("run-summary-json-under-a-file", "cli", "--summary-json below a regular file",
         lambda i, o: last((i / "file").write_text("x"), run(str(npy(i / "x.npy", rgb())), "--summary-json",
                                                            str(i / "file" / "s.json"), "--output", str(o / "f"))),
         "file is a file, not a folder"),
    Case("run-window-on-a-stream", "cli", "--window on the simulated camera (failed after inference before)",
         lambda i, o: run("camera_stream", "--window", "64", "--output", str(o / "f")),
         "--window reads one large scene file"),
    Case("run-name-too-long", "cli", "--output a 300-character file name",
         lambda i, o: run(str(npy(i / "x.npy", rgb())), "--output", str(o / ("a" * 300))),
         "file name too long (300 characters"),
    Case("run-folder-wrong-band-count", "cli", "a folder of 5-band frames into a 3-band model (found after the "
         "backend line before)",
         lambda i, o: last((i / "frames").mkdir(), npy(i / "frames" / "f0.npy", rgb(bands=5)),
                           run(str(i / "frames"), "--output", str(o / "f"))),
         "5 bands, but the model takes 3"),
    Case("run-unknown-flag", "cli", "--bogus",
         lambda i, o: run("camera_stream", "--bogus"), "unrecognized arguments: --bogus"),
    # --- python -m export --------------------------------------------------------------------------------
    Case("export-unknown-flag", "cli", "--foo",
         lambda i, o: export("--foo", "--output", str(o / "e")), "python -m export: error: unrecognized arguments"),
    Case("export-pickle-checkpoint", "cli", "--weights a .pt holding a pickle payload",
         lambda i, o: export("--weights", str(pickle_checkpoint(i / "m.pt")), "--output", str(o / "e")),
         "pickle payload refused by weights_only"),
    Case("export-calibration-wrong-shape", "cli", "--int8 --data pavia (4 -> 103 bands) for the 3 -> 31 model",
         lambda i, o: export("--int8", "--data", "pavia", "--output", str(o / "e")),
         "protocol pavia has 4 -> 103 bands; the model takes 3 -> 31", needs="shared_data"),
    Case("export-zero-calib-tile", "cli", "--calib-tile 0",
         lambda i, o: export("--int8", "--calib-tile", "0", "--output", str(o / "e")),
         "argument --calib-tile: 0 is not a usable tile size (>= 16 px)"),
    Case("export-imgsz-1", "cli", "--imgsz 1 (the drift gate ran ~200,000 windows for minutes)",
         lambda i, o: export("--imgsz", "1", "--output", str(o / "e")),
         "argument --imgsz/--tile: 1 is not a usable tile size (>= 16 px)"),
    Case("export-float-blocks-all", "cli", "--int8 --float-blocks 3 (every residual block of the model float)",
         lambda i, o: export("--weights", "paris", "--int8", "--calib-samples", "8", "--calib-tile", "16",
                             "--float-blocks", "3", "--output", str(o / "e")),
         "--float-blocks 3: the model has 3 residual blocks and at least one must be quantized (use 0..2)",
         needs="shared_data"),
    Case("export-float-blocks-word", "cli", "--float-blocks some",
         lambda i, o: export("--int8", "--float-blocks", "some", "--output", str(o / "e")),
         "argument --float-blocks: 'some' is not a whole number"),
    Case("export-unwritable-output", "cli", "--output below a regular file",
         lambda i, o: last((i / "file").write_text("x"),
                           export("--weights", "paris", "--output", str(i / "file" / "e"))),
         "is not writable", needs="shared_data"),
    Case("batch-resources-without-amount", "cli", "batch --resources GPU (no amount)",
         lambda i, o: batch(str(npy(i / "a.npy", rgb())), "--output", str(o / "hsi"), "--resources", "GPU"),
         "argument --resources: 'GPU' is not NAME=AMOUNT with an amount > 0"),
    # --- python -m train ---------------------------------------------------------------------------------
    Case("train-unknown-flag", "cli", "--foo",
         lambda i, o: train("--foo", "--output", str(o / "run")), "python -m train: error: unrecognized arguments"),
    Case("train-truncated-mat", "cli", "--train-files a .mat cut in half",
         lambda i, o: train(*files_protocol(i, "--train-files", str(cut(mat(i / "t.mat", cube=rgb(16, 16, 31))))),
                            "--output", str(o / "run")),
         "not a readable .mat file"),
    Case("train-illuminant-real-sensors", "cli", "--illuminant on paris (real ALI/Hyperion: no camera matrix)",
         lambda i, o: train("--protocol", "paris", "--illuminant", "0.3", "--epochs", "1", "--no-report",
                            "--output", str(o / "run")),
         "--illuminant re-simulates the MSI through the camera's SRF; protocol paris pairs real sensors",
         needs="shared_data"),
    Case("train-output-is-a-file", "cli", "--output an existing regular file",
         lambda i, o: last((i / "run").write_text("x"), train(*files_protocol(i), "--output", str(i / "run"))),
         "run: exists and is not a folder (a run writes a folder)"),
    Case("train-init-pickle", "cli", "--init a .safetensors holding a pickle payload",
         lambda i, o: train(*files_protocol(i), "--init", str(pickle_checkpoint(i / "m.safetensors")),
                            "--output", str(o / "run")),
         "cannot load checkpoint safely"),
    Case("train-resume-pickle", "cli", "--resume from a checkpoint.pt holding a pickle payload",
         lambda i, o: last((i / "run").mkdir(), pickle_checkpoint(i / "run" / "checkpoint.pt"),
                           train(*files_protocol(i), "--resume", "--output", str(i / "run"))),
         "cannot resume from this checkpoint (pickle payload refused by weights_only"),
    Case("train-same-file-train-and-test", "cli", "--train-files and --test-files naming the same cube",
         lambda i, o: train(*files_protocol(i, "--test-files", str(i / "train.mat")), "--output", str(o / "run")),
         "given as a training and a test file"),
    Case("train-zero-epochs", "cli", "--epochs 0",
         lambda i, o: train("--epochs", "0", "--output", str(o / "run")), "argument --epochs: 0 is not a positive"),
    Case("train-qat-without-init", "cli", "--qat with no --init weights",
         lambda i, o: train(*files_protocol(i), "--qat", "--output", str(o / "run")),
         "--qat fine-tunes trained weights for the INT8 export: give them with --init"),
    Case("train-noise-level-of-a-percent", "cli", "--noise-read 2 (2 % meant: 0.02)",
         lambda i, o: train("--noise-read", "2", "--output", str(o / "run")),
         "argument --noise-read: 2 is not a noise level in [0, 1) of full scale (1 % is 0.01)"),
    Case("train-init-body-of-another-width", "cli", "--init weights 64 wide into a --width 16 skip variant",
         lambda i, o: train(*files_protocol(i), "--arch", "ssran_linear_skip", "--width", "16", "--init",
                            str(model_path("cave_ssran")), "--epochs", "1", "--no-report",
                            "--output", str(o / "run")),
         "its SSRAN body (64 wide, 3 blocks) does not fit a 16-wide 3-block ssran_linear_skip"),
    Case("train-jpeg-quality-out-of-range", "cli", "--jpeg-quality 50 101",
         lambda i, o: train("--encode", "srgb", "--jpeg-quality", "50", "101", "--output", str(o / "run")),
         "--jpeg-quality 50 101: needs LO <= HI within 1-100"),
    Case("train-jpeg-share-without-quality", "cli", "--jpeg-share 0.5 with no --jpeg-quality",
         lambda i, o: train("--encode", "srgb", "--jpeg-share", "0.5", "--output", str(o / "run")),
         "--jpeg-share needs --jpeg-quality LO HI"),
    Case("train-jpeg-without-encode", "cli", "--jpeg-quality on a linear camera (no --encode)",
         lambda i, o: train("--jpeg-quality", "60", "95", "--output", str(o / "run")),
         "--jpeg-quality and --jpeg-share are steps of the capture chain: give --encode srgb"),
    Case("train-unknown-select-condition", "cli", "--select-conditions naming no capture condition",
         lambda i, o: train("--select-conditions", "jpeg", "--output", str(o / "run")),
         "unknown capture condition 'jpeg'; known: clean, read 0.5%"),
    Case("train-camera-loss-real-sensors", "cli", "--camera-loss on paris (real ALI/Hyperion: no camera matrix)",
         lambda i, o: train("--protocol", "paris", "--camera-loss", "1", "--epochs", "1", "--no-report",
                            "--output", str(o / "run")),
         "--camera-loss compares spectra through the camera's SRF; protocol paris pairs real sensors",
         needs="shared_data"),
    Case("train-chroma-guide-not-rgb", "cli", "--arch ssran_chroma_skip on a 4-band camera (pavia)",
         lambda i, o: train("--protocol", "pavia", "--arch", "ssran_chroma_skip", "--epochs", "1", "--no-report",
                            "--output", str(o / "run")),
         "ssran_chroma_skip restores the chroma of RGB photos: 3 input bands, not 4", needs="shared_data"),
    # --- real processes: what a terminal shows ------------------------------------------------------------
    Case("process-predict-nan", "process", "python -m ssran_edge.cli predict on NaN pixels",
         lambda i, o: predict(str(npy(i / "x.npy", np.full((8, 8, 3), np.nan, np.float32))),
                              "--output", str(o / "y.npy")),
         "NaN/Inf values"),
    Case("process-predict-envi-header-lies", "process", "ssran-edge predict on an ENVI header claiming 10^9 lines",
         lambda i, o: predict(str(envi(i / "x.hdr", rgb(), lines=10**9)), "--output", str(o / "y.npy")),
         "truncated, or the header lies"),
    Case("process-unknown-flag", "process", "ssran-edge predict --foo (the installed script)",
         lambda i, o: ("ssran-edge (script)", ["predict", "--foo"]),
         "ssran-edge: error: unrecognized arguments: --foo"),
    Case("process-export-unknown-flag", "process", "python -m export --foo",
         lambda i, o: export("--foo", "--output", str(o / "e")), "python -m export: error: unrecognized arguments"),
    Case("process-run-pickle-checkpoint", "process", "ssran-edge run --model a pickle-payload .safetensors",
         lambda i, o: run("camera_stream", "--model", str(pickle_checkpoint(i / "m.safetensors")),
                          "--output", str(o / "frames")),
         "cannot load checkpoint safely"),
    Case("process-run-broken-video", "process", "ssran-edge run on an .avi whose header is garbage (FFmpeg and "
         "OpenCV's AVI parser print their own lines)",
         lambda i, o: last((i / "v.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(range(256)) * 20),
                           run_auto(f"camera_stream:{i / 'v.avi'}", "--output", str(o / "frames"))),
         "cannot open video file"),
    Case("process-run-refused-rtsp", "process", "ssran-edge run on an RTSP URL whose port refuses (FFmpeg logs it)",
         lambda i, o: run_auto("camera_stream:rtsp://127.0.0.1:9/stream", "--read-timeout", "2",
                               "--output", str(o / "frames")),
         "cannot open camera/stream rtsp://127.0.0.1:9/stream"),
    Case("process-predict-truncated-tiff-photo", "process", "ssran-edge predict on an 8-bit TIFF cut in half (its "
         "directory, at the end, lost: no reader knows it is a photo; libtiff and Pillow warn on stderr)",
         lambda i, o: predict(str(tiff(i / "x.tif")), "--output", str(o / "y.npy")),
         "x.tif: not a readable raster"),
    Case("process-predict-fifo", "process", "ssran-edge predict on a FIFO with no writer (it blocked forever)",
         lambda i, o: predict(str(fifo(i / "x.npy")), "--output", str(o / "y.npy")),
         "x.npy: is a FIFO (named pipe), not a file"),
    Case("process-predict-fifo-model", "process", "predict --model a FIFO named .safetensors (blocked forever)",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--model", str(fifo(i / "m.safetensors")),
                              "--output", str(o / "y.npy")),
         "m.safetensors: is a FIFO (named pipe), not a model file"),
    Case("process-predict-fifo-srf", "process", "predict --srf a FIFO named .csv",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(bands=31))), "--srf", str(fifo(i / "s.csv")),
                              "--output", str(o / "y.npy")),
         "s.csv: is a FIFO (named pipe), not a file"),
    Case("process-run-fifo-video", "process", "ssran-edge run on a FIFO named .mp4",
         lambda i, o: run(str(fifo(i / "v.mp4")), "--output", str(o / "frames")),
         "v.mp4: is a FIFO (named pipe), not a file"),
    Case("process-run-float32-near-max", "process", "run on a float32 .npy holding 3e38 (the stream wrote a "
         "NaN cube and exited 0)",
         lambda i, o: run(str(npy(i / "x.npy", poked(rgb(), 3e38))),
                          "--output", str(o / "y.npy")),
         "x.npy: values up to 3e+38; beyond 1e+30 the model's float32 arithmetic overflows"),
    Case("process-predict-float64-overflow", "process", "predict --backend torch on a float64 .npy holding 1e300 "
         "(numpy's cast warning, then a NaN/Inf message about a value the file does not hold)",
         lambda i, o: predict(str(npy(i / "x.npy", poked(rgb().astype(np.float64), 1e300))), "--backend", "torch",
                              "--output", str(o / "y.npy")),
         "x.npy: values up to 1e+300; beyond 1e+30"),
    Case("process-predict-weights-without-onnx", "process", "predict --model weights with no ONNX beside them, "
         "cut in half (\"exporting ... to ONNX once\" was printed before the error)",
         lambda i, o: last(shutil.copy(DEFAULT_MODEL, i / "m.safetensors"), cut(with_card(i / "m.safetensors")),
                           predict(str(npy(i / "x.npy", rgb())), "--model", str(i / "m.safetensors"),
                                   "--output", str(o / "y.npy"))),
         "m.safetensors: cannot load checkpoint safely"),
    Case("process-predict-output-escape-sequence", "process", "--output a name holding a terminal escape "
         "(ESC [2J, clear screen) below a regular file",
         lambda i, o: predict_below_a_file(i, "\x1b[2Jy.npy"),
         "\\x1b[2Jy.npy': "),
    # --- full disk, simulated --------------------------------------------------------------------------------
    Case("full-disk-predict-npy", "process", "predict --output y.npy, file-size limit 64 kB (EFBIG)",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(64, 64))), "--output", str(o / "y.npy")),
         "cannot write output (file too large (size limit reached))", fsize=64 * 1024),
    Case("full-disk-predict-envi", "process", "predict --output y.hdr (ENVI), file-size limit 64 kB",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(64, 64))), "--output", str(o / "y.hdr")),
         "cannot write output (file too large (size limit reached))", fsize=64 * 1024),
    Case("full-disk-run-folder", "process", "run --output a folder, file-size limit 64 kB",
         lambda i, o: run(str(npy(i / "x.npy", rgb(64, 64))), "--output", str(o / "frames")),
         "file too large (size limit reached)", fsize=64 * 1024, mid_stream=True),
    Case("full-disk-tmpfs", "process", "predict --output y.npy on a 64 kB tmpfs (ENOSPC)",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(64, 64))), "--output", str(o / "y.npy")),
         "cannot write output (disk full)", needs="unshare"),
    Case("full-disk-tmpfs-envi", "process", "predict --output y.hdr (ENVI) on a 64 kB tmpfs",
         lambda i, o: predict(str(npy(i / "x.npy", rgb(64, 64))), "--output", str(o / "y.hdr")),
         "cannot write output (disk full)", needs="unshare"),
    Case("unwritable-output-unprivileged", "process",
         "predict --output in a folder chmod 0500, as a user without root's override (a user namespace when root)",
         lambda i, o: last(o.chmod(0o500), predict(str(npy(i / "x.npy", rgb())), "--output", str(o / "y.npy"))),
         "cannot be written (Permission denied)", needs="unprivileged"),
    Case("run-unwritable-output-unprivileged", "process",
         "run --output a folder chmod 0500, as a user without root's override (a user namespace when root)",
         lambda i, o: last(o.chmod(0o500), run(str(npy(i / "x.npy", rgb())), "--output", str(o))),
         "output folder is not writable", needs="unprivileged"),
    Case("read-only-output-tmpfs", "process", "predict --output y.npy on a read-only tmpfs (even as root)",
         lambda i, o: predict(str(npy(i / "x.npy", rgb())), "--output", str(o / "y.npy")),
         "cannot be written (Read-only file system)", needs="unshare-ro"),
    # --- library ------------------------------------------------------------------------------------------
    Case("lib-check-cube-1d", "library", "check_cube of a 1-D array",
         lambda i, o: lambda: _readers().check_cube(np.zeros(5)),
         "expected an (H, W, bands) array", DataError),
    Case("lib-check-cube-wrong-bands", "library", "check_cube(bands=3) of a 4-band cube",
         lambda i, o: lambda: _readers().check_cube(rgb(bands=4), "x", 3), "expected 3 bands, got 4", DataError),
    Case("lib-check-cube-object-dtype", "library", "check_cube of an object array",
         lambda i, o: lambda: _readers().check_cube(np.full((2, 2, 3), None)),
         "expected numeric pixels, got dtype object", DataError),
    Case("lib-read-cube-random-npy", "library", "read_cube of random bytes named .npy",
         lambda i, o: last((i / "x.npy").write_bytes(np.random.default_rng(1).bytes(200)),
                           lambda: _readers().read_cube(i / "x.npy")),
         "unreadable NumPy file: no .npy header and not an .npz (zip)", DataError),
    Case("lib-read-cube-pickled-npy", "library", "read_cube of an object (pickled) .npy",
         lambda i, o: last(np.save(i / "x.npy", np.array([Payload(i / SENTINEL)], dtype=object), allow_pickle=True),
                           lambda: _readers().read_cube(i / "x.npy")),
         "it holds Python objects (pickles are never loaded)", DataError),
    Case("lib-read-cube-truncated-npz", "library", "read_cube of an .npz cut in half",
         lambda i, o: last(np.savez(i / "x.npz", cube=rgb()), cut(i / "x.npz"),
                           lambda: _readers().read_cube(i / "x.npz")),
         "unreadable NumPy file", DataError),
    Case("lib-read-cave-truncated-png", "library", "read_cave_scene with a band PNG cut in half",
         lambda i, o: last(cave_folder(i / "scene", broken=31), lambda: _readers().read_cave_scene(i / "scene")),
         "s_ms_31.png: unreadable PNG", DataError),
    Case("lib-read-image-truncated-tiff", "library", "read_picture of a TIFF cut in half",
         lambda i, o: last(tiff(i / "x.tif"), lambda: _images().read_picture(i / "x.tif")),
         "unreadable image", DataError),
    Case("lib-load-model-pickle-pt", "library", "load_model of a .pt holding a pickle payload",
         lambda i, o: last(pickle_checkpoint(i / "m.pt"), lambda: _checkpoint().load_model(i / "m.pt")),
         "pickle payload refused by weights_only", CheckpointError),
    Case("lib-load-model-pickle-safetensors", "library", "load_model of a pickle named .safetensors",
         lambda i, o: last(pickle_checkpoint(i / "m.safetensors"),
                           lambda: _checkpoint().load_model(i / "m.safetensors")),
         "cannot load checkpoint safely", CheckpointError),
    Case("lib-load-model-foreign-safetensors", "library", "load_model of a safetensors file not written by us",
         lambda i, o: last(_foreign_safetensors(i / "m.safetensors"),
                           lambda: _checkpoint().load_model(i / "m.safetensors")),
         "safetensors file not written by ssran-edge", CheckpointError),
    Case("lib-ort-empty-onnx", "library", "OrtRunner on a 0-byte .onnx",
         lambda i, o: last((i / "m.onnx").write_bytes(b""), lambda: OrtRunner(i / "m.onnx").activate()),
         "missing or empty ONNX file", ArtefactError),
    Case("lib-ort-random-bytes", "library", "OrtRunner on random bytes named .onnx",
         lambda i, o: last((i / "m.onnx").write_bytes(b"\x08\x07" + np.random.default_rng(2).bytes(300)),
                           lambda: OrtRunner(i / "m.onnx").activate()),
         "not a readable ONNX file", ArtefactError),
    Case("lib-ort-truncated-onnx", "library", "OrtRunner on an ONNX cut in half",
         lambda i, o: last(cut(onnx_model(i / "m.onnx")), lambda: OrtRunner(i / "m.onnx").activate()),
         "not a readable ONNX file", ArtefactError),
    Case("lib-ort-data-outside", "library", "OrtRunner on an ONNX whose external data is ../secret.bin",
         lambda i, o: last(outside_data_onnx(i), lambda: OrtRunner(i / "models" / "m.onnx").activate()),
         "tensor 'W' keeps its data outside the model's folder ('../secret.bin')", ArtefactError),
    Case("lib-ort-data-absolute", "library", "OrtRunner on an ONNX whose external data is an absolute path",
         lambda i, o: last(outside_data_onnx(i, str(i / "secret.bin")),
                           lambda: OrtRunner(i / "models" / "m.onnx").activate()),
         "keeps its data outside the model's folder", ArtefactError),
    Case("lib-ort-data-symlink", "library", "OrtRunner on an ONNX whose external data is a link leading out",
         lambda i, o: last(symlinked_data_onnx(i), lambda: OrtRunner(i / "models" / "m.onnx").activate()),
         "keeps its data outside the model's folder ('weights.bin')", ArtefactError),
    Case("lib-engine-other-tensorrt", "library", "check_compatible: engine built with TensorRT 8.6.1",
         lambda i, o: lambda: _trt().check_compatible(sidecar(HERE, tensorrt="8.6.1"), HERE),
         "was built with TensorRT 8.6.1 but this machine has 10.7.0", EngineError),
    Case("lib-engine-other-gpu", "library", "check_compatible: engine built on a Jetson Orin (sm_87)",
         lambda i, o: lambda: _trt().check_compatible(sidecar(HERE, gpu="Orin", compute_capability="8.7"), HERE),
         "engines are not portable between GPUs", EngineError),
    Case("lib-engine-corrupt-sidecar", "library", "load_engine with a sidecar that is not JSON",
         lambda i, o: last((i / "m.engine").write_bytes(b"plan"), (i / "m.engine.json").write_text("{oops"),
                           lambda: _trt().load_engine(i / "m.engine")),
         "corrupt sidecar", EngineError),
    Case("lib-calibration-wrong-bands", "library", "TileCalibrationReader on 5-band regions for a 3-band model",
         lambda i, o: calibration([rgb(bands=5)]), "calibration region region0: expected 3 bands, got 5", DataError),
    Case("lib-calibration-not-an-image", "library", "TileCalibrationReader on a 1-D region",
         lambda i, o: calibration([np.zeros(12, np.float32)]), "expected an (H, W, bands) array", DataError),
    Case("lib-calibration-empty", "library", "TileCalibrationReader on no regions",
         lambda i, o: calibration([]), "calibration set is empty", DataError),
    Case("lib-write-cube-unknown-format", "library", "write_cube to .txt",
         lambda i, o: lambda: _write_cube(o / "y.txt", rgb()),
         "unknown output format '.txt'", DataError),
]


def _readers():
    from ssran_edge.data import readers

    return readers


def _write_cube(path: Path, cube: np.ndarray) -> Path:
    from ssran_edge.io import write_cube

    return write_cube(path, cube)


def _sources():
    from ssran_edge.runtime import sources

    return sources


def _images():
    from ssran_edge.data import images

    return images


def _checkpoint():
    from ssran_edge import checkpoint

    return checkpoint


def _trt():
    from ssran_edge.runtime import engines

    return engines


def _foreign_safetensors(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    return with_card(path)


def by_surface(*surfaces: str) -> list:
    return [pytest.param(c, id=c.id) for c in CASES if c.surface in surfaces]


# ------------------------------------------------------------------------------------------------ running them

def _entry(program: str) -> Callable[[list[str]], int]:
    if program == "ssran-edge":
        from ssran_edge.cli import main
    elif program == "python -m export":
        from ssran_edge.export.__main__ import main
    else:
        from ssran_edge.train.__main__ import main
    return main


def _files(folder: Path) -> list[str]:
    """Every file (hidden temp files included) under a folder; folders alone do not count."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


def _require(case: Case, request) -> None:
    if case.needs == "user" and os.geteuid() == 0:
        pytest.skip("running as root, which ignores file permissions (unwritable-output-unprivileged, the "
                    "*-output-under-a-file and read-only-output-tmpfs cases cover an unwritable output for root)")
    if case.needs == "no_cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: --device cuda is valid here")
    if case.needs == "shared_data":
        request.getfixturevalue("shared_data")
    if case.needs == "raw":
        pytest.importorskip("rawpy", reason="the [raw] extra is not installed")
        pytest.importorskip("pidng", reason="pidng (in [dev]) writes the DNG")
    if case.needs.startswith("without:"):  # the extra as a user without it has it: not importable
        request.getfixturevalue("monkeypatch").setitem(sys.modules, case.needs.split(":", 1)[1], None)
    if case.needs == "openvino_no_npu":
        openvino = pytest.importorskip("openvino", reason="the [openvino] extra is not installed")
        if "NPU" in openvino.Core().available_devices:
            pytest.skip("this machine has an NPU: --device NPU is valid here")
    if case.needs.startswith("unshare") and not _unshare_works("-rm"):
        pytest.skip("no user namespaces here (unshare -rm): the file-size-limit cases simulate the full disk")
    if case.needs == "unprivileged" and os.geteuid() == 0 and not _unshare_works("--user"):
        pytest.skip("running as root without user namespaces: root ignores file permissions")


def _unshare_works(*options: str) -> bool:
    exe = shutil.which("unshare")
    return bool(exe) and subprocess.run([exe, *options, "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One $SSRAN_CACHE for every case: what it holds (ONNX exported from weights, backend timings) is
    made once, as on a user's machine, and it is neither an input, an output nor the working directory."""
    return tmp_path_factory.mktemp("ssran-cache")


@pytest.fixture
def folders(tmp_path, monkeypatch, cache):
    """inp (the case's inputs), out (where outputs are directed: must stay empty) and cwd (the working
    directory: default outputs would land here)."""
    inp, out, cwd = tmp_path / "inp", tmp_path / "out", tmp_path / "cwd"
    for folder in (inp, out, cwd):
        folder.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SSRAN_CACHE", str(cache))
    yield inp, out, cwd
    out.chmod(0o700)


def _check_nothing_written(inp: Path, out: Path, cwd: Path, inputs_before: list[str]) -> None:
    assert _files(out) == [], "half-written output"
    assert _files(cwd) == [], "files written to the working directory"
    assert _files(inp) == inputs_before, "files written beside the inputs"
    assert not (inp / SENTINEL).exists() and not (inp / "run" / SENTINEL).exists(), "the pickle payload ran"


@pytest.mark.parametrize("case", by_surface("cli"))
def test_cli_bad_input_is_one_line_exit_2(case, folders, capfd, request):
    _require(case, request)
    inp, out, cwd = folders
    program, argv = case.make(inp, out)
    inputs_before = _files(inp)
    capfd.readouterr()
    try:
        code = _entry(program)(argv)
    except SystemExit as exc:  # argparse's own exit (unknown flags, bad values)
        code = exc.code
    captured = capfd.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(program) and ": error: " in lines[0], lines[0]
    assert case.expect in lines[0]
    assert "Traceback" not in captured.err + captured.out
    _check_nothing_written(inp, out, cwd, inputs_before)


def _run_process(case: Case, program: str, argv: list[str], out: Path, cwd: Path):
    """(CompletedProcess, file listing the tmpfs held at exit) of a case run as a real process."""
    command = _command(program, argv)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO)}
    listing = out.parent / "tmpfs-files.txt"
    if case.needs.startswith("unshare"):  # the tmpfs lives as long as the namespace: list it from inside
        options = "size=64k" + (",ro" if case.needs == "unshare-ro" else "")
        script = (f'mount -t tmpfs -o {options} tmpfs "{out}" || exit 99; "$@"; rc=$?; '
                  f'find "{out}" -type f > "{listing}"; exit $rc')
        command = ["unshare", "-rm", "sh", "-c", script, "sh", *command]
    if case.needs == "unprivileged" and os.geteuid() == 0:  # uid 0 unmapped: owner permission bits apply
        command = ["unshare", "--user", *command]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size(case.fsize) if case.fsize else None)
    return result, listing


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def _command(program: str, argv: list[str]) -> list[str]:
    if program == "ssran-edge (script)":  # the console script pip installed, where it is on PATH
        script = shutil.which("ssran-edge")
        return [script, *argv] if script else [sys.executable, "-m", "ssran_edge.cli", *argv]
    if program == "ssran-edge":
        return [sys.executable, "-m", "ssran_edge.cli", *argv]
    return [sys.executable, "-m", program.split()[-1], *argv]


@pytest.mark.parametrize("case", by_surface("process"))
def test_process_bad_input_reaches_the_user_as_one_line(case, folders, request):
    _require(case, request)
    inp, out, cwd = folders
    program, argv = case.make(inp, out)
    inputs_before = _files(inp)
    result, listing = _run_process(case, program, argv, out, cwd)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    assert case.expect in errors[0], errors[0]
    if not case.mid_stream:  # a run says which backend (and opens its output) before it fails mid-stream
        assert len(lines) == 1, result.stderr
    _check_nothing_written(inp, out, cwd, inputs_before)
    if case.needs.startswith("unshare"):
        assert listing.read_text() == "", "half-written output on the tmpfs"


@pytest.mark.parametrize("case", by_surface("library"))
def test_library_bad_input_raises_our_error_in_one_line(case, folders, request):
    _require(case, request)
    inp, out, _ = folders
    call = case.make(inp, out)
    with pytest.raises(SSRANEdgeError) as raised:
        call()
    assert isinstance(raised.value, case.error), type(raised.value)
    message = str(raised.value)
    assert message.strip() and "\n" not in message, message
    assert case.expect in message, message
    assert not (inp / SENTINEL).exists(), "the pickle payload ran"
    assert _files(out) == []


def test_the_table_is_large_and_covers_every_surface():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 32
    text = " ".join(c.id for c in CASES)
    for prefix in ("predict-", "run-", "info-", "export-", "train-", "process-", "full-disk-", "lib-"):
        assert prefix in text, prefix


def test_every_case_is_in_the_docs():
    doc = DOC.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"cases missing from {DOC.name}: {missing}"


def test_pickle_payload_would_run_if_loaded_unsafely(tmp_path):
    """The payload is real: unpickled without weights_only it creates the sentinel (so the cases above,
    where it does not appear, show it was refused unloaded)."""
    path = pickle_checkpoint(tmp_path / "m.pt")
    import torch

    torch.load(path, weights_only=False)
    assert (tmp_path / SENTINEL).exists()


def doc_rows(ids: list[str] | None = None) -> str:  # pragma: no cover - `python -m tests.test_bad_inputs [ID...]`
    """Run every case here (or those named) and print its row: id, surface, input, the error line (paths
    shortened)."""
    import contextlib
    import tempfile

    @contextlib.contextmanager
    def extra_hidden(case: Case):  # as _require does for the tests
        name = case.needs.split(":", 1)[1] if case.needs.startswith("without:") else None
        saved = sys.modules.get(name, False) if name else False
        if name:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            yield
        finally:
            if name and saved is False:
                del sys.modules[name]
            elif name:
                sys.modules[name] = saved  # type: ignore[assignment]

    rows = []
    for case in (c for c in CASES if not ids or c.id in ids):
        with tempfile.TemporaryDirectory() as tmp, extra_hidden(case):
            inp, out = Path(tmp) / "inp", Path(tmp) / "out"
            inp.mkdir()
            out.mkdir()
            made = case.make(inp, out)
            if case.needs == "user" and os.geteuid() == 0:  # root writes anyway: the expected phrase stands in
                line, code = f"… {case.expect} …", 2
            elif case.surface == "library":
                try:
                    made()
                    line = "(no error)"
                except SSRANEdgeError as exc:
                    line = f"{type(exc).__name__}: {exc}"
                code = "—"
            elif case.surface == "cli":
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    try:
                        code = _entry(made[0])(made[1])
                    except SystemExit as exc:
                        code = exc.code
                line = err.getvalue().strip().splitlines()[-1]
            else:
                cwd = Path(tmp) / "cwd"
                cwd.mkdir()
                result, _ = _run_process(case, *made, out, cwd)
                line, code = result.stderr.strip().splitlines()[-1], result.returncode
            out.chmod(0o700)
            line = line.replace(str(inp) + "/", "").replace(str(out) + "/", "").replace(tmp, "…")
            rows.append(f"| `{case.id}` | {case.surface} | {case.what} | `` {line} `` | {code} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(f"{len(CASES)} cases")
    print(doc_rows(sys.argv[1:]))
