"""Cube readers (ssran_edge.data.readers) on real files written into tmp_path, plus bad input and
the team's shared data sets."""

import numpy as np
import pytest
import scipy.io

from ssran_edge.data.readers import (
    CAVE_WAVELENGTHS,
    band_major_shape,
    check_cube,
    load_mat_variables,
    read_cave_scene,
    read_cube,
    read_envi,
    read_mat,
    read_numpy,
)
from ssran_edge.errors import DataError


def sample_cube(shape=(4, 5, 3), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# --- MATLAB v5 --------------------------------------------------------------------------------------

def test_mat_v5_named_variable(tmp_path):
    cube = sample_cube()
    path = tmp_path / "scene.mat"
    scipy.io.savemat(path, {"HSim": cube, "other": np.ones((2, 2, 2)), "note": np.arange(3)})
    out = read_mat(path, "HSim")
    assert out.data.dtype == np.float32
    assert out.data.shape == (4, 5, 3)
    np.testing.assert_array_equal(out.data, cube)
    assert out.wavelengths is None
    assert "HSim" in out.source
    np.testing.assert_array_equal(read_cube(path, "HSim").data, cube)


def test_mat_v5_single_3d_array_needs_no_name(tmp_path):
    cube = sample_cube()
    path = tmp_path / "one.mat"
    scipy.io.savemat(path, {"X": cube, "wl": np.arange(3.0)})
    np.testing.assert_array_equal(read_mat(path).data, cube)


def test_mat_v5_ambiguous_without_name(tmp_path):
    path = tmp_path / "two.mat"
    scipy.io.savemat(path, {"A": sample_cube(), "B": sample_cube(seed=1)})
    with pytest.raises(DataError, match="name the variable"):
        read_mat(path)


def test_mat_v5_missing_variable_names_it(tmp_path):
    path = tmp_path / "scene.mat"
    scipy.io.savemat(path, {"HSim": sample_cube()})
    with pytest.raises(DataError, match="no variable named 'MSim'"):
        read_mat(path, "MSim")
    with pytest.raises(DataError, match="MSim"):
        read_cube(path, "MSim")


# --- MATLAB v7.3 (HDF5) -------------------------------------------------------------------------------

def _write_v73(path, variables, userblock=True):
    """MATLAB v7.3 layout: HDF5 behind a 512-byte userblock whose start is MATLAB's text header; each
    array is stored with its axes reversed (column-major MATLAB seen from row-major HDF5)."""
    import h5py

    kwargs = {"userblock_size": 512} if userblock else {}
    with h5py.File(path, "w", **kwargs) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=np.ascontiguousarray(value.T))
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    if userblock:
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        with open(path, "r+b") as f:
            f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM")


