"""`ssran-edge info`: a short summary of a bundled model card for a person, the whole card with --json."""

import json
import subprocess
import sys

import pytest

from ssran_edge.assets import MODELS
from ssran_edge.card import ModelCard
from ssran_edge.cli import main
from tests.conftest import REPO


def _old_structure(name: str) -> dict:
    """What `ssran-edge info NAME` printed before the summary: path, stored values, the card less training."""
    from ssran_edge.checkpoint import load_state_dict

    path = MODELS[name]
    return {"path": str(path), "weights": sum(t.numel() for t in load_state_dict(path).values()),
            **{k: v for k, v in ModelCard.read(path).to_dict().items() if k != "training"}}


def test_cave_summary_names_arch_camera_bands_range_metrics_and_onnx():
    result = subprocess.run([sys.executable, "-m", "ssran_edge.cli", "info", "cave"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    out = result.stdout
    assert "arch:       ssran_linear_skip" in out
    assert "camera/SRF: nikon_d700" in out
    assert "3 in (R, G, B) -> 31 out, 400\u2013700 nm every 10 nm" in out
    assert "273,711 stored values" in out
    assert "tile mode, 256 px tiles" in out
    assert "cave.onnx: exported from these weights (weights hash matches)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("ssran_", "linear"))}
    assert rows["ssran_tile"][0] == "36.25" and "linear" in rows  # PSNR first, the baselines beside
    assert len(out.splitlines()) < 25  # a summary, not 31 wavelengths one per line


@pytest.mark.parametrize("name,expect", [
    ("paris", ["arch:       ssran (", "camera/SRF: real EO-1 ALI", "9 in (1p, 1, 2",
               "-> 128 out, 426.82\u20132345.24 nm"]),
    ("pavia", ["ssran_linear_skip", "camera/SRF: D_103", "4 in", "-> 103 out, 430\u2013860 nm"]),
    ("cave_ssran", ["arch:       ssran (", "nikon_d700", "-> 31 out, 400\u2013700 nm every 10 nm"]),
])
def test_summary_of_each_bundled_model(capsys, name, expect):
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    for phrase in expect:
        assert phrase in out, (phrase, out)
    assert "PSNR" in out and "SAM" in out
    assert f"{name}.onnx: exported from these weights" in out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_json_is_the_old_structure(capsys, name):
    assert main(["info", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == _old_structure(name)


def test_an_onnx_from_other_weights_is_named_so(tmp_path, capsys):
    """A copy of the cave weights beside the cave_ssran ONNX: the summary says the hash differs."""
    import shutil

    for suffix, source in ((".safetensors", MODELS["cave"]), (".json", MODELS["cave"].with_suffix(".json")),
                           (".onnx", MODELS["cave_ssran"].with_suffix(".onnx"))):
        shutil.copy(source, tmp_path / f"m{suffix}")
    assert main(["info", str(tmp_path / "m.safetensors")]) == 0
    assert "m.onnx: NOT exported from these weights (weights hash differs)" in capsys.readouterr().out
