"""Capture conditions: what a real sensor adds to the linear MSI before a model sees it.

    from ssran_edge.conditions import CONDITIONS, capture
    noisy = capture(msi, CONDITIONS["read 1%"], "face")   # (H, W, bands) float32, not clipped

Noise is Gaussian on the linear MSI (full scale 1.0: a white reflector), with variance
read² + shot · signal -- the Poisson-Gaussian model of a photon-counting sensor, Gaussian-approximated.
It is not clipped: a dark pixel may read negative, as a raw value minus its black level does.
The draw is fixed by (condition, scene name), so every method and every run sees the same noise on
the same scene, whatever order the scenes come in.

Evaluation scores each method under each condition; a baseline is fitted on training scenes that went
through the same condition (`ssran_edge.train.report`), the strongest simple method for it rather than a
clean fit fed noisy pixels.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Condition:
    name: str
    read: float = 0.0  # read-noise sigma, fraction of full scale
    shot: float = 0.0  # shot-noise gain k: variance k * signal

    @property
    def clean(self) -> bool:
        return self.read == 0 and self.shot == 0

    def describe(self) -> str:
        if self.clean:
            return "clean linear MSI"
        parts = [f"read noise sigma {self.read:.3g}"] if self.read else []
        parts += [f"shot noise variance {self.shot:g} x signal"] if self.shot else []
        return " + ".join(parts)


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("clean"),
    Condition("read 0.5%", read=0.005),
    Condition("read 1%", read=0.01),
    Condition("read 0.5% + shot", read=0.005, shot=0.0005),
)}
NOISY_SELECTION = CONDITIONS["read 1%"]  # training chooses its epoch on the mean of clean and this


def capture(msi: np.ndarray, condition: Condition, scene: str, seed: int = 0) -> np.ndarray:
    """The MSI as the sensor would read it under `condition`; the clean condition returns it as is."""
    msi = np.asarray(msi, dtype=np.float32)
    if condition.clean:
        return msi
    rng = np.random.default_rng([seed, zlib.crc32(f"{condition.name}/{scene}".encode())])
    variance = condition.read ** 2 + condition.shot * np.maximum(msi, 0)
    return (msi + np.sqrt(variance) * rng.standard_normal(msi.shape, dtype=np.float32)).astype(np.float32)
