"""Quality indices (ssran_edge.metrics) against values worked out by hand on tiny cubes.

Definitions follow the module docstring (the authors' quality_assessment.m). Every expected value
below is written as explicit arithmetic, never by calling the metric another way.
"""

import math

import numpy as np
import pytest

from ssran_edge import metrics
from ssran_edge.errors import DataError


def cube(*bands):
    """Stack 2-D band lists into an (H, W, bands) float array."""
    return np.stack([np.asarray(b, dtype=np.float64) for b in bands], axis=-1)


# Two 2x2 bands.
#   band 0: ref [[1,2],[3,4]] est [[1,2],[3,5]] -> squared errors 0,0,0,1 -> MSE 1/4, max 4, mean 2.5
#   band 1: ref [[2,2],[2,2]] est [[1,3],[2,2]] -> squared errors 1,1,0,0 -> MSE 2/4, max 2, mean 2
REF = cube([[1, 2], [3, 4]], [[2, 2], [2, 2]])
EST = cube([[1, 2], [3, 5]], [[1, 3], [2, 2]])


def test_psnr_uses_per_band_peak_and_averages_over_bands():
    expected = (10 * np.log10(4**2 / 0.25) + 10 * np.log10(2**2 / 0.5)) / 2
    assert metrics.psnr(REF, EST) == pytest.approx(expected, rel=1e-12)


def test_psnr_single_band_2d_input():
    ref = np.array([[0.0, 1.0], [2.0, 4.0]])
    est = np.array([[0.0, 1.0], [2.0, 3.0]])  # one error of 1 in 4 pixels -> MSE 0.25, peak 4
    assert metrics.psnr(ref, est) == pytest.approx(10 * np.log10(16 / 0.25), rel=1e-12)


def test_mse_per_band():
    np.testing.assert_allclose(metrics.mse_per_band(REF, EST), [0.25, 0.5], rtol=1e-12)


def test_rmse_is_sqrt_of_mean_band_mse():
    assert metrics.rmse(REF, EST) == pytest.approx(math.sqrt((0.25 + 0.5) / 2), rel=1e-12)


def test_ergas_with_ratio():
    # RMSE_band = 0.5 and sqrt(0.5); band means 2.5 and 2.
    expected = 100 * 4 * math.sqrt(((0.5 / 2.5) ** 2 + (math.sqrt(0.5) / 2) ** 2) / 2)
    assert metrics.ergas(REF, EST, ratio=4) == pytest.approx(expected, rel=1e-12)
    assert metrics.ergas(REF, EST) == pytest.approx(expected / 4, rel=1e-12)  # default ratio 1


def test_ergas_zero_for_identical():
    assert metrics.ergas(REF, REF, ratio=4) == 0.0


def test_sam_orthogonal_spectra_is_90_degrees():
    ref = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2): pixels [1,0] and [0,1]
    est = np.array([[[0.0, 3.0], [2.0, 0.0]]])
    assert metrics.sam(ref, est) == pytest.approx(90.0, abs=1e-9)


def test_sam_parallel_spectra_is_zero():
    ref = np.array([[[1.0, 2.0], [3.0, 1.0]], [[0.5, 0.5], [2.0, 7.0]]])
    assert metrics.sam(ref, 3.0 * ref) == pytest.approx(0.0, abs=1e-5)


def test_sam_45_degrees():
    ref = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    est = np.array([[[1.0, 1.0], [5.0, 5.0]]])  # [1,0]~[1,1] and [0,2]~[5,5]: 45 degrees each
    assert metrics.sam(ref, est) == pytest.approx(45.0, abs=1e-9)


def test_sam_mean_over_pixels_skipping_zero_spectra():
    # Angles 45 and 0; the third pixel has a zero estimate and is skipped (not counted as 90 or 0).
    ref = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    est = np.array([[[1.0, 1.0], [0.0, 2.0], [0.0, 0.0]]])
    assert metrics.sam(ref, est) == pytest.approx((45.0 + 0.0) / 2, abs=1e-9)


def test_cc_hand_value():
    # a = 1,2,3,4 and b = 1,3,2,4: centred a = -1.5,-.5,.5,1.5; centred b = -1.5,.5,-.5,1.5
    # sum(ab) = 2.25 - .25 - .25 + 2.25 = 4; sum(a^2) = sum(b^2) = 5 -> r = 4/5.
    ref = cube([[1, 2], [3, 4]], [[1, 2], [3, 4]])
    est = cube([[1, 3], [2, 4]], [[2 * 1 + 1, 2 * 2 + 1], [2 * 3 + 1, 2 * 4 + 1]])  # band 1: affine -> r = 1
    assert metrics.cc(ref, est) == pytest.approx((4 / 5 + 1.0) / 2, rel=1e-12)


