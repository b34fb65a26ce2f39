"""What the benchmark suite measures, shared by the pytest-benchmark tests (benchmarks/test_latency.py)
and `ssran-edge bench` (benchmarks/report.py).

A *config* is a bundled model and the real frames it is fed: `cave` (3 -> 31 bands; the bundled CAVE
crop through the Nikon D700 SRF) and `pavia` (4 -> 103; Pavia University through D_103, from the
data sets). An *artefact* is one way to run it: torch eager fp32 (the reference every ratio is taken
against) and every ONNX / TensorRT file of its export folder. Each frame is run the way `ssran-edge
run` runs it: cut into the model's tiles with a halo, batched, stitched.

FLOPs are the convolutions' (2 per multiply-add) per *output* pixel, so halo recomputation counts
against the artefact, and int8 figures are fp32-equivalent operations per second.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ssran_edge.atomic import sha256_file
from ssran_edge.card import ModelCard
from ssran_edge.checkpoint import load_model
from ssran_edge.data.patches import Calibration
from ssran_edge.errors import DataError, SSRANEdgeError
from ssran_edge.records import MANIFEST, Manifest
from ssran_edge.runtime import backends
from ssran_edge.runtime.backends import BACKEND, artefact_of
from ssran_edge.runtime.runners import Runner
from ssran_edge.tiling import run_tiled

log = logging.getLogger("ssran_edge.bench")
SIZES = (256, 512, 2048)
CONFIGS = ("cave", "pavia")
HALO = 8


@dataclass(frozen=True)
class Artefact:
    config: str  # bundled model name (or a weights path)
    label: str  # "torch fp32", "ort model_int8.onnx", "openvino model_int8.onnx", "trt model_fp16.engine"
    backend: str  # torch | ort | openvino | trt
    precision: str  # fp32 | fp16 | int8
    path: str  # weights (torch) or artefact file
    whole_frame: bool = False  # the model called once on the whole frame (the reference), not in tiles
    hint: str = ""  # openvino: AUTO (as `run`: a frame's tiles over several requests) or LATENCY (one at a time)

    @property
    def key(self) -> str:
        return f"{self.config}:{self.label}"


def weights_of(config: str) -> Path:
    from ssran_edge.assets import MODELS

    return Path(MODELS.get(config, config))


@cache
def card_of(config: str) -> ModelCard:
    return ModelCard.read(weights_of(config))


def flops_per_pixel(config: str) -> float:
    """Convolution FLOPs (2 x multiply-adds) per output pixel, from the model's own layers."""
    import torch

    model, _ = load_model(weights_of(config))
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            total += 2 * kh * kw * m.in_channels * m.out_channels // m.groups
    return float(total)


# The smoke's export: min/max calibration on 64 tiles takes 2 s where the default (percentile on 256)
# takes ~66 s on 2 cores; the smoke measures latency, so it takes the quick ranges, under the real
# gate: --float-blocks auto then lands the INT8 structure the default export lands (for the
# noise-trained `cave`, two of its three residual blocks float: 0.05 dB here, 0.08 there).
QUICK_CALIBRATION = Calibration("minmax", 64, 64)


def ensure_export(config: str, root: Path, quick: bool = False) -> Path:
    """The config's export folder (fp32, fp16, int8), built with `python -m export` (its defaults, or
    QUICK_CALIBRATION) unless one made from these exact weights with that calibration is already there.
    An artefact that fails its drift gate is simply absent."""
    from ssran_edge.errors import ExportError
    from ssran_edge.export.pipeline import ExportOptions, default_calibration, run_export

    weights = weights_of(config)
    out = root / (config if weights.parent.name == "models" else weights.stem)
    manifest = out / MANIFEST
    calibration = QUICK_CALIBRATION if quick else default_calibration(ModelCard.read(weights))
    if manifest.is_file():
        try:
            m = Manifest.read(manifest)
        except SSRANEdgeError as exc:  # an older or damaged folder: export it again
            log.info("%s", exc)
        else:
            if m.source_sha256 == sha256_file(weights) and m.made("int8", "fp16") and m.calibration == calibration:
                return out
    log.info("exporting %s to %s (fp32, fp16, int8 calibrated by %s on %d tiles)", config, out,
             calibration.method, calibration.samples)
    try:
        run_export(ExportOptions(weights=weights, output=out, fp16=True, int8=True,
                                 calib_method=calibration.method, calib_samples=calibration.samples,
                                 calib_tile=calibration.tile))
    except ExportError as exc:
        if not manifest.is_file():
            raise
        log.warning("%s: %s", config, exc)  # a failed gate: the passing artefacts landed, the others are absent
    return out


