"""GeoTIFF/COG/JP2 in and out through the real GDAL of rasterio's wheel, on the real Paris ALI scene."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ssran_edge.data.cube import RasterOptions
from ssran_edge.errors import DataError
from tests.conftest import REPO

rasterio = pytest.importorskip("rasterio", reason="the [geo] extra (rasterio) is not installed")
from affine import Affine  # noqa: E402  (rasterio's dependency)
from rasterio.crs import CRS  # noqa: E402

pytestmark = pytest.mark.shared_data
UTM31N = CRS.from_epsg(32631)  # Paris
ORIGIN = Affine(30.0, 0.0, 448_020.0, 0.0, -30.0, 5_414_970.0)  # Landsat/ALI 30 m grid, north up
ALI = ["1p", "1", "2", "3", "4", "4p", "5p", "5", "7"]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ssran_edge.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def paris_msi(shared_data):
    from ssran_edge.data.readers import read_mat

    return read_mat(shared_data / "paris_hyperion_ali" / "paris_data_hs_ms.mat", "MSim").data  # (72, 72, 9)


def write_dn_tif(path, msi, *, nodata_block=False, scale=1e-4, offset=0.0, crs=UTM31N, transform=ORIGIN):
    """The MSI as uint16 digital numbers with GDAL scale/offset metadata, described bands, nodata 0."""
    dn = np.round((msi - offset) / scale).astype(np.uint16)
    dn = np.maximum(dn, 1)  # 0 is nodata: no valid pixel may hold it
    if nodata_block:
        dn[10:20, 30:45] = 0
    profile = dict(driver="GTiff", height=dn.shape[0], width=dn.shape[1], count=dn.shape[2], dtype="uint16",
                   nodata=0, tiled=True, blockxsize=16, blockysize=16)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(dn, -1, 0))
        for i, name in enumerate(ALI, start=1):
            dst.set_band_description(i, f"B{name}")
        dst.scales = (scale,) * dn.shape[2]
        dst.offsets = (offset,) * dn.shape[2]
    return path, dn.astype(np.float64) * scale + offset


def test_read_keeps_crs_transform_scale_and_nodata(tmp_path, paris_msi):
    from ssran_edge.geo import read_raster

    path, reflectance = write_dn_tif(tmp_path / "ali.tif", paris_msi, nodata_block=True)
    cube = read_raster(path)
    assert cube.data.shape == (72, 72, 9) and cube.data.dtype == np.float32
    assert CRS.from_wkt(cube.geo.crs) == UTM31N and cube.geo.transform == tuple(ORIGIN)[:6]
    assert cube.geo.descriptions == [f"B{n}" for n in ALI]
    assert cube.valid is not None and not cube.valid[10:20, 30:45].any() and cube.valid.sum() == 72 * 72 - 150
    np.testing.assert_allclose(cube.data[cube.valid], reflectance[cube.valid], rtol=1e-6)
    by_name = read_raster(path, RasterOptions(bands=("B2", "b3", "B4")))  # descriptions, case-insensitive
    by_index = read_raster(path, RasterOptions(bands=("3", "4", "5")))
    np.testing.assert_array_equal(by_name.data, by_index.data)
    np.testing.assert_array_equal(by_name.data, cube.data[:, :, 2:5])
    flags = read_raster(path, RasterOptions(scale=2e-4, offset=0.01))  # flags win over the file's own metadata
    np.testing.assert_allclose(flags.data[cube.valid], (reflectance[cube.valid] * 2 + 0.01), rtol=1e-5)


def test_predict_tif_is_the_npy_result_georeferenced(tmp_path, paris_msi):
    """The same pixels as .tif and .npy give identical outputs; the GeoTIFF carries CRS, transform,
    wavelengths (descriptions, band tags, ENVI-style list), nodata and the model card."""
    path, reflectance = write_dn_tif(tmp_path / "ali.tif", paris_msi)
    np.save(tmp_path / "ali.npy", reflectance.astype(np.float32))
    assert cli("predict", str(path), "--model", "paris", "--output", str(tmp_path / "hsi.tif")).returncode == 0
    result = cli("predict", str(tmp_path / "ali.npy"), "--model", "paris", "--output", str(tmp_path / "hsi.npy"))
    assert result.returncode == 0, result.stderr
    expected = np.load(tmp_path / "hsi.npy")
    card = json.loads((REPO / "ssran_edge/assets/models/paris.json").read_text())
    with rasterio.open(tmp_path / "hsi.tif") as out:
        assert out.crs == UTM31N and out.transform == ORIGIN
        assert out.count == 128 and out.dtypes[0] == "float32" and np.isnan(out.nodata)
        assert out.descriptions[0] == f"{card['wavelengths_nm'][0]:g} nm"
        assert float(out.tags(1)["WAVELENGTH"]) == pytest.approx(card["wavelengths_nm"][0])
        assert out.tags()["wavelength"].startswith("{") and out.tags()["SSRAN_EDGE_ARCH"] == card["arch"]
        assert out.profile["tiled"] and out.compression.name.lower() == "deflate"
        got = np.moveaxis(out.read(), 0, -1)
    np.testing.assert_array_equal(got, expected)


def test_nodata_stays_nodata_and_out_of_the_metrics(tmp_path, paris_msi):
    path, _ = write_dn_tif(tmp_path / "ali.tif", paris_msi, nodata_block=True)
    result = cli("predict", str(path), "--model", "paris", "--output", str(tmp_path / "hsi.tif"))
    assert result.returncode == 0, result.stderr
    assert "nodata: 150 of 5184 pixels" in result.stdout
    with rasterio.open(tmp_path / "hsi.tif") as out:
        hsi = out.read()
        mask = out.dataset_mask()
    assert np.isnan(hsi[:, 10:20, 30:45]).all() and np.isfinite(np.delete(hsi, np.s_[10:20], axis=1)).all()
    assert (mask[10:20, 30:45] == 0).all() and mask[0, 0] == 255


def test_cog_passes_gdal_layout_checks(tmp_path, shared_data):
    """A 512x512 cube as a COG: GDAL's COG layout flag, the main IFD first, tiled, internal overviews."""
    from ssran_edge.data.readers import read_cave_scene
    from ssran_edge.geo import cog_problems

    cube = read_cave_scene(shared_data / "cave" / "superballs_ms")
    rgb = cube.data[:, :, [25, 15, 5]]
    path = tmp_path / "rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", height=512, width=512, count=3, dtype="float32",
                       crs=UTM31N, transform=ORIGIN) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    result = cli("predict", str(path), "--model", "cave", "--output", str(tmp_path / "hsi.tif"), "--cog",
                 "--dtype", "float16", timeout=600)
    assert result.returncode == 0, result.stderr
    assert cog_problems(tmp_path / "hsi.tif") == []
    with rasterio.open(tmp_path / "hsi.tif") as out:
        assert out.overviews(1) and out.crs == UTM31N
        assert out.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"  # half floats, read back as float32
    assert cog_problems(path)  # a plain striped GeoTIFF is not one
    assert not list(tmp_path.glob(".*"))  # no staging file left


