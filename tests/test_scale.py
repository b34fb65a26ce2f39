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
