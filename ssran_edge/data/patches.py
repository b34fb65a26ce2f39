"""Training patches: every stride-1 patch of a region (the paper: 4x4), or a random sample of them
per epoch when the full set is too large, with optional flips/rotations."""

from __future__ import annotations

import numpy as np

from ssran_edge.data.protocols import Pair


def patch_origins(pairs: list[Pair], size: int, stride: int = 1) -> np.ndarray:
    """(N, 3) array of (pair index, row, col) for every patch of `size` at `stride`."""
    origins = []
    for index, pair in enumerate(pairs):
        h, w = pair.msi.shape[:2]
        if h < size or w < size:
            raise ValueError(f"region {pair.name} ({h}x{w}) is smaller than the {size}x{size} patch")
        rows, cols = np.meshgrid(np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride), indexing="ij")
        origins.append(np.stack([np.full(rows.size, index), rows.ravel(), cols.ravel()], axis=1))
    return np.concatenate(origins)


def gather_patches(pairs: list[Pair], origins: np.ndarray, size: int, rng: np.random.Generator | None = None):
    """Cut the patches at `origins` -> (msi, hsi) NCHW float32 arrays; with `rng`, a random flip and
    90-degree rotation each (the spectra are untouched, so this is label-preserving)."""
    n = len(origins)
    first = pairs[0]
    msi = np.empty((n, first.msi.shape[2], size, size), np.float32)
    hsi = np.empty((n, first.hsi.shape[2], size, size), np.float32)
    for k, (index, r, c) in enumerate(origins):
        m = pairs[index].msi[r: r + size, c: c + size]
        h = pairs[index].hsi[r: r + size, c: c + size]
        if rng is not None:
            turns, flip = rng.integers(4), rng.integers(2)
            m, h = np.rot90(m, turns), np.rot90(h, turns)
            if flip:
                m, h = m[:, ::-1], h[:, ::-1]
        msi[k] = m.transpose(2, 0, 1)
        hsi[k] = h.transpose(2, 0, 1)
    return msi, hsi
