"""Spectral response functions (ssran_edge.srf): bundled tables, resampling onto cube band centres
(checked against hand values), MSI simulation and bad input."""

import numpy as np
import pytest
import scipy.io

from ssran_edge.errors import DataError
from ssran_edge.srf import BUNDLED, load_srf, resample_curves, simulate_msi

CAVE_NM = np.arange(400, 701, 10, dtype=np.float64)  # 31 centres
WIDE_NM = np.arange(400, 2501, 10, dtype=np.float64)  # 211 centres, 400-2500 nm


# --- bundled SRFs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, bands", [("D_103", 4), ("nikon_d700", 3), ("sentinel2a", 10), ("landsat8", 9)])
def test_bundled_srfs_load(name, bands):
    srf = load_srf(name)
    assert srf.bands == bands
    assert len(srf.band_names) == bands
    if srf.matrix is not None:
        assert np.isfinite(srf.matrix).all() and (srf.matrix >= 0).all()
    else:
        assert srf.curves.shape == (len(srf.wavelengths), bands)
        assert np.all(np.diff(srf.wavelengths) > 0)
        assert (srf.curves >= 0).all()


def test_bundled_names_cover_the_table():
    assert set(BUNDLED) == {"D_103", "nikon_d700", "sentinel2a", "landsat8", "srgb"}


def test_d103_is_4x103_matrix():
    srf = load_srf("D_103")
    assert srf.matrix.shape == (4, 103)
    assert srf.wavelengths is None and srf.curves is None


def test_curve_band_names():
    assert load_srf("nikon_d700").band_names == ["R", "G", "B"]
    assert load_srf("sentinel2a").band_names[-2:] == ["B11", "B12"]


@pytest.mark.parametrize("name, centres", [("D_103", None), ("nikon_d700", CAVE_NM),
                                           ("sentinel2a", WIDE_NM), ("landsat8", WIDE_NM)])
def test_matrix_for_rows_sum_to_one(name, centres):
    srf = load_srf(name)
    hsi_bands = 103 if centres is None else len(centres)
    D = srf.matrix_for(centres, hsi_bands)
    assert D.shape == (srf.bands, hsi_bands)
    assert D.dtype == np.float32
    assert (D >= 0).all()
    np.testing.assert_allclose(D.sum(axis=1), np.ones(srf.bands), rtol=0, atol=1e-5)


def test_matrix_rows_are_the_matrix_scaled():
    srf = load_srf("D_103")
    D = srf.matrix_for(None, 103)
    np.testing.assert_allclose(D, srf.matrix / srf.matrix.sum(axis=1, keepdims=True), rtol=1e-6)


# --- MSI simulation --------------------------------------------------------------------------------

def test_simulate_msi_equals_einsum():
    rng = np.random.default_rng(0)
    hsi = rng.random((5, 6, 31)).astype(np.float32)
    D = load_srf("nikon_d700").matrix_for(CAVE_NM, 31)
    msi = simulate_msi(hsi, D)
    assert msi.shape == (5, 6, 3) and msi.dtype == np.float32
    expected = np.einsum("hwb,mb->hwm", hsi.astype(np.float64), D.astype(np.float64))
    np.testing.assert_allclose(msi, expected, rtol=1e-5, atol=1e-6)


def test_simulate_msi_hand_values():
    hsi = np.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]]], dtype=np.float32)  # (1, 2, 3)
    D = np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]])
    msi = simulate_msi(hsi, D)
    np.testing.assert_allclose(msi[0, 0], [0.5 * 1 + 0.5 * 2, 0.25 * 2 + 0.75 * 3])
    np.testing.assert_allclose(msi[0, 1], [0.0, 0.75 * 4])


def test_simulate_msi_wrong_band_count():
    D = load_srf("D_103").matrix_for(None, 103)
    with pytest.raises(DataError, match="expects 103 HSI bands, the cube has 31"):
        simulate_msi(np.zeros((2, 2, 31), dtype=np.float32), D)