def test_mat_v73_transposed_back_to_logical_shape(tmp_path):
    logical = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)  # (H, W, B)
    path = tmp_path / "v73.mat"
    _write_v73(path, {"cube": logical, "D": np.arange(6.0).reshape(2, 3)})
    raw = open(path, "rb").read(520)
    assert raw[:6] == b"MATLAB" and raw[512:520] == b"\x89HDF\r\n\x1a\n"
    import h5py
    with h5py.File(path, "r") as f:
        assert f["cube"].shape == (4, 3, 2)  # stored reversed
    out = read_mat(path, "cube")
    assert out.data.shape == (2, 3, 4)
    np.testing.assert_array_equal(out.data, logical.astype(np.float32))
    variables = load_mat_variables(path)
    assert set(variables) == {"cube", "D"}
    np.testing.assert_array_equal(variables["D"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_cube(path).data, logical)  # the single 3-D array


def test_mat_v73_hdf5_signature_at_offset_zero(tmp_path):
    logical = sample_cube((3, 2, 5))
    path = tmp_path / "plain.mat"
    _write_v73(path, {"X": logical}, userblock=False)
    assert open(path, "rb").read(8) == b"\x89HDF\r\n\x1a\n"
    np.testing.assert_array_equal(read_mat(path, "X").data, logical)


def test_mat_v73_missing_variable(tmp_path):
    path = tmp_path / "v73.mat"
    _write_v73(path, {"cube": sample_cube()})
    with pytest.raises(DataError, match="no variable named 'HSim'"):
        read_mat(path, "HSim")


def test_mat_v73_truncated(tmp_path):
    path = tmp_path / "v73.mat"
    _write_v73(path, {"cube": sample_cube((20, 20, 8))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable .mat file"):
        read_mat(path, "cube")


# --- CAVE -----------------------------------------------------------------------------------------------

def _write_cave(folder, bands, scene="toy"):
    from PIL import Image

    folder.mkdir()
    for i in range(bands.shape[2]):
        im = Image.fromarray(bands[:, :, i])
        assert im.mode == "I;16"
        im.save(folder / f"{scene}_ms_{i + 1:02d}.png")


def test_cave_scene_folder(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 65536, size=(6, 7, 31), dtype=np.uint16)
    raw[0, 0, :] = 65535
    raw[0, 1, :] = 0
    folder = tmp_path / "toy_ms"
    _write_cave(folder, raw)
    (folder / "toy_RGB.bmp").write_bytes(b"not a band")  # as in the real folders; must be ignored
    for cube in (read_cave_scene(folder), read_cube(folder)):
        assert cube.data.shape == (6, 7, 31)
        assert cube.data.dtype == np.float32
        np.testing.assert_allclose(cube.data, raw.astype(np.float64) / 65535, rtol=0, atol=1e-7)
        assert cube.data[0, 0, 5] == 1.0 and cube.data[0, 1, 5] == 0.0
        np.testing.assert_array_equal(cube.wavelengths, np.arange(400, 701, 10))
    assert CAVE_WAVELENGTHS[0] == 400 and CAVE_WAVELENGTHS[-1] == 700 and len(CAVE_WAVELENGTHS) == 31


def test_cave_band_order_follows_file_numbers(tmp_path):
    raw = np.zeros((2, 2, 31), dtype=np.uint16)
    for i in range(31):
        raw[:, :, i] = (i + 1) * 1000
    folder = tmp_path / "order_ms"
    _write_cave(folder, raw, scene="order")
    cube = read_cave_scene(folder)
    np.testing.assert_allclose(cube.data[0, 0], np.arange(1, 32) * 1000 / 65535, atol=1e-7)


def test_cave_wrong_number_of_bands(tmp_path):
    folder = tmp_path / "short_ms"
    _write_cave(folder, np.zeros((2, 2, 30), dtype=np.uint16), scene="short")
    with pytest.raises(DataError, match="expected 31 CAVE band PNGs.*found 30"):
        read_cave_scene(folder)


def test_cave_unreadable_png(tmp_path):
    folder = tmp_path / "bad_ms"
    _write_cave(folder, np.zeros((2, 2, 31), dtype=np.uint16), scene="bad")
    (folder / "bad_ms_07.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    with pytest.raises(DataError, match="unreadable PNG"):
        read_cave_scene(folder)


# --- ENVI ----------------------------------------------------------------------------------------------

def test_envi_wavelengths_in_nm(tmp_path):
    import spectral.io.envi as envi

    cube = sample_cube((4, 5, 3))
    hdr = tmp_path / "scene.hdr"
    envi.save_image(str(hdr), cube, metadata={"wavelength": [450.0, 550.0, 650.0], "wavelength units": "nm"},
                    ext=".img")
    for path in (hdr, tmp_path / "scene.img"):
        out = read_cube(path)
        assert out.data.shape == (4, 5, 3)
        np.testing.assert_allclose(out.data, cube, rtol=0, atol=0)
        np.testing.assert_allclose(out.wavelengths, [450.0, 550.0, 650.0])


@pytest.mark.parametrize("units", ["Micrometers", "micrometer", "um", "Unknown"])
def test_envi_micrometre_header_converted_to_nm(tmp_path, units):
    # "Unknown" units with centres below 30 are taken as micrometres too.
    import spectral.io.envi as envi

    cube = sample_cube((3, 3, 4))
    metadata = {"wavelength": [0.4, 0.5, 0.6, 2.2], "wavelength units": units}
    hdr = tmp_path / "um.hdr"
    envi.save_image(str(hdr), cube, metadata=metadata, ext=".img")
    out = read_envi(hdr)
    np.testing.assert_allclose(out.wavelengths, [400.0, 500.0, 600.0, 2200.0], rtol=1e-6)


def test_envi_without_header(tmp_path):
    path = tmp_path / "lonely.img"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="no ENVI header lonely.hdr"):
        read_envi(path)


# --- NumPy ---------------------------------------------------------------------------------------------

def test_npy(tmp_path):
    cube = sample_cube()
    np.save(tmp_path / "c.npy", cube.astype(np.float64))
    out = read_cube(tmp_path / "c.npy")
    assert out.data.dtype == np.float32
    np.testing.assert_allclose(out.data, cube)
    assert out.wavelengths is None


def test_npz_cube_and_wavelengths(tmp_path):
    cube = sample_cube()
    path = tmp_path / "c.npz"
    np.savez(path, cube=cube, other=sample_cube(seed=5), wavelengths_nm=np.array([[500, 600, 700]]))
    out = read_cube(path)
    np.testing.assert_array_equal(out.data, cube)
    assert out.wavelengths.dtype == np.float32
    np.testing.assert_array_equal(out.wavelengths, [500.0, 600.0, 700.0])
    np.testing.assert_array_equal(read_numpy(path, "other").data, sample_cube(seed=5))


def test_npz_missing_key(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, cube=sample_cube())
    with pytest.raises(DataError, match="no array named 'hsi'"):
        read_numpy(path, "hsi")


# --- band-major (Jasper Ridge / Samson layout) ----------------------------------------------------------

def test_band_major_shape_matches_matlab_column_major():
    # MATLAB: X is 2x3x2; Y = reshape(X, 6, 2)' enumerates pixels down the columns:
    # (1,1) (2,1) (1,2) (2,2) (1,3) (2,3). Here Y(b, p) = 10*b + p (0-based b, p).
    Y = np.array([[0, 1, 2, 3, 4, 5],
                  [10, 11, 12, 13, 14, 15]], dtype=np.float64)
    X = band_major_shape(Y, rows=2, cols=3)
    assert X.shape == (2, 3, 2)
    np.testing.assert_array_equal(X[:, :, 0], [[0, 2, 4],
                                               [1, 3, 5]])
    np.testing.assert_array_equal(X[:, :, 1], [[10, 12, 14],
                                               [11, 13, 15]])
    np.testing.assert_array_equal(X[1, 2], [5, 15])


def test_band_major_shape_wrong_size():
    with pytest.raises(DataError, match="does not hold 3x3 pixels"):
        band_major_shape(np.zeros((2, 6)), 3, 3)


# --- bad input: always DataError, naming the problem ----------------------------------------------------

def test_empty_mat_file(tmp_path):
    path = tmp_path / "empty.mat"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_cube(path)


def test_empty_npy_file(tmp_path):
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="unreadable NumPy file"):
        read_cube(path)


def test_truncated_npy(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, sample_cube((10, 10, 5)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable NumPy file"):
        read_cube(path)


def test_truncated_npz(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, cube=sample_cube((10, 10, 5)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable NumPy file"):
        read_cube(path)


def test_truncated_mat(tmp_path):
    path = tmp_path / "t.mat"
    scipy.io.savemat(path, {"X": sample_cube((10, 10, 5))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable .mat file"):
        read_cube(path, "X")


def test_random_bytes_with_mat_suffix(tmp_path):
    path = tmp_path / "noise.mat"
    path.write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(DataError, match="not a readable .mat file"):
        read_cube(path)


def test_nan_pixels(tmp_path):
    cube = sample_cube()
    cube[1, 2, 0] = np.nan
    cube[0, 0, 2] = np.inf
    path = tmp_path / "nan.npy"
    np.save(path, cube)
    with pytest.raises(DataError, match="2 NaN/Inf values"):
        read_cube(path)
    mat = tmp_path / "nan.mat"
    scipy.io.savemat(mat, {"X": cube})
    with pytest.raises(DataError, match="NaN/Inf"):
        read_cube(mat, "X")


def test_one_dimensional_array(tmp_path):
    path = tmp_path / "line.npy"
    np.save(path, np.arange(5.0))
    with pytest.raises(DataError, match=r"expected an \(H, W, bands\) array, got shape \(5,\)"):
        read_cube(path)


def test_non_numeric_array():
    with pytest.raises(DataError, match="expected numeric pixels"):
        check_cube(np.array([["a", "b"], ["c", "d"]]))


def test_check_cube_band_count_and_2d():
    assert check_cube(np.ones((2, 3))).shape == (2, 3, 1)
    with pytest.raises(DataError, match="expected 4 bands, got 3"):
        check_cube(np.ones((2, 2, 3)), bands=4)
    with pytest.raises(DataError, match="empty array"):
        check_cube(np.ones((0, 2, 3)))


def test_unknown_extension(tmp_path):
    path = tmp_path / "scene.xyz"
    path.write_bytes(b"II*\x00")
    with pytest.raises(DataError, match="unknown input format '.xyz'"):
        read_cube(path)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read_cube(tmp_path / "nowhere.mat")
    with pytest.raises(DataError, match="no such file"):
        read_mat(tmp_path / "nowhere.mat")


# --- the team's real data -------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_shared_data_real_files():
    from ssran_edge.data.protocols import shared_data_dir

    root = shared_data_dir()
    assert root.is_dir(), f"shared data folder missing: {root} (set SSRAN_DATA)"

    balloons = read_cave_scene(root / "cave" / "balloons_ms")
    assert balloons.data.shape == (512, 512, 31)
    assert balloons.data.dtype == np.float32
    assert balloons.data.min() >= 0.0 and balloons.data.max() <= 1.0
    assert balloons.data.max() > 0.0
    np.testing.assert_array_equal(balloons.wavelengths, np.arange(400, 701, 10))

    paris = root / "paris_hyperion_ali" / "paris_data_hs_ms.mat"
    assert read_mat(paris, "HSim").data.shape == (72, 72, 128)
    assert read_mat(paris, "MSim").data.shape == (72, 72, 9)

    Y = load_mat_variables(root / "jasper_ridge" / "JasperRidge2_R198.mat", ["Y"])["Y"]
    assert Y.shape == (198, 10000)
    cube = band_major_shape(Y, 100, 100)
    assert cube.shape == (100, 100, 198)
    for r, c in [(0, 0), (1, 0), (0, 1), (37, 82), (99, 3), (99, 99)]:
        np.testing.assert_array_equal(cube[r, c], Y[:, c * 100 + r])


@pytest.mark.shared_data
def test_read_cube_understands_band_major_files_and_stored_wavelengths(shared_data):
    from ssran_edge.data.readers import read_cube

    jasper = read_cube(shared_data / "jasper_ridge" / "JasperRidge2_R198.mat")
    assert jasper.data.shape == (100, 100, 198)
    samson = read_cube(shared_data / "samson" / "Samson.mat")
    assert samson.data.shape == (95, 95, 156) and samson.data.max() <= 1.0
    muufl = read_cube(shared_data / "muufl_gulfport" / "an_hsi_image_sub_for_demo.mat", "hsi_img_sub")
    assert muufl.data.shape == (51, 88, 72)
    assert muufl.wavelengths[0] == pytest.approx(367.7, abs=0.1)
    assert muufl.wavelengths[-1] == pytest.approx(1043.4, abs=0.1)
