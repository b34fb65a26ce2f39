"""Training patches: every stride-1 patch of a region (the paper: 4x4), or a random sample of them
per epoch when the full set is too large, with optional flips/rotations."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ssran_edge.data.protocols import Pair
from ssran_edge.data.readers import check_cube
from ssran_edge.errors import DataError


class Calibration(NamedTuple):
    """How the INT8 export calibrates activation ranges: ONNX Runtime's method on `samples` tiles of `tile` px."""
    method: str
    samples: int
    tile: int


# The export's default: ranges at ONNX Runtime's 99.999th percentile on 256 tiles. On the bundled CAVE
# model it drifts 0.06 dB from fp32 where min/max on 64 tiles drifts 0.12 (docs/fidelity.md).
DEFAULT_CALIBRATION = Calibration("percentile", 256, 64)
# What quantization-aware training simulates (min/max ranges are reproducible exactly; a percentile of
# ORT's histogram is not), and so how a QAT card is calibrated by default.
QAT_CALIBRATION = Calibration("minmax", 64, 64)


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


def photometric(msi: np.ndarray, hsi: np.ndarray, rng: np.random.Generator, exposure: list[float] | None = None,
                noise_read: float = 0.0, noise_shot: float = 0.0, clean_share: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exposure and sensor-noise augmentation of NCHW patches, in place. Exposure scales MSI and HSI
    together by a log-uniform factor from [lo, hi]; Poisson-Gaussian noise is added to the MSI only
    (the spectrum to recover is the noise-free one), with variance (u * read)^2 + v * shot * signal,
    u and v uniform in [0, 1] drawn per patch: dark and bright sensors, read- and shot-limited ones;
    `clean_share` of the patches are left clean."""
    n = len(msi)
    if exposure:
        lo, hi = exposure
        scale = np.exp(rng.uniform(np.log(lo), np.log(hi), n)).astype(np.float32)[:, None, None, None]
        msi *= scale
        hsi *= scale
    return sensor_noise(msi, rng, noise_read, noise_shot, clean_share), hsi


def sensor_noise(msi: np.ndarray, rng: np.random.Generator, noise_read: float, noise_shot: float,
                 clean_share: float = 0.0) -> np.ndarray:
    """`photometric`'s noise on NCHW MSI patches, in place: Poisson-Gaussian, a random read and shot level
    per patch (no draws when both are 0, so a run without noise keeps its random stream)."""
    if noise_read > 0 or noise_shot > 0:
        n = len(msi)
        read, shot = rng.uniform(0, 1, (2, n)).astype(np.float32)[:, :, None, None, None]
        if clean_share > 0:  # that share of the patches stays clean (drawn only when asked: same stream otherwise)
            keep = (rng.uniform(0, 1, n) >= clean_share).astype(np.float32)[:, None, None, None]
            read, shot = read * keep, shot * keep
        variance = (read * noise_read) ** 2 + shot * noise_shot * np.maximum(msi, 0)
        msi += np.sqrt(variance) * rng.standard_normal(msi.shape, dtype=np.float32)
    return msi


def photo_chain(msi: np.ndarray, rng: np.random.Generator, encode: str, jpeg_quality: list[int] | None = None,
                jpeg_share: float = 0.0) -> np.ndarray:
    """The capture chain of a photo on NCHW linear MSI patches (RGB), in place: each clipped, sRGB-encoded
    to 8 bits, a `jpeg_share` of them written as JPEG at a quality uniform in `jpeg_quality` [lo, hi]
    (4:2:0), the rest as PNG, read back by the photo decoder and decoded to linear (conditions.photo)."""
    if not encode:  # off: no random draws, so a run without it keeps its random stream
        return msi
    if encode != "srgb":
        raise DataError(f"unknown capture encoding {encode!r} (srgb)")
    from ssran_edge.conditions import photo

    n = len(msi)
    lo, hi = jpeg_quality or (0, 0)
    quality = np.where(rng.uniform(size=n) < jpeg_share, rng.integers(lo, hi + 1, n), 0)
    for k in range(n):
        msi[k] = photo(msi[k].transpose(1, 2, 0), int(quality[k])).transpose(2, 0, 1)
    return msi


def relight(msi: np.ndarray, hsi: np.ndarray, rng: np.random.Generator, strength: float,
            camera: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Spectral ("illuminant") augmentation of NCHW patches: each patch's spectra are multiplied by a
    smooth positive curve s(x) = exp(a x + b (x^2 - 1/3)), x from -1 to 1 over the bands, a, b ~
    U(-strength, strength), normalised to mean 1, and its MSI re-simulated through the camera matrix
    (MSI = HSI . D^T). A reflectance seen under another light, or a material of a slightly other
    colour: spectra the training scenes do not hold, with an exact MSI."""
    if strength <= 0:  # off: no random draws, so a run without it keeps its random stream
        return msi, hsi
    if camera is None:
        raise DataError("spectral augmentation re-simulates the MSI: it needs the camera matrix of a "
                        "simulated protocol (a real sensor pair has none)")
    n, bands = hsi.shape[:2]
    x = np.linspace(-1, 1, bands)
    a, b = rng.uniform(-strength, strength, (2, n, 1))
    curve = np.exp(a * x + b * (x ** 2 - 1 / 3))
    curve = (curve / curve.mean(axis=1, keepdims=True)).astype(np.float32)
    hsi *= curve[:, :, None, None]
    msi[:] = np.einsum("mb,nbhw->nmhw", camera.astype(np.float32), hsi, optimize=True)
    return msi, hsi


def mix(msi: np.ndarray, hsi: np.ndarray, rng: np.random.Generator, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixup of NCHW patches within a batch: a `share` of them become a * patch + (1 - a) * another,
    a ~ U(0, 1), MSI and HSI alike. The camera is linear (MSI = HSI . D^T), so the pair stays exact: a
    pixel of two materials seen through one another, spectra the training scenes hold only apart."""
    n = len(msi)
    if share <= 0:  # off: no random draws, so a run without mixup keeps its random stream
        return msi, hsi
    chosen = np.flatnonzero(rng.uniform(size=n) < share)
    if n < 2 or chosen.size == 0:
        return msi, hsi
    partner = (chosen + rng.integers(1, n, chosen.size)) % n  # never itself
    a = rng.uniform(0, 1, chosen.size).astype(np.float32)[:, None, None, None]
    msi[chosen] = a * msi[chosen] + (1 - a) * msi[partner]
    hsi[chosen] = a * hsi[chosen] + (1 - a) * hsi[partner]
    return msi, hsi


def training_capture(training: dict) -> tuple[tuple, tuple]:
    """The capture a model was trained through, from its card's training settings: (read, shot, clean
    share) for `sensor_noise` and (encode, jpeg quality, jpeg share) for `photo_chain`."""
    noise = tuple(training.get(k) or 0.0 for k in ("noise_read", "noise_shot", "noise_clean_share"))
    photo = (training.get("encode") or "", training.get("jpeg_quality") or [], training.get("jpeg_share") or 0.0)
    return noise, photo


def calibration_tiles(pairs: list[Pair], in_bands: int, samples: int, tile: int, seed: int = 0,
                      noise: tuple[float, ...] = (0.0, 0.0), photo: tuple = ("",)) -> list[np.ndarray]:
    """`samples` random tiles of real MSI, (1, bands, tile, tile) float32 each (smaller where a region
    is), drawn reproducibly from the regions in turn: the INT8 export's calibration set. `noise`
    (read, shot[, clean share]), for a model trained on sensor noise: each tile goes through the
    training's noise model (`sensor_noise`, a random level per tile, that share of the tiles left clean),
    so the ranges cover the inputs the model will meet; `photo` (encode, jpeg quality, jpeg share), for
    a model trained through a photo's capture chain: then through that chain (`photo_chain`)."""
    if samples < 1:
        raise DataError(f"--calib-samples must be at least 1, got {samples}")
    if tile < 1:
        raise DataError(f"--calib-tile must be at least 1 pixel, got {tile}")
    if not pairs:
        raise DataError("calibration set is empty: no training regions to draw tiles from")
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng([seed, 1])  # its own stream: the tiles drawn stay those of a clean set
    tiles = []
    for k in range(samples):
        pair = pairs[k % len(pairs)]
        msi = check_cube(pair.msi, f"calibration region {pair.name}", in_bands)
        h, w = msi.shape[:2]
        th, tw = min(tile, h), min(tile, w)
        r, c = rng.integers(0, h - th + 1), rng.integers(0, w - tw + 1)
        cut = np.array(msi[r:r + th, c:c + tw].transpose(2, 0, 1), order="C")[None]  # a copy: noise goes in place
        tiles.append(photo_chain(sensor_noise(cut, noise_rng, *noise), noise_rng, *photo))
    return tiles