# --- CSV curve tables resampled onto cube centres --------------------------------------------------

def _write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_interpolation_case(tmp_path):
    # Triangle sampled every 10 nm: 400:0, 410:0.5, 420:1, 430:0.5, 440:0. Centres 405..435 (10 nm
    # apart, bins [400,410), [410,420), ...) hold one curve sample each, so the curve is interpolated
    # at the centres: 0.25, 0.75, 0.75, 0.25 -> sum 2 -> rows 0.125, 0.375, 0.375, 0.125.
    # Rows deliberately out of order in the file: the table is sorted by wavelength.
    path = _write_csv(tmp_path / "tri10.csv", ["wavelength_nm", "T"],
                      [(420, 1), (400, 0), (410, 0.5), (440, 0), (430, 0.5)])
    srf = load_srf(path)
    assert srf.band_names == ["T"]
    centres = np.array([405.0, 415.0, 425.0, 435.0])
    np.testing.assert_allclose(resample_curves(srf.wavelengths, srf.curves, centres),
                               [[0.25, 0.75, 0.75, 0.25]], rtol=1e-12)
    D = srf.matrix_for(centres, 4)
    np.testing.assert_allclose(D, [[0.25 / 2, 0.75 / 2, 0.75 / 2, 0.25 / 2]], rtol=1e-6)


def test_csv_interpolation_at_same_centres(tmp_path):
    # Centres exactly on the 10-nm samples: interpolation returns the samples themselves.
    path = _write_csv(tmp_path / "tri10.csv", ["wavelength_nm", "T"],
                      [(400, 0), (410, 0.5), (420, 1), (430, 0.5), (440, 0)])
    srf = load_srf(path)
    centres = np.array([400.0, 410.0, 420.0, 430.0, 440.0])
    D = srf.matrix_for(centres, 5)
    np.testing.assert_allclose(D, [[0 / 2, 0.5 / 2, 1 / 2, 0.5 / 2, 0 / 2]], rtol=1e-6, atol=1e-7)


def test_csv_bin_averaging_case(tmp_path):
    # Triangle at 1 nm: T(w) = 1 - |w - 420| / 20 on 400..440. Second band: flat 1 on 400..440.
    # Centres 410 and 430 -> bins [400, 420) and [420, 440).
    #   T, bin 1: w = 400..419 -> (w - 400)/20 = 0, .05, ..., .95 -> mean (0 + 1 + ... + 19)/20/20 = 190/400
    #   T, bin 2: w = 420..439 -> 1, .95, ..., .05             -> mean (20 + 19 + ... + 1)/20/20 = 210/400
    #   flat: 1 and 1.
    rows = [(w, 1 - abs(w - 420) / 20, 1.0) for w in range(400, 441)]
    path = _write_csv(tmp_path / "tri1.csv", ["wavelength_nm", "T", "Flat"], rows)
    srf = load_srf(path)
    assert srf.band_names == ["T", "Flat"]
    centres = np.array([410.0, 430.0])
    np.testing.assert_allclose(resample_curves(srf.wavelengths, srf.curves, centres),
                               [[190 / 400, 210 / 400], [1.0, 1.0]], rtol=1e-12)
    D = srf.matrix_for(centres, 2)
    # Row sums: 190/400 + 210/400 = 1, and 2.
    np.testing.assert_allclose(D, [[190 / 400, 210 / 400], [0.5, 0.5]], rtol=1e-6)


def test_csv_negative_responses_clipped(tmp_path):
    path = _write_csv(tmp_path / "neg.csv", ["wavelength_nm", "A"],
                      [(400, -0.2), (410, 1.0), (420, 1.0)])
    srf = load_srf(path)
    assert srf.curves.min() == 0.0
    np.testing.assert_allclose(srf.matrix_for(np.array([400.0, 410.0, 420.0]), 3), [[0.0, 0.5, 0.5]])


