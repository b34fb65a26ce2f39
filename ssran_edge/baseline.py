"""Simple per-pixel baselines, fitted by least squares: the bar a network has to clear.

    from ssran_edge.baseline import fit_baseline, load_baseline
    poly = fit_baseline("rootpoly3", [msi_a, msi_b], [hsi_a, hsi_b])   # (H, W, bands) arrays
    hsi = poly.predict(msi)                                             # (H, W, out_bands)
    poly.save("rootpoly3.npz"); load_baseline("rootpoly3.npz")          # a few kB

Kinds:
- `linear`: HSI = MSI . W + b (the "linear floor").
- `rootpoly2`, `rootpoly3`: root-polynomial regression (Lin & Finlayson, "Exposure Invariance in
  Spectral Reconstruction from RGB Images", CIC 2019). Every monomial of the MSI bands of degree
  k <= order, raised to the power 1/k: for RGB and order 3 that is r, g, b, sqrt(rg), sqrt(rb),
  sqrt(gb), cbrt(r^2 g), ... cbrt(rgb) -- 13 terms, plus an intercept. Each term scales like the
  input, so the map is exposure-equivariant up to the intercept (fit with `intercept=False` for the
  strict form; on CAVE that costs 0.5 dB PSNR and doubles SAM, because the intercept carries the
  sensor's dark level).
- `poly2`, `poly3`: plain polynomial terms (r, g, b, r^2, rg, ...) for comparison; not exposure-
  equivariant.

A term is computed as exp(A . log(max(x, eps))) with one row of exponents A per term, which is also
how the network's root-polynomial skip (`ssran_edge.model.RootPolySkipSSRAN`) computes it in ONNX.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssran_edge.errors import DataError, one_line

KINDS = ("linear", "rootpoly2", "rootpoly3", "rootpoly4", "poly2", "poly3")
EPS = 1e-6  # the floor under log(x): dark and slightly negative (noisy) pixels give terms of ~0


def root_polynomial_exponents(bands: int, order: int, root: bool = True) -> np.ndarray:
    """(terms, bands) exponents: each monomial of degree 1..order, divided by its degree when `root`.
    Rows that coincide after the root (sqrt(r^2) = r) are kept once."""
    rows: list[tuple[float, ...]] = []
    for degree in range(1, order + 1):
        for combo in itertools.combinations_with_replacement(range(bands), degree):
            exponents = np.bincount(combo, minlength=bands).astype(np.float64)
            row = tuple(exponents / degree if root else exponents)
            if row not in rows:
                rows.append(row)
    return np.array(rows, dtype=np.float64)


def features(msi: np.ndarray, exponents: np.ndarray | None) -> np.ndarray:
    """(..., bands) -> (..., terms) float64; `exponents` None means the bands themselves (linear)."""
    x = np.asarray(msi, dtype=np.float64)
    if exponents is None:
        return x
    return np.exp(np.log(np.maximum(x, EPS)) @ exponents.T)


@dataclass
class Baseline:
    """A fitted per-pixel regression: HSI = features(MSI) . weight + bias."""

    kind: str
    weight: np.ndarray  # (terms, out_bands)
    bias: np.ndarray  # (out_bands,), zeros when fitted without an intercept
    exponents: np.ndarray | None  # (terms, in_bands); None for linear

    @property
    def in_bands(self) -> int:
        return self.weight.shape[0] if self.exponents is None else self.exponents.shape[1]

    @property
    def out_bands(self) -> int:
        return self.weight.shape[1]

    def predict(self, msi: np.ndarray) -> np.ndarray:
        if msi.shape[-1] != self.in_bands:
            raise DataError(f"{self.kind} baseline takes {self.in_bands} bands, got {msi.shape[-1]}")
        out = np.empty((*msi.shape[:-1], self.out_bands), np.float32)
        flat_in, flat_out = msi.reshape(-1, msi.shape[-1]), out.reshape(-1, self.out_bands)
        step = _pixels_per_block(self.weight.shape[0])
        for start in range(0, len(flat_in), step):
            block = features(flat_in[start: start + step], self.exponents)
            flat_out[start: start + len(block)] = block @ self.weight + self.bias
        return out

    def save(self, path: str | Path) -> Path:
        from ssran_edge.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, kind=np.array(self.kind), weight=self.weight, bias=self.bias,
                     exponents=self.exponents if self.exponents is not None else np.zeros((0, 0)))
        return path


def _pixels_per_block(terms: int) -> int:
    """Pixels per block so that a block's float64 features stay ~32 MB: a 9-band camera's order-4
    fit has ~700 terms, and a whole scene at once would need gigabytes."""
    return max(1024, (1 << 22) // max(terms, 1))


def fit_baseline(kind: str, msi_regions: list[np.ndarray], hsi_regions: list[np.ndarray],
                 intercept: bool = True, ridge: float = 1e-9) -> Baseline:
    """Least squares over every pixel of the regions (normal equations in float64). `ridge` (relative
    to the Gram matrix's mean diagonal) only guards against a singular system."""
    if kind not in KINDS:
        raise DataError(f"unknown baseline {kind!r}; choose one of {', '.join(KINDS)}")
    if not msi_regions or len(msi_regions) != len(hsi_regions):
        raise DataError("fit_baseline needs as many MSI regions as HSI regions, at least one")
    bands = msi_regions[0].shape[-1]
    exponents = None if kind == "linear" else root_polynomial_exponents(bands, int(kind[-1]), kind.startswith("root"))
    gram, cross = 0.0, 0.0
    step = _pixels_per_block(len(exponents) if exponents is not None else bands)
    for msi, hsi in zip(msi_regions, hsi_regions, strict=True):  # normal equations, a block of pixels at a time
        flat_msi, flat_hsi = msi.reshape(-1, msi.shape[-1]), hsi.reshape(-1, hsi.shape[-1])
        for start in range(0, len(flat_msi), step):
            x = features(flat_msi[start: start + step], exponents)
            if intercept:
                x = np.hstack([x, np.ones((len(x), 1))])
            y = flat_hsi[start: start + step].astype(np.float64)
            gram = gram + x.T @ x
            cross = cross + x.T @ y
    gram = gram + ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    solution = np.linalg.solve(gram, cross)
    weight, bias = (solution[:-1], solution[-1]) if intercept else (solution, np.zeros(solution.shape[1]))
    return Baseline(kind, weight.astype(np.float32), bias.astype(np.float32), exponents)


def load_baseline(path: str | Path) -> Baseline:
    try:
        with np.load(path, allow_pickle=False) as f:
            kind, weight, bias, exponents = str(f["kind"]), f["weight"], f["bias"], f["exponents"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a saved baseline ({one_line(exc)})") from None
    if kind not in KINDS:
        raise DataError(f"{path}: unknown baseline kind {kind!r}")
    return Baseline(kind, weight, bias, None if exponents.size == 0 else exponents)