def test_cc_anticorrelated_band():
    ref = cube([[1, 2], [3, 4]])
    est = cube([[-1, -2], [-3, -4]])
    assert metrics.cc(ref, est) == pytest.approx(-1.0, rel=1e-12)


def test_dd_is_mean_absolute_difference():
    # |differences|: band 0 -> 0,0,0,1; band 1 -> 1,1,0,0; total 3 over 8 values.
    assert metrics.dd(REF, EST) == pytest.approx(3 / 8, rel=1e-12)


# --- UIQI ------------------------------------------------------------------------------------------
# Q = 4 cov mu_a mu_b / ((var_a + var_b)(mu_a^2 + mu_b^2)) over a block; with the block as large as
# the image there is exactly one block: the whole image.

def test_uiqi_identical_is_one():
    ref = cube([[1, 2, 0], [3, 4, 1], [2, 2, 5]])
    assert metrics.uiqi(ref, ref, block=3) == pytest.approx(1.0, rel=1e-12)


def test_uiqi_constant_offset_one_block_3x3():
    # a: columns 0,1,2 in every row -> mean 1, variance (1 + 0 + 1)/3 = 2/3.
    # b = a + 1: mean 2, variance 2/3, covariance 2/3.
    a = [[0, 1, 2]] * 3
    b = [[1, 2, 3]] * 3
    expected = 4 * (2 / 3) * 1 * 2 / ((2 / 3 + 2 / 3) * (1**2 + 2**2))  # = 0.8
    assert metrics.uiqi(cube(a), cube(b), block=3) == pytest.approx(expected, rel=1e-12)


def test_uiqi_scaled_one_block_3x3():
    # b = 2a: mean 2, variance 4 * 2/3 = 8/3, covariance 2 * 2/3 = 4/3.
    a = [[0, 1, 2]] * 3
    b = [[0, 2, 4]] * 3
    expected = 4 * (4 / 3) * 1 * 2 / ((2 / 3 + 8 / 3) * (1**2 + 2**2))  # = 0.64
    assert metrics.uiqi(cube(a), cube(b), block=3) == pytest.approx(expected, rel=1e-12)


def test_uiqi_block_larger_than_image_is_clipped_to_image():
    a = [[0, 1, 2]] * 3
    b = [[1, 2, 3]] * 3
    expected = 4 * (2 / 3) * 1 * 2 / ((2 / 3 + 2 / 3) * (1**2 + 2**2))
    assert metrics.uiqi(cube(a), cube(b)) == pytest.approx(expected, rel=1e-12)  # default block 32 > 3


def test_uiqi_constant_offset_one_block_even_4x4():
    # a: columns 0,1,2,3 in every row -> mean 1.5, variance (2.25 + .25 + .25 + 2.25)/4 = 1.25.
    # b = a + 1: mean 2.5, variance 1.25, covariance 1.25.
    a = [[0, 1, 2, 3]] * 4
    b = [[1, 2, 3, 4]] * 4
    expected = 4 * 1.25 * 1.5 * 2.5 / ((1.25 + 1.25) * (1.5**2 + 2.5**2))  # = 15/17
    assert metrics.uiqi(cube(a), cube(b), block=4) == pytest.approx(expected, rel=1e-9)


# --- SSIM ------------------------------------------------------------------------------------------
# A 3x3 image gets a 3x3 Gaussian window (sigma 1.5) and a single valid position (the centre).

def test_ssim_identical_is_one():
    rng = np.random.default_rng(0)
    ref = rng.random((16, 16, 2))
    assert metrics.ssim(ref, ref) == pytest.approx(1.0, rel=1e-12)


def test_ssim_constant_images():
    # Constant 2 vs constant 1: no variance, no covariance; data range = max(ref) = 2.
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    expected = (2 * 2 * 1 + c1) * (0 + c2) / ((2**2 + 1**2 + c1) * (0 + c2))
    assert metrics.ssim(np.full((3, 3, 1), 2.0), np.full((3, 3, 1), 1.0)) == pytest.approx(expected, rel=1e-12)


def test_ssim_constant_offset_3x3():
    # a: columns 0,1,2 -> by the window's symmetry the weighted mean is 1; b = a + 1 has mean 2 and the
    # same variance, covariance = variance, so the contrast-structure term is 1.
    # data range = max(a) = 2 -> C1 = (0.02)^2.
    a = [[0, 1, 2]] * 3
    b = [[1, 2, 3]] * 3
    c1 = (0.01 * 2) ** 2
    expected = (2 * 1 * 2 + c1) / (1**2 + 2**2 + c1)
    assert metrics.ssim(cube(a), cube(b)) == pytest.approx(expected, rel=1e-12)