def artefacts(config: str, export_dir: Path | None, precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
              ) -> list[Artefact]:
    """torch eager fp32 on the whole frame (the reference the ratios are taken against: the model called
    on the frame, as a PyTorch user would) and in tiles (`--backend torch`), then every artefact in the
    export folder's manifest (engines where TensorRT runs), and each portable ONNX through OpenVINO too
    (as `run` uses it, and LATENCY-only) where it is installed."""
    weights = str(weights_of(config))
    found = [Artefact(config, "torch fp32 whole frame", "torch", "fp32", weights, whole_frame=True),
             Artefact(config, "torch fp32", "torch", "fp32", weights)]
    if export_dir is None or not (export_dir / MANIFEST).is_file():
        return found
    for a in Manifest.in_folder(export_dir).artefacts:
        if a.precision not in precisions:
            continue
        path = str(export_dir / a.file)
        opens = artefact_of(path).opens  # the first always (a manifest's engines were built here), others installed
        for backend in [b for i, b in enumerate(opens) if i == 0 or BACKEND[b].installed()]:
            for hint, suffix in VARIANTS.get(backend, (("", ""),)):
                found.append(Artefact(config, f"{backend} {a.file}{suffix}", backend, a.precision, path, hint=hint))
    return found


# A backend measured more than one way: OpenVINO as `run` uses it (AUTO: a frame's tiles over several
# requests) and LATENCY-only (one tile at a time).
VARIANTS = {"openvino": (("AUTO", ""), ("LATENCY", " latency"))}


def open_runner(artefact: Artefact, threads: int = 0, spinning: bool = True) -> Runner:
    """The runner for an artefact. For latency, ONNX Runtime's workers spin between parallel sections
    (~5 % faster alone on 2 cores); `ssran-edge run` makes them sleep (spinning=False), which gives the
    same or better stream throughput and leaves the cores to the other stages and to other work."""
    return backends.open_runner(artefact.path, artefact.backend, threads=threads, spinning=spinning,
                                hint=artefact.hint or "AUTO")


@cache
def source_msi(config: str) -> np.ndarray:
    """A real multispectral frame for the config, (H, W, in_bands) float32."""
    from ssran_edge.srf import load_srf, simulate_msi

    card = card_of(config)
    if card.protocol == "cave" and card.in_bands == 3:
        from ssran_edge.assets import demo_scene

        scene = demo_scene()
        return simulate_msi(scene.data, load_srf(card.srf).matrix_for(scene.wavelengths, scene.bands))
    from ssran_edge.data.protocols import protocol_of_card

    data = protocol_of_card(card)
    return max((p.msi for p in data.train + data.val + data.test), key=lambda m: m.shape[0] * m.shape[1])


def frame(config: str, size: int) -> np.ndarray:
    """size x size frame: the real MSI repeated, mirrored so there are no hard edges, up to the size."""
    msi = source_msi(config)
    reps_r, reps_c = -(-size // msi.shape[0]), -(-size // msi.shape[1])
    rows = [np.concatenate([msi[:: (-1) ** i, :: (-1) ** j] for j in range(reps_c)], axis=1) for i in range(reps_r)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size], dtype=np.float32)


