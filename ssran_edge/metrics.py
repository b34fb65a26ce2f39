"""Quality indices as defined by the authors' quality_assessment.m (from HySure, Simoes et al. 2015).

All take (H, W, bands) arrays, reference first. Bands whose reference is all zero are dropped, as
the original does. Definitions:
- PSNR: mean over bands of 10 log10(max(ref band)^2 / MSE_band)    (csnr.m)
- RMSE: sqrt of the mean over bands of MSE_band
- ERGAS: 100 * ratio * sqrt(mean over bands of (RMSE_band / mean(ref band))^2)
- SAM: mean over pixels of the angle between spectra, in degrees (pixels with a zero spectrum skipped)
- UIQI: Wang-Bovik Q on sliding 32x32 blocks, mean over blocks, then over bands    (img_qi.m)
- SSIM: Wang et al. SSIM (11x11 Gaussian window, sigma 1.5, K = 0.01, 0.03), data range = max of the
  reference band, mean over the valid window positions, then over bands
- CC: mean over bands of the Pearson correlation
- DD: mean absolute difference (norm(ref - est, 1) / numel)
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve, uniform_filter

from ssran_edge.errors import DataError


def _prepare(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise DataError(f"metrics: shapes differ, reference {reference.shape} vs estimate {estimate.shape}")
    if reference.ndim == 2:
        reference, estimate = reference[..., None], estimate[..., None]
    keep = np.abs(reference).sum(axis=(0, 1)) != 0
    return reference[..., keep], estimate[..., keep]


def mse_per_band(reference, estimate) -> np.ndarray:
    y, x = _prepare(reference, estimate)
    return ((x - y) ** 2).mean(axis=(0, 1))


def psnr(reference, estimate) -> float:
    y, x = _prepare(reference, estimate)
    mse = ((x - y) ** 2).mean(axis=(0, 1))
    peak = y.max(axis=(0, 1))
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(peak**2 / mse)))


def rmse(reference, estimate) -> float:
    return float(np.sqrt(mse_per_band(reference, estimate).mean()))


def ergas(reference, estimate, ratio: float = 1.0) -> float:
    y, x = _prepare(reference, estimate)
    rmse_band = np.sqrt(((x - y) ** 2).mean(axis=(0, 1)))
    return float(100 * ratio * np.sqrt(np.mean((rmse_band / y.mean(axis=(0, 1))) ** 2)))


def sam(reference, estimate) -> float:
    y, x = _prepare(reference, estimate)
    dot = (x * y).sum(axis=2)
    norms = np.linalg.norm(x, axis=2) * np.linalg.norm(y, axis=2)
    valid = norms > 0
    cosine = np.clip(dot[valid] / norms[valid], -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)).mean())


def _uiqi_band(a: np.ndarray, b: np.ndarray, block: int) -> float:
    block = min(block, a.shape[0], a.shape[1])
    # Local means/moments over every block position ("valid" sliding window), as img_qi.m does with filter2.
    def local(v):
        return uniform_filter(v, size=block, mode="constant")[_valid(a.shape, block)]
    mu_a, mu_b = local(a), local(b)
    var_a = local(a * a) - mu_a**2
    var_b = local(b * b) - mu_b**2
    cov = local(a * b) - mu_a * mu_b
    num = 4 * cov * mu_a * mu_b
    den = (var_a + var_b) * (mu_a**2 + mu_b**2)
    q = np.ones_like(den)
    both = den != 0
    q[both] = num[both] / den[both]
    only_var = ((mu_a**2 + mu_b**2) == 0) & ((var_a + var_b) != 0)  # img_qi.m's special cases
    q[only_var] = 2 * cov[only_var] / (var_a + var_b)[only_var]
    only_mean = ((var_a + var_b) == 0) & ((mu_a**2 + mu_b**2) != 0)
    q[only_mean] = 2 * mu_a[only_mean] * mu_b[only_mean] / (mu_a**2 + mu_b**2)[only_mean]
    return float(q.mean())


def _valid(shape: tuple[int, int], window: int) -> tuple[slice, slice]:
    # Output positions of scipy's `window`-wide filters whose window lies wholly inside the image
    # (MATLAB's filter2 'valid'). scipy centres an even window at size // 2.
    lo, hi = window // 2, (window - 1) // 2
    return slice(lo, shape[0] - hi), slice(lo, shape[1] - hi)


def uiqi(reference, estimate, block: int = 32) -> float:
    y, x = _prepare(reference, estimate)
    return float(np.mean([_uiqi_band(y[..., i], x[..., i], block) for i in range(y.shape[2])]))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def _ssim_band(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    size = min(11, a.shape[0], a.shape[1])
    size -= 1 - size % 2  # an odd window keeps the Gaussian centred
    window = _gaussian_window(size, 1.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    valid = _valid(a.shape, size)

    def local(v):
        return convolve(v, window, mode="constant")[valid]
    mu_a, mu_b = local(a), local(b)
    var_a = local(a * a) - mu_a**2
    var_b = local(b * b) - mu_b**2
    cov = local(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim(reference, estimate) -> float:
    y, x = _prepare(reference, estimate)
    return float(np.mean([_ssim_band(y[..., i], x[..., i], float(y[..., i].max())) for i in range(y.shape[2])]))


def cc(reference, estimate) -> float:
    y, x = _prepare(reference, estimate)
    values = []
    for i in range(y.shape[2]):
        a, b = y[..., i].ravel(), x[..., i].ravel()
        a, b = a - a.mean(), b - b.mean()
        denom = np.sqrt((a * a).sum() * (b * b).sum())
        values.append((a * b).sum() / denom if denom > 0 else 0.0)
    return float(np.mean(values))


def dd(reference, estimate) -> float:
    y, x = _prepare(reference, estimate)
    return float(np.abs(y - x).sum() / y.size)


def quality_assessment(reference, estimate, ratio_ergas: float = 1.0, full: bool = True) -> dict[str, float]:
    """All indices in one dict (PSNR, RMSE, ERGAS, SAM; with full=True also UIQI, SSIM, CC, DD)."""
    out = {"psnr": psnr(reference, estimate), "rmse": rmse(reference, estimate),
           "ergas": ergas(reference, estimate, ratio_ergas), "sam": sam(reference, estimate)}
    if full:
        out.update(uiqi=uiqi(reference, estimate), ssim=ssim(reference, estimate),
                   cc=cc(reference, estimate), dd=dd(reference, estimate))
    return out