def test_envi_output_keeps_map_info(tmp_path, paris_msi):
    path, _ = write_dn_tif(tmp_path / "ali.tif", paris_msi)
    result = cli("predict", str(path), "--model", "paris", "--output", str(tmp_path / "hsi.hdr"))
    assert result.returncode == 0, result.stderr
    header = (tmp_path / "hsi.hdr").read_text()
    assert "map info = {Arbitrary, 1, 1, 448020.0, 5414970.0, 30.0, 30.0, units=Meters}" in header
    assert "coordinate system string" in header and "UTM zone 31N" in header


def test_a_tif_without_georeferencing_works_and_says_so_once(tmp_path, paris_msi):
    path, _ = write_dn_tif(tmp_path / "plain.tif", paris_msi, crs=None)
    result = cli("predict", str(path), "--model", "paris", "--output", str(tmp_path / "hsi.tif"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("has no georeferencing") == 1
    with rasterio.open(tmp_path / "hsi.tif") as out:
        assert out.crs is None


def test_jp2_if_the_wheel_has_a_jpeg2000_driver(tmp_path, paris_msi):
    from rasterio.shutil import copy

    drivers = rasterio.drivers.raster_driver_extensions()
    if "jp2" not in drivers:
        pytest.skip(f"this rasterio wheel's GDAL has no JPEG 2000 driver (extensions: {sorted(drivers)})")
    tif, _ = write_dn_tif(tmp_path / "ali.tif", paris_msi)
    copy(tif, tmp_path / "ali.jp2", driver=drivers["jp2"], QUALITY="100", REVERSIBLE="YES")  # lossless
    for name in ("ali.tif", "ali.jp2"):
        result = cli("predict", str(tmp_path / name), "--model", "paris", "--output", str(tmp_path / f"{name}.npy"))
        assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "ali.tif.npy"), np.load(tmp_path / "ali.jp2.npy"))


