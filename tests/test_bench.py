"""The benchmark suite's smoke subset, run for real (`ssran-edge bench --smoke`: export, pytest-benchmark,
report), and the history compare on real saved runs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from importlib.util import find_spec

import pytest

from ssran_edge.bench import report, suite
from ssran_edge.model import SSRAN

pytestmark = pytest.mark.shared_data  # int8 calibration and drift read the CAVE training/validation data


def test_flops_per_pixel_counts_every_conv():
    # 4 -> 103, width 64, 3 blocks: the hand count of the paper's network (MEASURED.md: 0.554 MFLOP/px).
    macs = 4 * 64 + 3 * (2 * 9 * 64 * 64 + 2 * 64 * 64 + 128 * 64) + 64 * 103
    assert sum(2 * m.weight[0].numel() * m.out_channels for m in SSRAN(4, 103).modules()
               if m.__class__.__name__ == "Conv2d") == 2 * macs
    # The bundled Pavia model is the variant: the paper's network plus a 4 -> 103 linear skip.
    assert suite.flops_per_pixel("pavia") == 2 * (macs + 4 * 103)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "ssran_edge.bench.report", "--smoke", "--out", str(out / "report"),
           "--history", str(out / "history"), "--exports", str(out / "exports")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SSRAN_DATA": str(shared_data)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, done.stdout


def test_smoke_reports_latency_next_to_accuracy(smoke_run):
    out, stdout = smoke_run
    data = json.loads((out / "report" / "report.json").read_text())
    rows = {(r["kind"], r["artefact"]): r for r in data["rows"]}
    assert {("frame", "torch fp32"), ("frame", "ort model.onnx"), ("frame", "ort model_int8.onnx"),
            ("stream", "ort model_int8.onnx")} <= set(rows)
    assert data["info"]["ceiling_gflops"] > 1 and set(data["info"]["gemm_gflops"]) == {"torch", "numpy", "onnxruntime"}
    assert rows[("frame", "torch fp32 whole frame")]["speedup_vs_torch"] == pytest.approx(1.0)  # the reference
    assert rows[("frame", "torch fp32")]["speedup_vs_torch_tiles"] == pytest.approx(1.0)
    assert ("stream", "torch fp32 whole frame") not in rows  # a stream always runs in tiles
    int8 = rows[("frame", "ort model_int8.onnx")]
    # Real accuracy on the CAVE validation split: the int8 export passed the smoke's gate (quick min/max
    # calibration, the real 0.1 dB gate). The noise-trained model is measured at read noise sigma 1 % too.
    assert int8["accuracy_on"] == "cave validation split"
    assert 30 < int8["psnr"] < 50 and abs(int8["drift_db"]) <= 0.1
    assert 30 < int8["psnr_noisy"] < int8["psnr"] and abs(int8["drift_db_noisy"]) <= 0.1
    manifest = json.loads((out / "exports" / "cave" / "manifest.json").read_text())
    options = manifest["options"]
    assert (options["calib_method"], options["calib_samples"]) == ("minmax", 64)  # the smoke's quick export
    # the structure the default export lands: int8 with 0 and 1 float blocks drifted beyond the gate, 2 passed
    (timed,) = [a for a in manifest["artefacts"] if a["file"] == "model_int8.onnx"]
    assert timed["float_blocks"] == 2
    assert [t["float_blocks"] for t in timed["float_block_search"]] == [0, 1]
    assert all(max(t["drift_db"].values()) > 0.1 for t in timed["float_block_search"])
    assert rows[("frame", "ort model.onnx")]["drift_db"] == pytest.approx(0.0, abs=0.01)
    for r in data["rows"]:
        assert r["ms"] > 0 and r["gflops"] > 0 and r["mpx_per_s"] > 0
    if find_spec("openvino"):  # the same int8 QDQ file through OpenVINO, both hints, with its own accuracy
        for label in ("openvino model_int8.onnx", "openvino model_int8.onnx latency"):
            row = rows[("frame", label)]
            assert row["backend"] == "openvino" and abs(row["psnr"] - int8["psnr"]) < 0.05, row
    stream = rows[("stream", "ort model_int8.onnx")]
    assert stream["frames"] == 3 and stream["bare_mpx_per_s"] > 0
    md = (out / "report" / "report.md").read_text()
    assert "| cave | ort model_int8.onnx | int8 | 256² |" in md and "## Targets" in md
    assert len(report.saved_runs(out / "history")) == 1  # autosaved by pytest-benchmark
    assert "no earlier run saved" in stdout


def test_compare_flags_a_slower_artefact_and_more_drift(smoke_run, tmp_path):
    out, _ = smoke_run
    saved = report.saved_runs(out / "history")[-1]
    run = json.loads(saved.read_text())
    worse = copy.deepcopy(run)
    target = next(b for b in worse["benchmarks"] if b["extra_info"].get("artefact") == "ort model_int8.onnx"
                  and b["extra_info"]["kind"] == "frame")
    for key in ("median", "mean", "min", "max"):
        target["stats"][key] *= 1.25
    target["extra_info"]["drift_db"] += 0.05
    worse_path = tmp_path / "worse.json"
    worse_path.write_text(json.dumps(worse))

    same = subprocess.run([sys.executable, "-m", "ssran_edge.bench.report", "--compare-only", str(saved), str(saved),
                           "--fail-on-regression"], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "no regression" in same.stdout
    flagged = subprocess.run([sys.executable, "-m", "ssran_edge.bench.report", "--compare-only", str(saved),
                              str(worse_path), "--fail-on-regression"], capture_output=True, text=True, timeout=120)
    assert flagged.returncode == 3
    assert "latency regression: frame cave ort model_int8.onnx 256²: +25%" in flagged.stdout
    assert "drift increase: frame cave ort model_int8.onnx" in flagged.stdout
    assert "torch fp32" not in flagged.stdout  # the unchanged cases are not flagged


def test_compare_scales_by_the_ceiling_of_each_run(smoke_run, tmp_path):
    """A run on a machine twice as busy (every case and the GEMM ceiling 2x slower) is not a regression."""
    out, _ = smoke_run
    run = json.loads(report.saved_runs(out / "history")[-1].read_text())
    busy = copy.deepcopy(run)
    for b in busy["benchmarks"]:
        for key in ("median", "mean", "min", "max"):
            b["stats"][key] *= 2
    busy_path = tmp_path / "busy.json"
    busy_path.write_text(json.dumps(busy))
    assert report.compare(report.load_rows(report.saved_runs(out / "history")[-1])[0],
                          report.load_rows(busy_path)[0]) == []
