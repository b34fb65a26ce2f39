"""The 8192 x 8192 4-band scene (slow: minutes of CPU, ~28 GB of output): run with `pytest -m slow`."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssran_edge.card import ModelCard
from ssran_edge.checkpoint import save_model
from ssran_edge.model import SSRAN
from tests.conftest import REPO

pytestmark = pytest.mark.slow
PEAK_RSS_LIMIT_KB = 1_500_000


def test_8192_scene_in_windows_with_bounded_memory(tmp_path):
    # A 4 -> 103 model (the Pavia configuration); its weights do not matter for memory.
    torch.manual_seed(0)
    card = ModelCard(arch="ssran", in_bands=4, out_bands=103, width=64, num_blocks=3, eca_kernel=5,
                     protocol="scale-test", wavelengths_nm=np.linspace(430, 860, 103).tolist())
    weights = save_model(SSRAN(4, 103), tmp_path / "m.safetensors", card)
    scene = np.lib.format.open_memmap(tmp_path / "scene.npy", mode="w+", dtype=np.float32, shape=(8192, 8192, 4))
    for r in range(0, 8192, 1024):  # a real-looking ramp, written in strips so the test itself stays small
        rows = np.arange(r, r + 1024, dtype=np.float32)[:, None, None]
        scene[r: r + 1024] = (rows + np.arange(8192, dtype=np.float32)[None, :, None]) % 997 / 997
    scene.flush()
    del scene
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "ssran_edge.cli", "run", str(tmp_path / "scene.npy"),
         "--window", "512", "--queue", "2", "--model", str(weights), "--backend", "ort",
         "--output", str(tmp_path / "hsi.hdr"),
         "--summary-json", str(tmp_path / "summary.json")],
        cwd=REPO, capture_output=True, text=True, timeout=3 * 3600,
        env={**__import__("os").environ, "SSRAN_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    summary = json.loads((tmp_path / "summary.json").read_text())
    print(f"8192^2 x 4 -> 103 bands: peak RSS {peak_kb / 1e6:.2f} GB, {summary['seconds']:.0f} s, "
          f"{summary['mpx_per_s']:.3f} Mpx/s, overhead vs runner {summary['overhead_vs_runner']:.3f}")
    assert peak_kb <= PEAK_RSS_LIMIT_KB
    out = np.memmap(tmp_path / "hsi.img", dtype=np.float32, mode="r", shape=(103, 8192, 8192))  # BSQ
    assert np.isfinite(out[:, ::1024, ::1024]).all()


def test_8192_geotiff_streams_by_blocks_with_bounded_memory(tmp_path):
    """An 8192 x 8192 4-band uint16 GeoTIFF (tiled 512, DEFLATE, UTM, nodata 0) through the bundled cave
    model (--bands 3,2,1: RGB of an RGBN raster) into a georeferenced float16 GeoTIFF, window by window."""
    rasterio = pytest.importorskip("rasterio", reason="the [geo] extra (rasterio) is not installed")
    from affine import Affine
    from rasterio.windows import Window

    source = tmp_path / "rgbn.tif"
    transform = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_500_000.0)
    with rasterio.open(source, "w", driver="GTiff", width=8192, height=8192, count=4, dtype="uint16", nodata=0,
                       crs="EPSG:32631", transform=transform, tiled=True, blockxsize=512, blockysize=512,
                       compress="deflate", BIGTIFF="YES") as dst:
        cols = np.arange(8192, dtype=np.float32)[None, :]
        for r in range(0, 8192, 512):
            rows = np.arange(r, r + 512, dtype=np.float32)[:, None]
            ramp = ((rows + cols) % 997 / 997 * 8000 + 1000).astype(np.uint16)
            dst.write(np.stack([ramp, ramp[:, ::-1], ramp[::-1], ramp]),
                      window=Window(0, r, 8192, 512))
        dst.scales = (1e-4,) * 4
    result = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "ssran_edge.cli", "run", str(source), "--bands", "3,2,1",
         "--queue", "2", "--backend", "ort", "--output", str(tmp_path / "hsi.tif"), "--dtype", "float16",
         "--summary-json", str(tmp_path / "summary.json")],
        cwd=REPO, capture_output=True, text=True, timeout=3 * 3600)
    assert result.returncode == 0, result.stderr[-2000:]
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    summary = json.loads((tmp_path / "summary.json").read_text())
    size = (tmp_path / "hsi.tif").stat().st_size
    print(f"8192^2 GeoTIFF x 3 -> 31 bands (float16, DEFLATE): peak RSS {peak_kb / 1e6:.2f} GB, "
          f"{summary['seconds']:.0f} s, {summary['mpx_per_s']:.3f} Mpx/s, output {size / 1e9:.2f} GB "
          f"({size / (8192 * 8192 * 31 * 2):.2f} of raw float16)")
    assert peak_kb <= PEAK_RSS_LIMIT_KB
    with rasterio.open(tmp_path / "hsi.tif") as out:
        assert out.crs.to_epsg() == 32631 and out.transform == transform and out.count == 31
        sample = out.read(window=Window(4000, 4000, 64, 64))
    assert np.isfinite(sample).all()
