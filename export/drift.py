"""The accuracy-drift gate: run an artefact and the fp32 PyTorch model on the same validation tiles;
PSNR/SAM against ground truth, and the artefact against fp32 (PSNR, max abs error). A model trained on
sensor noise is gated twice: on the clean validation MSI and under read noise of sigma 1 %
(`ssran_edge.conditions`), since rounding that is harmless on clean input can be amplified by noise;
a model trained through a photo's capture chain on its 8-bit PNG and JPEG quality 90 frames."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ssran_edge.conditions import CONDITIONS, NOISY_SELECTION, SRGB_CONDITIONS, Condition, capture
from ssran_edge.data.protocols import Pair
from ssran_edge.metrics import psnr, sam
from ssran_edge.tiling import InferFn, run_tiled

# dB of PSNR on the validation split an artefact may lose against the fp32 PyTorch model.
DEFAULT_MAX_DROP_DB = {"fp32": 0.01, "fp16": 0.05, "int8": 0.1}


@dataclass
class Drift:
    artefact: str
    precision: str
    psnr_gt: float  # artefact vs ground truth
    sam_gt: float
    psnr_gt_fp32: float  # the fp32 PyTorch model vs ground truth
    sam_gt_fp32: float
    psnr_vs_fp32: float  # artefact vs fp32 output (fp32 as reference)
    max_abs_vs_fp32: float
    threshold_db: float
    condition: str = "clean"  # the capture condition of the validation MSI

    @property
    def drop_db(self) -> float:
        return self.psnr_gt_fp32 - self.psnr_gt

    @property
    def passed(self) -> bool:
        return self.drop_db <= self.threshold_db

    def to_dict(self) -> dict:
        return {**asdict(self), "drop_db": self.drop_db, "passed": self.passed}

    def markdown(self) -> str:
        gate = "pass" if self.passed else "FAIL"
        return (f"| {self.artefact} | {self.precision} | {self.condition} | {self.psnr_gt:.3f} | {self.sam_gt:.3f} | "
                f"{self.drop_db:+.4f} | {self.psnr_vs_fp32:.2f} | {self.max_abs_vs_fp32:.2e} | "
                f"{gate} (≤ {self.threshold_db} dB) |")


MD_HEADER = ("| artefact | precision | input | PSNR vs GT | SAM vs GT | PSNR drop vs fp32 torch | PSNR vs fp32 | "
             "max abs vs fp32 | gate |\n|---|---|---|---|---|---|---|---|---|")


def gate_conditions(training: dict) -> list[Condition]:
    """Clean input always; also read noise of sigma 1 % for a model trained on sensor noise (its card's
    training settings say so): the inputs it is meant for. A model trained through a photo's capture
    chain: its 8-bit PNG (lossless, where rounding shows most) and JPEG quality 90 frames."""
    if training.get("encode") == "srgb":
        return [SRGB_CONDITIONS["sRGB 8-bit PNG"], SRGB_CONDITIONS["sRGB JPEG q90"]]
    noisy = (training.get("noise_read") or 0) > 0 or (training.get("noise_shot") or 0) > 0
    return [CONDITIONS["clean"], *([NOISY_SELECTION] if noisy else [])]


def under(condition: Condition, pairs: list[Pair]) -> list[Pair]:
    """The pairs with their MSI as the sensor reads it under `condition` (fixed noise per scene)."""
    return [Pair(capture(p.msi, condition, p.name), p.hsi, p.name) for p in pairs]


def reference_outputs(fp32: InferFn, pairs: list[Pair], out_bands: int, tile: int) -> list[np.ndarray]:
    return [run_tiled(fp32, p.msi, out_bands, tile=tile) for p in pairs]


def measure(name: str, precision: str, infer: InferFn, pairs: list[Pair], references: list[np.ndarray],
            out_bands: int, tile: int, threshold_db: float, condition: str = "clean") -> Drift:
    outputs = [run_tiled(infer, p.msi, out_bands, tile=tile) for p in pairs]
    mean = lambda values: float(np.mean(values))  # noqa: E731
    return Drift(
        artefact=name, precision=precision,
        psnr_gt=mean([psnr(p.hsi, o) for p, o in zip(pairs, outputs, strict=True)]),
        sam_gt=mean([sam(p.hsi, o) for p, o in zip(pairs, outputs, strict=True)]),
        psnr_gt_fp32=mean([psnr(p.hsi, r) for p, r in zip(pairs, references, strict=True)]),
        sam_gt_fp32=mean([sam(p.hsi, r) for p, r in zip(pairs, references, strict=True)]),
        psnr_vs_fp32=mean([psnr(r, o) for r, o in zip(references, outputs, strict=True)]),
        max_abs_vs_fp32=float(max(np.abs(r - o).max() for r, o in zip(references, outputs, strict=True))),
        threshold_db=threshold_db, condition=condition)
