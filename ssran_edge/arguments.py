"""Command-line parsing shared by `ssran-edge`, `python -m train` and `python -m export`.

argparse's default error is the whole usage block and then the error; a mistyped flag should be one
line, like every other bad input: `ssran-edge: error: unrecognized arguments: --foo` and exit code 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from ssran_edge.tiling import MIN_TILE


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit code 2); --help is unchanged.
    Sub-commands made with add_subparsers() get the same class."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())  # argparse messages can wrap
        self.exit(2, f"{self.prog}: error: {message}; try '{self.prog} --help'\n")


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
