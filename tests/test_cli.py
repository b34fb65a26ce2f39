"""The `ssran-edge` command on the bundled model and demo scene (no ../shared needed)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from ssran_edge.assets import DEFAULT_MODEL, MODELS, demo_scene
from ssran_edge.cli import main
from ssran_edge.data.readers import read_cube
from tests.conftest import REPO


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ssran_edge.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_bundled_assets_are_small_and_real():
    cube = demo_scene()
    assert cube.data.shape == (256, 256, 31)
    assert 0 <= cube.data.min() and cube.data.max() <= 1
    assert cube.data.std() > 0.01  # a real scene, not a constant
    np.testing.assert_array_equal(cube.wavelengths, np.arange(400, 701, 10))
    for path in MODELS.values():
        assert path.is_file() and path.stat().st_size < 5_000_000
        assert path.with_suffix(".json").is_file()


def test_demo_predict_writes_a_cube_and_beats_30_db(tmp_path):
    out = tmp_path / "demo.npy"
    result = run_cli("predict", "--output", str(out))
    assert result.returncode == 0, result.stderr
    hsi = np.load(out)
    assert hsi.shape == (256, 256, 31) and np.isfinite(hsi).all()
    psnr = float(re.search(r"PSNR ([\d.]+)", result.stdout).group(1))
    assert psnr > 30.0, result.stdout


def test_predict_envi_output_carries_wavelengths(tmp_path, capsys):
    assert main(["predict", "--output", str(tmp_path / "cube.hdr")]) == 0
    cube = read_cube(tmp_path / "cube.hdr")
    assert cube.data.shape == (256, 256, 31)
    np.testing.assert_allclose(cube.wavelengths, np.arange(400, 701, 10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.hdr", "cube.img"]


def test_predict_on_a_real_msi_file_both_modes(tmp_path, capsys):
    from ssran_edge.srf import load_srf, simulate_msi

    scene = demo_scene()
    msi = simulate_msi(scene.data[:64, :64], load_srf("nikon_d700").matrix_for(scene.wavelengths, 31))
    np.save(tmp_path / "rgb.npy", msi)
    for mode in ("tile", "patch"):
        assert main(["predict", str(tmp_path / "rgb.npy"), "--mode", mode,
                     "--output", str(tmp_path / f"{mode}.npy")]) == 0
    tile, patch = np.load(tmp_path / "tile.npy"), np.load(tmp_path / "patch.npy")
    assert tile.shape == patch.shape == (64, 64, 31)
    assert np.abs(tile - patch).max() > 0  # ECA sees different extents


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p / "x.npy", np.random.rand(8, 8, 5).astype(np.float32)),
     "5 bands, but the model takes 3"),
    (lambda p: np.save(p / "x.npy", np.full((8, 8, 3), np.nan, np.float32)), "NaN/Inf"),
    (lambda p: (p / "x.npy").write_bytes(b"\x93NUMPY garbage"), "unreadable NumPy file"),
    (lambda p: None, "no such file"),
])
def test_bad_input_one_line_exit_2(tmp_path, make, message):
    make(tmp_path)
    result = run_cli("predict", str(tmp_path / "x.npy"), "--output", str(tmp_path / "out.npy"))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out.npy").exists()


def test_corrupt_model_is_refused(tmp_path):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(DEFAULT_MODEL.read_bytes()[:1000])
    weights.with_suffix(".json").write_text(DEFAULT_MODEL.with_suffix(".json").read_text())
    result = run_cli("predict", "--model", str(weights), "--output", str(tmp_path / "o.npy"))
    assert result.returncode == 2 and "cannot load checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_json_prints_the_card(capsys):
    assert main(["info", "paris", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["in_bands"] == 9 and card["out_bands"] == 128 and card["protocol"] == "paris"
    from ssran_edge.assets import MODELS
    from ssran_edge.checkpoint import load_state_dict

    assert card["weights"] == sum(t.numel() for t in load_state_dict(MODELS["paris"]).values()) > 250_000
    assert "test_metrics" in card


def test_train_and_export_subcommands_are_the_modules():
    result = run_cli("train", "--help")
    assert result.returncode == 0 and "--recipe" in result.stdout
    assert result.stdout.startswith("usage: ssran-edge train ")
    result = run_cli("export", "--help")
    assert result.returncode == 0 and "--calib-method" in result.stdout
    assert result.stdout.startswith("usage: ssran-edge export ")
    result = subprocess.run([sys.executable, "-m", "export", "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m export ")


def test_a_stage_reached_through_ssran_edge_names_it_in_its_errors(capsys):
    """A stage's own argument errors name the command the user typed; called directly, its module."""
    from ssran_edge.export.__main__ import build_parser

    with pytest.raises(SystemExit) as exited:
        main(["export", "--foo"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("ssran-edge export: error: unrecognized arguments: --foo")
    assert build_parser().prog == "python -m export"  # the context is gone once main returned


def _options(parser):
    """(command, option) for every option and positional of a parser and its sub-commands with no help."""
    import argparse

    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += [(f"{name} {option}", text) for option, text in _options(sub)]
        elif not isinstance(action, argparse._HelpAction):
            missing.append(((action.option_strings or [action.dest])[0], action.help))
    return missing


def test_every_option_of_every_command_has_help():
    from ssran_edge.cli import build_parser
    from ssran_edge.export.__main__ import build_parser as export_parser
    from ssran_edge.train.__main__ import build_parser as train_parser

    parsers = {"ssran-edge": build_parser(), "python -m export": export_parser(), "python -m train": train_parser()}
    missing = [f"{prog} {option}" for prog, parser in parsers.items() for option, text in _options(parser)
               if not text]
    assert not missing, missing


def test_screen_options_have_help(monkeypatch):
    from ssran_edge.arguments import OneLineParser
    from ssran_edge.train import screen

    built = []

    class Recorded(OneLineParser):
        def parse_args(self, args=None, namespace=None):
            built.append(self)
            raise SystemExit(0)

    monkeypatch.setattr(screen, "OneLineParser", Recorded)
    with pytest.raises(SystemExit):
        screen.main([])
    options = _options(built[0])
    assert len(options) == 9 and all(text for _, text in options), options


def test_the_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("predict", "run", "batch", "info", "evaluate", "train", "export", "bench"):
        assert f"ssran-edge {command}" in result.stdout, command  # the description's examples
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.M), command  # the command list


def test_choices_come_from_the_one_list():
    """--backend and --protocol list exactly the names the runtime and the protocols know."""
    from ssran_edge.cli import build_parser
    from ssran_edge.data.protocols import PROTOCOLS
    from ssran_edge.runtime.backends import BACKENDS
    from ssran_edge.train.__main__ import build_parser as train_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("predict", "run", "batch"):
        backend = next(a for a in sub[command]._actions if a.dest == "backend")
        assert list(backend.choices) == list(BACKENDS), command
    protocol = next(a for a in sub["evaluate"]._actions if a.dest == "protocol")
    assert list(protocol.choices) == list(PROTOCOLS)
    protocol = next(a for a in train_parser()._actions if a.dest == "protocol")
    assert list(protocol.choices) == [*PROTOCOLS, "files"]


def test_an_error_message_with_a_newline_is_one_line(capfd, monkeypatch):
    from ssran_edge import cli
    from ssran_edge.errors import DataError

    def fail(args):
        raise DataError("first line\nsecond line")

    monkeypatch.setattr(cli, "cmd_info", fail)
    assert main(["info"]) == 2
    assert capfd.readouterr().err == "ssran-edge: error: first line second line\n"


@pytest.mark.shared_data
def test_evaluate_prints_the_baselines_beside_the_model_per_scene(shared_data):
    """`ssran-edge evaluate` on the bundled Pavia model: the model and the three baselines fitted on the
    protocol's training pixels, per test scene, the capture-condition and exposure tables and a verdict
    naming the strongest baseline -- numbers recomputed here from the library must match the printed ones."""
    from ssran_edge.baseline import fit_baseline
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.metrics import psnr

    result = run_cli("evaluate", "--model", "pavia")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for row in ("| ssran_tile |", "| linear |", "| rootpoly2 |", "| rootpoly3 |", "| **mean** |", "| exposure x2 |",
                "| read 1% |", "| read 0.5% + shot |", "### read 0.5% (read noise sigma 0.005)"):
        assert row in out, out
    data = load_protocol("pavia", shared_data)
    fitted = fit_baseline("rootpoly3", [p.msi for p in data.train], [p.hsi for p in data.train])
    expected = np.mean([psnr(p.hsi, fitted.predict(p.msi)) for p in data.test])
    printed = float(re.search(r"\| rootpoly3 \| ([\d.]+) \|", out).group(1))
    assert printed == pytest.approx(expected, abs=0.006)
    assert re.search(r"vs linear: [+-][\d.]+ dB", out) and "test scenes" in out
    quick = run_cli("evaluate", "--model", "pavia", "--no-robustness")
    assert quick.returncode == 0 and "exposure" not in quick.stdout and "read 1%" not in quick.stdout


@pytest.mark.parametrize("verbose", [False, True])
def test_library_warnings_reach_stderr_only_with_verbose(verbose):
    """Python warnings (a real numpy overflow, a library's warnings.warn) become log records: hidden at
    default verbosity, shown with -v; our own INFO lines show either way."""
    script = (
        "import logging, warnings, numpy as np\n"
        "from ssran_edge.console import configure_logging\n"
        f"configure_logging({verbose})\n"
        "np.float32(3e38) * np.float32(10)\n"
        "warnings.warn('a library deprecation', DeprecationWarning)\n"
        "logging.getLogger('spectral').warning('NaN no-data value')\n"
        "logging.getLogger('ssran_edge.x').info('our line')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    if verbose:
        assert any("overflow encountered" in line for line in lines), result.stderr
        assert any("a library deprecation" in line for line in lines), result.stderr
        assert "NaN no-data value" in result.stderr
    else:
        assert lines == ["our line"], result.stderr
