"""Whole-region inference in tiles, and the paper's 4x4-patch inference.

ECA pools over the extent it is given, so the two modes give different outputs with the same
weights. Tile mode: each tile is run with a halo of context around it (clipped at the image border,
where the convs zero-pad exactly as on the whole frame) and only its centre is kept, so the conv path
has no seams; ECA pools over the tile plus its halo. Patch mode: the region is cut into
non-overlapping patch x patch squares (the last row/column of patches is shifted inward to cover the
border), each run on its own, as the authors' test script does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the tiler runs any batch function; torch only for torch_infer (the runtime has none)
    import torch

RECEPTIVE_RADIUS = 6  # six 3x3 convs in the default SSRAN: a 13x13 receptive field
# A tile under 16 px is mostly halo (8 px a side): `export --imgsz 1` ran the drift gate over
# ~200,000 windows for minutes. Real tiles are 64-512 px.
MIN_TILE = 16


def _starts(length: int, size: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


InferFn = Callable[[np.ndarray], np.ndarray]  # (N, in_bands, h, w) float32 -> (N, out_bands, h, w)


def torch_infer(model: torch.nn.Module, device: str | torch.device = "cpu") -> InferFn:
    """Wrap a PyTorch model as a numpy batch function."""
    import torch

    @torch.no_grad()
    def infer(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return infer


Window = tuple[int, int, int, int]  # (r0, r1, c0, c1)
TileOutput = tuple[Window, Window, np.ndarray]  # input window, kept region, (out_bands, h, w) output of the window


def iter_tiles(infer: InferFn, msi: np.ndarray, windows, batch: int) -> Iterator[list[TileOutput]]:
    """Run every ((input window), (kept region)) of an (H, W, in_bands) frame, windows of one size batched;
    yields each batch's outputs as soon as it is inferred (a stream stitches them meanwhile)."""
    chw = np.ascontiguousarray(msi.transpose(2, 0, 1), dtype=np.float32)
    by_shape = defaultdict(list)  # windows of one size batch together
    for window, keep in windows:
        by_shape[(window[1] - window[0], window[3] - window[2])].append((window, keep))
    for group in by_shape.values():
        for i in range(0, len(group), batch):
            chunk = group[i: i + batch]
            y = infer(np.stack([chw[:, r0:r1, c0:c1] for (r0, r1, c0, c1), _ in chunk]))
            yield [(window, keep, y[k]) for k, (window, keep) in enumerate(chunk)]


def infer_tiles(infer: InferFn, msi: np.ndarray, windows, batch: int) -> list[TileOutput]:
    """Every window's output (iter_tiles, collected)."""
    return [tile for tiles in iter_tiles(infer, msi, windows, batch) for tile in tiles]


def stitch(tiles: list[TileOutput], h: int, w: int, out_bands: int, out: np.ndarray | None = None) -> np.ndarray:
    """The kept region of each tile's output, in place in an (h, w, out_bands) cube (`out`, reused by a
    stream: the kept regions of tile_windows cover every pixel, so its old contents never show)."""
    if out is None:
        out = np.zeros((h, w, out_bands), np.float32)
    for (r0, _, c0, _), (kr0, kr1, kc0, kc1), y in tiles:
        out[kr0:kr1, kc0:kc1] = y[:, kr0 - r0: kr1 - r0, kc0 - c0: kc1 - c0].transpose(1, 2, 0)
    return out


def _run_windows(infer: InferFn, msi: np.ndarray, windows, out_bands: int, batch: int) -> np.ndarray:
    """windows: list of ((r0, r1, c0, c1) input window, (r0, r1, c0, c1) kept region)."""
    return stitch(infer_tiles(infer, msi, windows, batch), msi.shape[0], msi.shape[1], out_bands)


def _spans(length: int, size: int) -> list[tuple[int, int, int]]:
    """(tile start, kept start, kept end) along one axis. A last tile shifted inward (so that it still has
    a whole tile of context) keeps only the pixels the tile before it did not: the kept spans partition
    [0, length), every pixel is written by exactly one tile."""
    spans, kept = [], 0
    for start in _starts(length, size):
        end = min(start + size, length)
        spans.append((start, kept, end))
        kept = end
    return spans


def tile_windows(h: int, w: int, tile: int, halo: int):
    """((input window), (kept region)) pairs for an h x w frame: the kept regions partition the frame; each
    input window is its tile grown by `halo` (clipped at the border), so it holds its kept region + halo."""
    windows = []
    for r, k0, k1 in _spans(h, tile):
        for c, j0, j1 in _spans(w, tile):
            window = (max(r - halo, 0), min(k1 + halo, h), max(c - halo, 0), min(j1 + halo, w))
            windows.append((window, (k0, k1, j0, j1)))
    return windows


def run_tiled(infer: InferFn, msi: np.ndarray, out_bands: int, tile: int = 256, halo: int = 8,
              batch: int = 4) -> np.ndarray:
    """(H, W, in_bands) -> (H, W, out_bands) through any batch function, in tiles with a halo."""
    return _run_windows(infer, msi, tile_windows(*msi.shape[:2], tile, halo), out_bands, batch)


def run_patches(infer: InferFn, msi: np.ndarray, out_bands: int, patch: int = 4, batch: int = 4096) -> np.ndarray:
    """The paper's inference: each patch x patch square on its own, no context, no overlap."""
    h, w, _ = msi.shape
    windows = [((r, r + patch, c, c + patch),) * 2 for r in _starts(h, patch) for c in _starts(w, patch)]
    return _run_windows(infer, msi, windows, out_bands, batch)


def predict_tiled(model: torch.nn.Module, msi: np.ndarray, tile: int = 256, halo: int = 8,
                  batch: int = 4, device: str | torch.device = "cpu") -> np.ndarray:
    """A PyTorch model over (H, W, in_bands) in tiles of `tile` px with `halo` px of context."""
    return run_tiled(torch_infer(model, device), msi, model.out_bands, tile, halo, batch)


def predict_patches(model: torch.nn.Module, msi: np.ndarray, patch: int = 4, batch: int = 4096,
                    device: str | torch.device = "cpu") -> np.ndarray:
    return run_patches(torch_infer(model, device), msi, model.out_bands, patch, batch)


def predict(model, msi: np.ndarray, mode: str = "tile", tile: int = 256, patch: int = 4,
            device: str | torch.device = "cpu") -> np.ndarray:
    if mode == "tile":
        return predict_tiled(model, msi, tile=tile, device=device)
    if mode == "patch":
        return predict_patches(model, msi, patch=patch, device=device)
    raise ValueError(f"unknown inference mode {mode!r} (tile or patch)")


def fill_masked(msi: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Masked pixels take the value of the nearest valid pixel before the network sees them. Zero
    (or any constant) puts a false edge at the mask's border, which the 3x3 convolutions spread into
    the valid pixels beside it, and drags the tile-wide average ECA pools over; the nearest valid
    value continues the scene across the hole (figures: docs/geo.md)."""
    if valid is None or valid.all():
        return msi
    if not valid.any():
        return np.zeros_like(msi)
    from scipy.ndimage import distance_transform_edt

    rows, cols = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return msi[rows, cols]