def test_ssim_scaled_3x3():
    # b = 2a. Gaussian 3x3, sigma 1.5: 1-D weights (e, 1, e)/(1 + 2e), e = exp(-1/(2*1.5^2)).
    # The columns 0,1,2 give weighted mean 1 and weighted variance 2e/(1 + 2e) (columns 0 and 2 each
    # 1 away from the mean, each weighing e/(1+2e) after summing over rows).
    e = math.exp(-1 / (2 * 1.5**2))
    var_a = 2 * e / (1 + 2 * e)
    mu_a, mu_b, var_b, cov = 1.0, 2.0, 4 * var_a, 2 * var_a
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    expected = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    a = [[0, 1, 2]] * 3
    b = [[0, 2, 4]] * 3
    assert metrics.ssim(cube(a), cube(b)) == pytest.approx(expected, rel=1e-9)


def test_ssim_noisy_is_below_one():
    rng = np.random.default_rng(1)
    ref = rng.random((16, 16, 2))
    noisy = ref + 0.1 * rng.standard_normal(ref.shape)
    value = metrics.ssim(ref, noisy)
    assert 0.0 < value < 1.0


# --- common behaviour ------------------------------------------------------------------------------

def test_all_zero_reference_bands_are_dropped():
    # A third band whose reference is all zero (its estimate is not) must not change any index.
    ref = np.concatenate([REF, np.zeros((2, 2, 1))], axis=2)
    est = np.concatenate([EST, np.full((2, 2, 1), 7.0)], axis=2)
    assert metrics.psnr(ref, est) == pytest.approx(
        (10 * np.log10(4**2 / 0.25) + 10 * np.log10(2**2 / 0.5)) / 2, rel=1e-12)
    assert metrics.rmse(ref, est) == pytest.approx(math.sqrt((0.25 + 0.5) / 2), rel=1e-12)
    assert metrics.ergas(ref, est, ratio=4) == pytest.approx(
        100 * 4 * math.sqrt(((0.5 / 2.5) ** 2 + (math.sqrt(0.5) / 2) ** 2) / 2), rel=1e-12)
    assert metrics.dd(ref, est) == pytest.approx(3 / 8, rel=1e-12)
    np.testing.assert_allclose(metrics.mse_per_band(ref, est), [0.25, 0.5], rtol=1e-12)


def test_all_zero_band_in_the_middle_dropped_for_sam():
    # Spectra [1, 0, 0] vs [1, 5, 1]: with the zero middle band dropped the angle is 45 degrees.
    ref = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    est = np.array([[[1.0, 5.0, 1.0], [3.0, 5.0, 3.0]]])
    assert metrics.sam(ref, est) == pytest.approx(45.0, abs=1e-9)


@pytest.mark.parametrize("fn", [metrics.psnr, metrics.rmse, metrics.ergas, metrics.sam, metrics.uiqi,
                                metrics.ssim, metrics.cc, metrics.dd, metrics.mse_per_band,
                                metrics.quality_assessment])
def test_shape_mismatch_raises_data_error(fn):
    with pytest.raises(DataError, match="shapes differ"):
        fn(np.ones((4, 4, 3)), np.ones((4, 4, 2)))


def test_quality_assessment_returns_all_keys():
    rng = np.random.default_rng(2)
    ref = rng.random((12, 12, 3)) + 0.1
    est = ref + 0.01 * rng.standard_normal(ref.shape)
    full = metrics.quality_assessment(ref, est, ratio_ergas=2)
    assert set(full) == {"psnr", "rmse", "ergas", "sam", "uiqi", "ssim", "cc", "dd"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in full.values())
    short = metrics.quality_assessment(ref, est, full=False)
    assert set(short) == {"psnr", "rmse", "ergas", "sam"}
    assert full["ergas"] == pytest.approx(2 * short["ergas"], rel=1e-12)


def test_quality_assessment_hand_values():
    out = metrics.quality_assessment(REF, EST, ratio_ergas=4)
    assert out["psnr"] == pytest.approx((10 * np.log10(16 / 0.25) + 10 * np.log10(4 / 0.5)) / 2, rel=1e-12)
    assert out["rmse"] == pytest.approx(math.sqrt(0.375), rel=1e-12)
    assert out["dd"] == pytest.approx(3 / 8, rel=1e-12)