# --- bad input -------------------------------------------------------------------------------------

def test_matrix_srf_wrong_band_count():
    with pytest.raises(DataError, match="D_103 is a 4x103 matrix; the cube has 31 bands"):
        load_srf("D_103").matrix_for(CAVE_NM, 31)


def test_curve_srf_wrong_number_of_wavelengths():
    with pytest.raises(DataError, match="31 wavelengths given for a cube of 30 bands"):
        load_srf("nikon_d700").matrix_for(CAVE_NM, 30)


def test_band_without_response_named():
    # Over 400-700 nm Sentinel-2A's SWIR bands B11 (~1610 nm) and B12 (~2190 nm) see nothing.
    with pytest.raises(DataError, match="no response over the cube's wavelengths") as info:
        load_srf("sentinel2a").matrix_for(CAVE_NM, 31)
    message = str(info.value)
    assert "B11" in message and "B12" in message
    assert "B2," not in message and "B3," not in message  # visible bands do respond


def test_csv_band_without_response_named(tmp_path):
    path = _write_csv(tmp_path / "two.csv", ["wavelength_nm", "Vis", "Far"],
                      [(400, 1, 0), (410, 1, 0), (900, 0, 1), (910, 0, 1)])
    with pytest.raises(DataError, match=r"band\(s\) Far have no response"):
        load_srf(path).matrix_for(np.array([400.0, 410.0]), 2)


def test_non_numeric_csv(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text("wavelength_nm,R\n400,high\n410,low\n")
    with pytest.raises(DataError, match="not a numeric CSV curve table"):
        load_srf(path)


def test_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="not a numeric CSV curve table"):
        load_srf(path)


def test_csv_wrong_header(tmp_path):
    path = _write_csv(tmp_path / "hdr.csv", ["nm", "R"], [(400, 1), (410, 1)])
    with pytest.raises(DataError, match="expected columns wavelength_nm"):
        load_srf(path)


def test_csv_nan(tmp_path):
    path = _write_csv(tmp_path / "nan.csv", ["wavelength_nm", "R"], [(400, "nan"), (410, 1)])
    with pytest.raises(DataError, match="NaN/Inf in the curve table"):
        load_srf(path)


def test_curve_srf_without_wavelengths():
    with pytest.raises(DataError, match="curve table: the cube needs band wavelengths"):
        load_srf("nikon_d700").matrix_for(None, 31)


def test_unknown_srf_name(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_srf(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="bundled SRFs: D_103"):
        load_srf("not_a_sensor")


def test_mat_srf_with_negative_weights(tmp_path):
    path = tmp_path / "D.mat"
    scipy.io.savemat(path, {"D": np.array([[0.5, -0.1, 0.6]])})
    with pytest.raises(DataError, match="negative weights"):
        load_srf(path)


def test_mat_srf_loaded_from_file(tmp_path):
    path = tmp_path / "D.mat"
    scipy.io.savemat(path, {"D": np.array([[1.0, 1.0, 2.0], [0.0, 3.0, 1.0]])})
    srf = load_srf(path)
    assert srf.band_names == ["band1", "band2"]
    np.testing.assert_allclose(srf.matrix_for(None, 3), [[0.25, 0.25, 0.5], [0.0, 0.75, 0.25]], rtol=1e-6)


def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; it used to make the first header `\\ufeffwavelength_nm`."""
    from ssran_edge.srf import BUNDLED_DIR
    from ssran_edge.srf import load_srf as load

    plain = (load("nikon_d700").wavelengths, load("nikon_d700").curves)
    text = (BUNDLED_DIR / "nikon_d700.csv").read_text()
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    srf = load(tmp_path / "excel.csv")
    assert srf.band_names == load("nikon_d700").band_names
    np.testing.assert_array_equal(srf.wavelengths, plain[0])
    np.testing.assert_array_equal(srf.curves, plain[1])