def frames(config: str, size: int, count: int) -> list[np.ndarray]:
    """`count` different frames for a stream: frame(config, size) shifted sideways by 17 px each time."""
    base = frame(config, size)
    return [np.ascontiguousarray(np.roll(base, 17 * k, axis=1)) for k in range(count)]


def infer_frame(runner: Runner, msi: np.ndarray, tile: int, batch: int = 0, whole_frame: bool = False) -> np.ndarray:
    """One frame the way `ssran-edge run` infers it on a CPU (tiles + halo, stitched; as many tiles a call as
    the runner keeps requests in flight, 1 unless OpenVINO's THROUGHPUT hint), or in one call."""
    if whole_frame:
        return runner.infer(np.ascontiguousarray(msi.transpose(2, 0, 1))[None])[0].transpose(1, 2, 0)
    return run_tiled(runner.infer, msi, runner.out_bands, tile, HALO, batch or runner.requests)


def gemm_ceiling(n: int = 2048, repeat: int = 5) -> float:
    """fp32 GEMM GFLOP/s on this machine now (torch matmul, all cores): the roof the conv kernels aim for."""
    import torch

    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def accuracy(artefact: Artefact, runner: Runner) -> dict:
    """PSNR/SAM vs ground truth and drift vs the fp32 model on the config's validation split (or, without
    the data sets, on the bundled CAVE crop); for a model trained on sensor noise also under read noise
    of sigma 1 % (`psnr_noisy`, `drift_db_noisy`), the input its export is gated on too."""
    from ssran_edge.export import drift as drift_gate

    card = card_of(artefact.config)
    pairs, where = _validation_pairs(artefact.config)
    if not pairs:
        return {"accuracy_on": where}
    out: dict = {"accuracy_on": where}
    for condition in drift_gate.gate_conditions(card.training):
        suffix = "" if condition.clean else "_noisy"
        result = drift_gate.measure(artefact.label, artefact.precision, runner.infer,
                                    _pairs_under(artefact.config, condition.name),
                                    _references(artefact.config, condition.name),
                                    card.out_bands, card.inference.tile, threshold_db=float("inf"))
        out.update({f"psnr{suffix}": result.psnr_gt, f"sam{suffix}": result.sam_gt,
                    f"psnr_fp32{suffix}": result.psnr_gt_fp32, f"drift_db{suffix}": result.drop_db,
                    f"psnr_vs_fp32{suffix}": result.psnr_vs_fp32})
    return out


@cache
def _validation_pairs(config: str) -> tuple[list, str]:
    from ssran_edge.data.protocols import Pair, protocol_of_card

    card = card_of(config)
    try:
        return protocol_of_card(card).val, f"{card.protocol} validation split"
    except DataError:
        if card.protocol != "cave":
            return [], "no validation data (set SSRAN_DATA to the data sets)"
    from ssran_edge.assets import demo_scene
    from ssran_edge.srf import load_srf, simulate_msi

    scene = demo_scene()
    msi = simulate_msi(scene.data, load_srf(card.srf).matrix_for(scene.wavelengths, scene.bands))
    return [Pair("demo", msi, scene.data)], "bundled CAVE crop"


@cache
def _pairs_under(config: str, condition: str) -> list:
    """The validation pairs with their MSI under the capture condition: drawn once, for every artefact."""
    from ssran_edge.conditions import CONDITIONS
    from ssran_edge.export import drift as drift_gate

    return drift_gate.under(CONDITIONS[condition], _validation_pairs(config)[0])


@cache
def _references(config: str, condition: str = "clean") -> list[np.ndarray]:
    from ssran_edge.export import drift as drift_gate
    from ssran_edge.tiling import torch_infer

    model, card = load_model(weights_of(config))
    return drift_gate.reference_outputs(torch_infer(model), _pairs_under(config, condition), card.out_bands,
                                        card.inference.tile)
