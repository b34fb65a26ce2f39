"""The linear floor: a per-pixel affine least-squares map MSI -> HSI fitted on the training pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LinearBaseline:
    weight: np.ndarray  # (in_bands, out_bands)
    bias: np.ndarray  # (out_bands,)

    @classmethod
    def fit(cls, msi_regions: list[np.ndarray], hsi_regions: list[np.ndarray]) -> LinearBaseline:
        x = np.concatenate([m.reshape(-1, m.shape[-1]) for m in msi_regions]).astype(np.float64)
        y = np.concatenate([h.reshape(-1, h.shape[-1]) for h in hsi_regions]).astype(np.float64)
        design = np.hstack([x, np.ones((len(x), 1))])
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        return cls(solution[:-1].astype(np.float32), solution[-1].astype(np.float32))

    def predict(self, msi: np.ndarray) -> np.ndarray:
        return (msi @ self.weight + self.bias).astype(np.float32)