@pytest.mark.parametrize("make,args,message", [
    (lambda d, m: d.joinpath("x.tif").write_bytes(b"II*\x00garbage" * 10), [], "not a readable raster"),
    ("truncated", [], "x.tif: "),
    ("ok", ["--bands", "B1,B9,B2"], "no band named 'B9' (band descriptions: B1p, B1"),
    ("ok", ["--bands", "2,3"], "2 bands, but the model takes 9; choose them with --bands"),
    ("ok", ["--scale", "1e308"], "scale/offset give NaN or Inf pixels"),
    ("ok", ["--scale", "nan"], "--scale nan: must be a finite, non-zero number"),
])
def test_bad_rasters_are_one_line(tmp_path, paris_msi, make, args, message):
    if make in ("ok", "truncated"):
        path, _ = write_dn_tif(tmp_path / "x.tif", paris_msi)
        if make == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    else:
        make(tmp_path, paris_msi)
    result = cli("predict", str(tmp_path / "x.tif"), "--model", "paris", *args,
                 "--output", str(tmp_path / "o" / "y.tif"))
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_geotiff_output_into_an_unwritable_place_is_one_line(tmp_path, paris_msi):
    path, _ = write_dn_tif(tmp_path / "x.tif", paris_msi)
    (tmp_path / "file").write_text("")
    result = cli("predict", str(path), "--model", "paris", "--output", str(tmp_path / "file" / "y.tif"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "is a file, not a folder" in result.stderr


def test_library_read_errors_name_the_file(tmp_path):
    from ssran_edge.geo import read_raster

    with pytest.raises(DataError, match="no such file"):
        read_raster(tmp_path / "none.tif")


def test_run_streams_a_raster_by_windows_like_an_npy_scene(tmp_path, paris_msi):
    """`run` reads a GeoTIFF window by window (RasterSource) and writes a georeferenced GeoTIFF window by
    window; the same pixels as an .npy scene with the same windows give the same output; nodata stays NaN."""
    path, reflectance = write_dn_tif(tmp_path / "ali.tif", paris_msi, nodata_block=True)
    valid = np.ones((72, 72), bool)
    valid[10:20, 30:45] = False
    filled = reflectance.astype(np.float32)
    from ssran_edge.tiling import fill_masked

    np.save(tmp_path / "ali.npy", fill_masked(filled, valid))  # what the network sees of the masked raster
    common = ["--model", "paris", "--window", "32", "--tile", "32"]
    result = cli("run", str(path), *common, "--output", str(tmp_path / "hsi.tif"), "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert cli("run", str(tmp_path / "ali.npy"), *common, "--output", str(tmp_path / "hsi.npy")).returncode == 0
    expected = np.load(tmp_path / "hsi.npy")
    with rasterio.open(tmp_path / "hsi.tif") as out:
        assert out.crs == UTM31N and out.transform == ORIGIN
        assert out.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == "16"
        got = np.moveaxis(out.read(), 0, -1).astype(np.float32)
    assert np.isnan(got[~valid]).all() and np.isfinite(got[valid]).all()
    np.testing.assert_allclose(got[valid], expected[valid].astype(np.float16).astype(np.float32), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*"))  # no staging or lock file left


def test_xarray_reconstruct_is_run_lazily_and_keeps_the_crs(tmp_path, paris_msi):
    import dask
    import rioxarray

    from ssran_edge.xarray import reconstruct

    path, _ = write_dn_tif(tmp_path / "ali.tif", paris_msi, nodata_block=True)
    assert cli("run", str(path), "--model", "paris", "--window", "32", "--output", str(tmp_path / "run.tif")
               ).returncode == 0
    with rasterio.open(tmp_path / "run.tif") as out:
        expected = out.read()
    msi = rioxarray.open_rasterio(path, mask_and_scale=True, chunks={"x": 32, "y": 32})
    hsi = reconstruct(msi, model="paris")
    assert hsi.chunks is not None  # still lazy
    assert hsi.dims == ("wavelength", "y", "x") and hsi.sizes["wavelength"] == 128
    assert hsi.rio.crs == UTM31N and hsi.rio.transform() == ORIGIN
    assert json.loads(hsi.attrs["ssran_edge_model_card"])["protocol"] == "paris"
    with dask.config.set(scheduler="threads"):
        got = hsi.values
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    hsi.rio.to_raster(tmp_path / "xr.tif")  # and it writes as a GeoTIFF with its grid
    with rasterio.open(tmp_path / "xr.tif") as out:
        assert out.crs == UTM31N and out.count == 128


def test_xarray_in_memory_is_predict(tmp_path, paris_msi):
    import rioxarray

    from ssran_edge.xarray import reconstruct

    path, _ = write_dn_tif(tmp_path / "ali.tif", paris_msi)
    assert cli("predict", str(path), "--model", "paris", "--output", str(tmp_path / "p.npy")).returncode == 0
    msi = rioxarray.open_rasterio(path, mask_and_scale=True).load()
    got = reconstruct(msi, model="paris").transpose("y", "x", "wavelength").values
    np.testing.assert_allclose(got, np.load(tmp_path / "p.npy"), rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match="the DataArray has 3 bands, the model takes 9"):
        reconstruct(msi.isel(band=[0, 1, 2]), model="paris")


def test_the_training_files_protocol_reads_geotiff_cubes(tmp_path, shared_data):
    """Hyperspectral GeoTIFFs (wavelengths in band tags, as our writer leaves them) are training data for
    `python -m train --protocol files`; a cube with nodata is refused (patches would learn fill values)."""
    from ssran_edge.data.cube import GeoInfo
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.data.readers import read_cave_scene
    from ssran_edge.geo import write_geotiff

    cube = read_cave_scene(shared_data / "cave_extra" / "beads_ms")
    geo = GeoInfo(UTM31N.to_wkt(), tuple(ORIGIN)[:6])
    write_geotiff(tmp_path / "a.tif", cube.data[:, :128], cube.wavelengths.tolist(), geo=geo)
    write_geotiff(tmp_path / "b.tif", cube.data[:, 128:], cube.wavelengths.tolist(), geo=geo)
    data = load_protocol("files", train_files=[str(tmp_path / "a.tif")], test_files=[str(tmp_path / "b.tif")],
                         srf="nikon_d700")
    assert data.in_bands == 3 and data.out_bands == 31
    np.testing.assert_allclose(data.wavelengths, cube.wavelengths)
    np.testing.assert_array_equal(data.test[0].hsi, cube.data[:, 128:])
    holes = np.ones(cube.data.shape[:2], bool)
    holes[:4, :4] = False
    write_geotiff(tmp_path / "c.tif", cube.data, cube.wavelengths.tolist(), geo=geo, valid=holes)
    with pytest.raises(DataError, match="16 nodata pixels; training and test cubes must be whole"):
        load_protocol("files", train_files=[str(tmp_path / "c.tif")], test_files=[str(tmp_path / "b.tif")],
                      srf="nikon_d700")
