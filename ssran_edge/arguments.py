"""Command-line parsing shared by `ssran-edge`, `python -m train` and `python -m export`: the one-line
parser, typed option values, and the GeoTIFF/JP2 flag group that `predict` and `run` share.

argparse's default error is the whole usage block and then the error; a mistyped flag should be one
line, like every other bad input: `ssran-edge: error: unrecognized arguments: --foo` and exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import import_module
from pathlib import Path
from typing import NoReturn

from ssran_edge.data.cube import RasterOptions
from ssran_edge.errors import DataError
from ssran_edge.geo import DTYPES, OUTPUT_SUFFIXES
from ssran_edge.tiling import MIN_TILE


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit code 2); --help is unchanged.
    Sub-commands made with add_subparsers() get the same class."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse messages can wrap
        self.exit(2, f"{self.prog}: error: {message}; try '{self.prog} --help'\n")


_invoked_as: ContextVar[str | None] = ContextVar("invoked_as", default=None)


@contextmanager
def invoked_as(prog: str) -> Iterator[None]:
    """While a stage's main() runs under another command (`ssran-edge export ...`), `prog_for` names
    that command, so its usage line and errors read `ssran-edge export`, not `python -m export`."""
    token = _invoked_as.set(prog)
    try:
        yield
    finally:
        _invoked_as.reset(token)


def prog_for(default: str) -> str:
    """A stage's program name: the command it was reached through (see invoked_as), else `default`."""
    return _invoked_as.get() or default


class LazyChoices(Sequence):
    """argparse choices read from `module.name` on first use (a check, --help, an error): the single
    list of names stays where it lives, and a command that never looks (`ssran-edge info`) does not pay
    for importing that module (the runtime's backends import ONNX Runtime: ~2 s)."""

    def __init__(self, module: str, name: str) -> None:
        self._where = (module, name)
        self._items: tuple[str, ...] | None = None

    def _load(self) -> tuple[str, ...]:
        if self._items is None:
            self._items = tuple(getattr(import_module(self._where[0]), self._where[1]))
        return self._items

    def __getitem__(self, index):
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, item: object) -> bool:
        return item in self._load()

    def __iter__(self):
        return iter(self._load())

    def __repr__(self) -> str:
        return repr(list(self._load()))


def backend_choices() -> LazyChoices:
    """--backend's choices: ssran_edge.runtime.backends.BACKENDS."""
    return LazyChoices("ssran_edge.runtime.backends", "BACKENDS")


BACKEND_HELP = ("auto (default): an .engine through TensorRT; an .onnx, or the ONNX beside the weights, through "
                "ONNX Runtime or OpenVINO, whichever was measured faster here (no torch needed); weights through "
                "CUDA PyTorch where there is a GPU. trt: a TensorRT engine; ort: ONNX Runtime; openvino: OpenVINO "
                "(the [openvino] extra); torch: PyTorch eager on weights (the [train] extra)")


def protocol_choices(*extra: str) -> list[str]:
    """The named protocols (ssran_edge.data.protocols.PROTOCOLS), then `extra` (e.g. files)."""
    from ssran_edge.data.protocols import PROTOCOLS

    return [*PROTOCOLS, *extra]


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not {what}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive number (>= 1)")
non_negative_int = _int_at_least(0, "zero or more")


def auto_or_count(text: str) -> int | None:
    """`auto` (None: the program decides) or a count >= 0."""
    return None if text.strip().lower() == "auto" else non_negative_int(text)


def _float_where(accept, what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    return parse


# A noise sigma or gain as a fraction of full scale; a share of something.
noise_level = _float_where(lambda v: 0 <= v < 1, "a noise level in [0, 1) of full scale (1 % is 0.01)")
share = _float_where(lambda v: 0 <= v <= 1, "a share between 0 and 1")


tile_pixels = _int_at_least(MIN_TILE, f"a usable tile size (>= {MIN_TILE} px)")


def tile_size(text: str) -> int:
    """A tile side in pixels: >= MIN_TILE, or 0 for the model's own."""
    return 0 if text.strip() == "0" else tile_pixels(text)



def worker_resources(text: str) -> dict[str, float]:
    """Dask worker resources as NAME=AMOUNT[,NAME=AMOUNT...], e.g. GPU=1."""
    resources = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not name.strip() or not value > 0:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=AMOUNT with an amount > 0 (e.g. GPU=1)")
        resources[name.strip()] = value
    return resources


def parse_bands(text: str | None) -> tuple[str, ...] | None:
    """'2,3,4' or 'B02,B03,B04' -> the items; None keeps every band."""
    if text is None or not str(text).strip():
        return None
    items = [item.strip() for item in str(text).split(",")]
    if any(not item for item in items):
        raise DataError(f"--bands {text!r}: an empty item; give indices (2,3,4) or names (B02,B03,B04)")
    return tuple(items)


def add_raster_arguments(parser) -> None:
    """The GeoTIFF/JP2 flags `predict` and `run` share: input bands and calibration, output form."""
    geo = parser.add_argument_group("GeoTIFF/JP2 rasters (the [geo] extra)")
    geo.add_argument("--bands", help="input bands by 1-based index (2,3,4) or description (B02,B03,B04)")
    geo.add_argument("--scale", type=float, help="reflectance = DN x scale + offset (default: the file's own; "
                                                 "Sentinel-2 L2A: 0.0001)")
    geo.add_argument("--offset", type=float, help="see --scale (Sentinel-2 L2A since baseline 04.00: -0.1)")
    geo.add_argument("--cog", action="store_true", help="--output x.tif as a Cloud-Optimized GeoTIFF (overviews)")
    geo.add_argument("--dtype", choices=DTYPES, default="float32", help="GeoTIFF output pixels")
    geo.add_argument("--compress", choices=["deflate", "zstd", "lzw", "none"], default="deflate",
                     help="GeoTIFF output compression (with a floating-point predictor)")


def add_encoding_argument(parser) -> None:
    """--input-encoding, which `predict` and `run` share."""
    parser.add_argument("--input-encoding", choices=("auto", "linear", "srgb"), default="auto",
                        help="how input values relate to light: auto (default) as each file says (photos and "
                             "video: sRGB; raw files, cubes, float TIFFs, GeoTIFFs: linear; docs/inputs.md), or "
                             "linear / srgb for every frame")


def raster_options(args) -> RasterOptions | None:
    """open_raster's bands/scale/offset from those flags; None when none was given."""
    if not (args.bands or args.scale is not None or args.offset is not None):
        return None
    return RasterOptions(parse_bands(args.bands), args.scale, args.offset)


def is_geotiff_output(output: str | Path | None, args) -> bool:
    """Whether `output` names a GeoTIFF; the output-form flags are refused for any other form."""
    geotiff = output is not None and Path(output).suffix.lower() in OUTPUT_SUFFIXES
    if (args.cog or args.dtype != "float32" or args.compress != "deflate") and not geotiff:
        raise DataError("--cog, --dtype and --compress apply to a GeoTIFF output (--output x.tif)")
    return geotiff
