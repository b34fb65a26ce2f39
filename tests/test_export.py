"""python -m export on the bundled Paris model (small validation split: quick), real ONNX Runtime."""

import json
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import onnx
import pytest

from ssran_edge.data.protocols import Pair
from ssran_edge.export.drift import DEFAULT_MAX_DROP_DB
from ssran_edge.runtime.loaders import read_metadata
from tests.conftest import REPO

pytestmark = pytest.mark.shared_data
FAST = ["--weights", "paris", "--calib-samples", "8", "--calib-tile", "16"]


def run_export(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "export", *FAST, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("export") / "paris"
    result = run_export("--fp16", "--int8", "--max-drop-int8", "5", "--output", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_artefacts_checked_and_carry_metadata(exported):
    out, result = exported
    for name, precision in [("model.onnx", "fp32"), ("model_cpu.onnx", "fp32"), ("model_fp16.onnx", "fp16"),
                            ("model_int8.onnx", "int8")]:
        assert (out / name).is_file(), result.stdout
        meta = read_metadata(out / name)
        assert meta["ssran_edge.precision"] == precision
        assert (meta["ssran_edge.in_bands"], meta["ssran_edge.out_bands"]) == (9, 128)
        assert len(meta["ssran_edge.wavelengths_nm"]) == 128 and meta["ssran_edge.protocol"] == "paris"
        assert "ssran_edge.version" in meta and "ssran_edge.test_metrics" in meta
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")), full_check=True)
    int8 = read_metadata(out / "model_int8.onnx")
    # the default method for a model not fine-tuned through the rounding; --calib-samples as given
    assert int8["ssran_edge.calibration_method"] == "percentile" and int8["ssran_edge.calibration_samples"] == 8
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    cpu = onnx.load(str(out / "model_cpu.onnx")).graph.node
    # ORT fused Conv+ReLU offline (the deploy form has no 3-D ops): in its NCHWc layout, or as a FusedConv where
    # the channels do not fit NCHWc blocks (ORT 1.32 leaves the 9-band input conv so)
    fused_ops = (("com.microsoft.nchwc", "Conv"), ("com.microsoft", "FusedConv"))
    fused = [n for n in cpu if (n.domain, n.op_type) in fused_ops
             and any(a.name == "activation" and a.s == b"Relu" for a in n.attribute)]
    assert len(fused) >= 16
    fp16 = onnx.load(str(out / "model_fp16.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O by default


@pytest.mark.parametrize("name", ["model.onnx", "model_fp16.onnx", "model_int8.onnx"])
def test_artefacts_carry_no_unused_initializer(exported, name):
    """ONNX Runtime warns "Removing initializer ..." on every session for each unused one."""
    graph = onnx.load(str(exported[0] / name)).graph
    used = {i for node in graph.node for i in node.input}
    assert [init.name for init in graph.initializer if init.name not in used] == []


def test_dynamic_batch_height_width(exported):
    import onnxruntime as ort

    out, _ = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 9, 16, 16), (3, 9, 40, 24)]:
        y = session.run(None, {"msi": np.random.rand(*shape).astype(np.float32)})[0]
        assert y.shape == (shape[0], 128, shape[2], shape[3])


def test_drift_report_and_manifest(exported):
    out, result = exported
    drift = {d["artefact"]: d for d in json.loads((out / "drift.json").read_text())}
    files = {"model.onnx", "model_cpu.onnx", "model_fp16.onnx", "model_int8.onnx", "model_int8_cpu.onnx"}
    # with OpenVINO installed, each portable graph is gated through it too (the *_cpu.onnx are ORT's own)
    through_openvino = ({f"{name} via openvino" for name in ("model.onnx", "model_fp16.onnx", "model_int8.onnx")}
                        if find_spec("openvino") else set())
    assert set(drift) == files | through_openvino
    for row in through_openvino:  # the same file, the same answer within the precision's own drift
        ort_row = drift[row.removesuffix(" via openvino")]
        # int8: each runtime rounds its own way (0.054 dB apart with ORT 1.32 / OpenVINO 2026.4): the int8 gate
        tolerance = DEFAULT_MAX_DROP_DB["int8"] if "int8" in row else 0.05
        assert drift[row]["passed"] and abs(drift[row]["psnr_gt"] - ort_row["psnr_gt"]) < tolerance, (row, drift[row])
    assert drift["model.onnx"]["drop_db"] < 0.01 and drift["model.onnx"]["max_abs_vs_fp32"] < 1e-4
    assert drift["model_fp16.onnx"]["drop_db"] < 0.05 and drift["model_fp16.onnx"]["psnr_vs_fp32"] > 50
    assert drift["model_int8.onnx"]["psnr_vs_fp32"] < drift["model_fp16.onnx"]["psnr_vs_fp32"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tensorrt"].startswith(("built", "skipped: "))
    assert {a["file"] for a in manifest["artefacts"]} == files
    assert "| model_fp16.onnx | fp16 |" in (out / "drift.md").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_default_calibration_follows_the_card():
    """A QAT card is calibrated the way it was fine-tuned (min/max, which the simulation reproduces);
    any other by percentile, the one that keeps the bundled CAVE model within the 0.1 dB gate."""
    import dataclasses

    from ssran_edge.assets import MODELS
    from ssran_edge.card import ModelCard
    from ssran_edge.data.patches import DEFAULT_CALIBRATION, QAT_CALIBRATION
    from ssran_edge.export.pipeline import default_calibration

    card = ModelCard.read(MODELS["cave"])
    assert default_calibration(card) == DEFAULT_CALIBRATION == ("percentile", 256, 64)
    qat = dataclasses.replace(card, training={**card.training, "qat": True})
    assert default_calibration(qat) == QAT_CALIBRATION == ("minmax", 64, 64)


def test_calibration_runs_in_chunks_that_divide_the_set():
    """ONNX Runtime holds every calibrated tensor of a pass in memory: 256 tiles in one pass peaked at
    15 GB here, passes of 16 at 1.7 GB. Its strided mode needs chunks that divide the set."""
    from ssran_edge.export.quantize import CALIBRATION_CHUNK, TileCalibrationReader, chunk_size

    assert [chunk_size(n) for n in (256, 64, 24, 17, 8, 1)] == [16, 16, 12, 1, 8, 1]
    assert all(chunk_size(n) <= CALIBRATION_CHUNK for n in range(1, 300))
    region = Pair(np.random.default_rng(0).random((40, 40, 3), np.float32), np.zeros((40, 40, 2), np.float32))
    reader = TileCalibrationReader([region], 3, 6, 16)
    assert len(reader) == 6
    reader.set_range(2, 4)
    fed = [reader.get_next() for _ in range(3)]
    assert fed[0]["msi"] is reader.tiles[2] and fed[1]["msi"] is reader.tiles[3] and fed[2] is None


def test_failing_gate_leaves_no_artefact_under_its_name(tmp_path):
    out = tmp_path / "gate"
    (out).mkdir()
    (out / "model_int8.onnx").write_text("stale from an older export")
    result = run_export("--int8", "--max-drop-int8", "-1", "--output", str(out))
    assert result.returncode == 2
    assert "accuracy-drift gate failed for model_int8.onnx" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "model_int8.onnx").exists()
    assert (out / "model.onnx").is_file()  # what passed still lands
    assert json.loads((out / "drift.json").read_text())[-1]["passed"] is False
    # auto tried 0 and 1 float blocks, then the most the model allows (2), which failed too
    assert "INT8: 2 residual block(s) kept float, the most the model allows" in (out / "drift.md").read_text()


def _int8_convs(path) -> int:
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    return sum(1 for n in graph.node if n.op_type == "Conv" and len(n.input) > 1
               and getattr(producer.get(n.input[1]), "op_type", "") == "DequantizeLinear")


def _drift(out, name="model_int8.onnx") -> float:
    return next(d["drop_db"] for d in json.loads((out / "drift.json").read_text()) if d["artefact"] == name)


def test_float_blocks_auto_keeps_the_fewest_float_blocks_that_pass(exported, tmp_path):
    """--float-blocks N keeps the last N residual blocks float (5 convs each); auto (the default) tries 0, 1, ...
    on ONNX Runtime and keeps the first that passes the int8 gate, recording each try."""
    out0, _ = exported  # auto under a 5 dB gate: 0 blocks pass
    assert read_metadata(out0 / "model_int8.onnx")["ssran_edge.float_blocks"] == 0
    d0 = _drift(out0)
    one = tmp_path / "one"
    result = run_export("--int8", "--max-drop-int8", "5", "--float-blocks", "1", "--output", str(one))
    assert result.returncode == 0, result.stderr
    assert _int8_convs(one / "model_int8.onnx") == 10 and _int8_convs(out0 / "model_int8.onnx") == 15
    d1 = _drift(one)
    assert d1 < d0  # the rounding of the last block no longer reaches the output (0.037 vs 0.060 dB here)
    gate = (d0 + d1) / 2
    auto = tmp_path / "auto"
    result = run_export("--int8", "--max-drop-int8", f"{gate:.6f}", "--output", str(auto))
    assert result.returncode == 0, result.stderr
    assert read_metadata(auto / "model_int8.onnx")["ssran_edge.float_blocks"] == 1
    assert _drift(auto) == pytest.approx(d1, abs=1e-4)  # the same calibration, the same model
    artefacts = json.loads((auto / "manifest.json").read_text())["artefacts"]
    (int8,) = [a for a in artefacts if a["file"] == "model_int8.onnx"]
    assert [t["float_blocks"] for t in int8["float_block_search"]] == [0, 1]
    assert int8["float_block_search"][0]["drift_db"]["clean"] == pytest.approx(d0, abs=1e-3)
    assert "INT8: 1 residual block(s) kept float, the fewest" in (auto / "drift.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["--fp16-io"], "--fp16-io needs --fp16"),
    (["--float-blocks", "1"], "--float-blocks chooses the float part of the INT8 model: add --int8"),
    (["--engine"], "--engine builds FP16/INT8"),
    (["--fp16", "--engine"], "TensorRT not available: "),
    (["--int8", "--device", "dla:0"], "TensorRT not available: "),
    (["--device", "tpu"], "use cpu, cuda:N or dla:N"),
    (["--weights", "/nonexistent.safetensors"], "no model card"),
])
def test_bad_flags_one_line(tmp_path, args, message):
    result = run_export(*args, "--output", str(tmp_path / "o"))
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_one_export_per_folder_and_a_killed_ones_staging_is_cleaned(tmp_path):
    """Real processes: a second export into a folder being exported to is refused in one line; an
    export killed mid-build leaves its .staging-* folder, and the next export removes it."""
    import os
    import signal
    import time

    out = tmp_path / "o"
    first = subprocess.Popen([sys.executable, "-m", "export", *FAST, "--output", str(out)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".staging-*")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(out.glob(".staging-*")), "the export never staged anything"
        second = run_export("--output", str(out))
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert "another export is writing this folder now" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert list(out.glob(".staging-*")), "a killed export leaves its staging folder"
    third = run_export("--output", str(out))
    assert third.returncode == 0, third.stderr
    assert not list(out.glob(".staging-*")) and not (out / ".export.lock").exists()
    assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()


def test_unwritable_output_and_pickle_checkpoint(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_export("--output", str(blocker / "sub"))
    assert result.returncode == 2 and "is not writable" in result.stderr

    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": print}))
    (tmp_path / "evil.json").write_text((REPO / "ssran_edge/assets/models/paris.json").read_text())
    result = run_export("--weights", str(evil), "--output", str(tmp_path / "o2"))
    assert result.returncode == 2 and "cannot load checkpoint safely" in result.stderr


def test_latency_comparison_runs_every_onnx_artefact(exported):
    from ssran_edge.bench.compare import compare

    out, _ = exported
    rows = compare(out, size=32, repeat=1)
    assert [r["artefact"] for r in rows][0] == "torch eager"
    assert {r["artefact"] for r in rows[1:]} == {f"ORT CPU {n}" for n in
                                                 ("model.onnx", "model_cpu.onnx", "model_fp16.onnx", "model_int8.onnx",
                                                  "model_int8_cpu.onnx")}
    assert all(r["ms"] > 0 and r["speedup"] > 0 for r in rows)


def test_int8_runner_agrees_with_torch_within_its_drift(exported):
    """The same tiles through the INT8 ORT runner and the fp32 torch runner: they differ by no more than
    the export's drift report says (PSNR of int8 against fp32 on the validation split)."""
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.metrics import psnr
    from ssran_edge.runtime.runners import OrtRunner, TorchRunner
    from ssran_edge.tiling import run_tiled

    out, _ = exported
    drift = {d["artefact"]: d for d in json.loads((out / "drift.json").read_text())}
    region = load_protocol("paris").val[0].msi
    with TorchRunner(REPO / "ssran_edge/assets/models/paris.safetensors") as fp32, \
            OrtRunner(out / "model_int8.onnx") as int8:
        a = run_tiled(fp32.infer, region, 128, tile=256)
        b = run_tiled(int8.infer, region, 128, tile=256)
    assert psnr(a, b) == pytest.approx(drift["model_int8.onnx"]["psnr_vs_fp32"], abs=0.5)
    assert 0 < np.abs(a - b).max() <= drift["model_int8.onnx"]["max_abs_vs_fp32"] + 1e-6


def test_int8_keeps_the_input_layer_and_the_head_float(exported):
    """Mixed precision (export/quantize.edge_nodes): the 15 body convs run int8; the layer reading the MSI
    and the reconstruction head stay float, so the output is never on a uint8 grid."""
    out, _ = exported
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv" and len(n.input) > 1]
    int8_convs = [n for n in convs if getattr(producer.get(n.input[1]), "op_type", "") == "DequantizeLinear"]
    assert len(int8_convs) == 15
    first = [n for n in convs if "msi" in n.input]
    assert first and not set(map(id, first)) & set(map(id, int8_convs))  # reads the float input directly
    assert producer["hsi"].op_type not in ("DequantizeLinear", "QuantizeLinear")
    meta = read_metadata(out / "model_int8.onnx")
    assert {n.name for n in first} <= set(meta["ssran_edge.float_nodes"])


def test_int8_cpu_graph_runs_residual_adds_in_nhwc_with_identical_outputs(exported):
    """export/fuse.nhwc_residual_adds on ONNX Runtime's optimised int8 graph: fewer transposes, and not one
    output value changes (real validation data through both files)."""
    import onnxruntime as ort

    from ssran_edge.data.protocols import load_protocol

    out, _ = exported
    rewritten = onnx.load(str(out / "model_int8_cpu.onnx")).graph
    assert any(n.op_type == "QLinearAdd" and n.output[0].endswith("_nhwc") for n in rewritten.node)
    meta = read_metadata(out / "model_int8_cpu.onnx")
    assert meta["ssran_edge.nhwc_residual_adds"] >= 2 and meta["ssran_edge.precision"] == "int8"
    region = load_protocol("paris").val[0].msi[:40, :36]
    x = np.ascontiguousarray(region.transpose(2, 0, 1))[None]
    plain, nhwc = (ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"]).run(None, {"msi": x})[0]
                   for f in ("model_int8.onnx", "model_int8_cpu.onnx"))
    np.testing.assert_array_equal(plain, nhwc)


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_fp16_keeps_a_root_polynomial_skip_in_fp32(tmp_path, keep_io_types):
    """The skip's least-squares coefficients are large and cancel; rounded to fp16 they cost dB. The
    converted graph computes the skip (everything before the first ReLU) in fp32 and stays within fp16
    rounding of the fp32 graph, with the model's own input and output names."""
    import torch

    from ssran_edge.baseline import fit_baseline
    from ssran_edge.export import onnx_export as ox
    from ssran_edge.model import RootPolySkipSSRAN

    rng = np.random.default_rng(0)
    msi = rng.uniform(0.05, 1, (16, 16, 3)).astype(np.float32)
    hsi = np.concatenate([msi, np.sqrt(msi[..., :2] * msi[..., 1:]), msi ** 2], axis=-1)  # root-poly-ish target
    fitted = fit_baseline("rootpoly3", [msi], [hsi])
    model = RootPolySkipSSRAN(3, hsi.shape[-1], width=8, num_blocks=1).eval()
    model.init_linear(torch.from_numpy(fitted.weight.T.copy()) * 300, torch.from_numpy(fitted.bias))  # CAVE-size
    proto = ox.export_fp32(model, imgsz=16)
    fp16 = ox.convert_fp16(onnx.load_from_string(proto.SerializeToString()), keep_io_types=keep_io_types)
    onnx.checker.check_model(fp16, full_check=True)
    assert [i.name for i in fp16.graph.input] == [ox.INPUT] and [o.name for o in fp16.graph.output] == [ox.OUTPUT]
    skip = set(ox.skip_nodes(proto))
    assert skip and any(n.op_type == "Relu" for n in fp16.graph.node)
    kept = {n.name for n in fp16.graph.node if n.name in skip}
    assert kept == skip  # every skip node survives under its name (not replaced by an fp16 copy)
    batch = msi.transpose(2, 0, 1)[None]
    from ssran_edge.runtime.runners import OrtRunner

    with OrtRunner(ox.save_onnx(proto, tmp_path / "fp32.onnx")) as fp32_runner:
        ref = fp32_runner.infer(batch)
    with OrtRunner(ox.save_onnx(fp16, tmp_path / "fp16.onnx")) as fp16_runner:
        out = fp16_runner.infer(batch)
    # the skip alone spans ~300x the target; fp16 everywhere would be off by ~0.1 * 300 / 2048 per value
    assert np.abs(out - ref).max() < 5e-3 * np.abs(ref).max()


def test_cli_shows_onnx_runtime_warnings_only_when_verbose(exported, tmp_path):
    """A foreign ONNX with an unused initializer makes ONNX Runtime warn on every session: `ssran-edge
    run` keeps stderr to its own lines unless -v."""
    from onnx import numpy_helper

    model = onnx.load(str(exported[0] / "model.onnx"))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "left_over"))
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    np.save(tmp_path / "msi.npy", np.random.default_rng(0).uniform(0, 1, (16, 16, 9)).astype(np.float32))

    def run(*extra):  # --backend ort: auto may time OpenVINO faster, and OpenVINO does not warn
        return subprocess.run([sys.executable, "-m", "ssran_edge.cli", *extra, "run", str(tmp_path / "msi.npy"),
                               "--model", str(tmp_path / "foreign.onnx"), "--backend", "ort",
                               "--output", str(tmp_path / "o.npy")],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    quiet, loud = run(), run("-v")
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "left_over" not in quiet.stderr and "left_over" in loud.stderr
    assert np.load(tmp_path / "o.npy").shape == (16, 16, 128)


def test_a_noise_trained_model_is_calibrated_on_noisy_tiles_and_gated_clean_and_noisy(tmp_path, shared_data):
    from ssran_edge.data.patches import calibration_tiles
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.export.pipeline import ExportOptions, run_export
    from ssran_edge.train.config import make_config
    from ssran_edge.train.loop import train

    pavia = load_protocol("pavia", None)
    clean = calibration_tiles(pavia.train, pavia.in_bands, 8, 16)
    noisy = calibration_tiles(pavia.train, pavia.in_bands, 8, 16, noise=(0.02, 0.0005))
    differences = [n - c for n, c in zip(noisy, clean, strict=True)]  # the same tiles, noise added
    assert all(d.shape == c.shape for d, c in zip(differences, clean, strict=True))
    assert 0 < max(d.std() for d in differences) < 0.03

    weights = train(make_config("pavia", "edge", output=str(tmp_path / "run"), epochs=1, batch_size=8, patch_size=8,
                                patches_per_epoch=16, width=8, num_blocks=1, tile=32, threads=1, noise_read=0.02,
                                noise_shot=0.0005), data=pavia)
    out = tmp_path / "export"
    run_export(ExportOptions(weights=weights, output=out, int8=True, calib_samples=8, calib_tile=16,
                             max_drop_db={**DEFAULT_MAX_DROP_DB, "int8": 5.0}))
    rows = json.loads((out / "drift.json").read_text())
    by_artefact: dict[str, set[str]] = {}
    for row in rows:
        by_artefact.setdefault(row["artefact"], set()).add(row["condition"])
    assert set(by_artefact) >= {"model.onnx", "model_int8.onnx"}
    assert all(conditions == {"clean", "read 1%"} for conditions in by_artefact.values()), by_artefact
    noisy_row = next(r for r in rows if r["artefact"] == "model.onnx" and r["condition"] == "read 1%")
    clean_row = next(r for r in rows if r["artefact"] == "model.onnx" and r["condition"] == "clean")
    assert noisy_row["psnr_gt_fp32"] != clean_row["psnr_gt_fp32"] and noisy_row["drop_db"] < 0.01
    assert "| model_int8.onnx | int8 | read 1% |" in (out / "drift.md").read_text()
