"""Quantization-aware fine-tuning (train/qat.py, `python -m train --qat`): the torch simulation is the
INT8 export, number for number, and the fine-tune trains through it and saves plain float weights."""

import json

import numpy as np
import pytest
import torch

from ssran_edge.assets import MODELS
from ssran_edge.checkpoint import load_model
from ssran_edge.data.patches import QAT_CALIBRATION, calibration_tiles
from ssran_edge.data.protocols import load_protocol, protocol_of_card
from ssran_edge.metrics import psnr
from ssran_edge.train.config import make_config
from ssran_edge.train.loop import evaluate_psnr, train
from ssran_edge.train.qat import ExportQuantSim

pytestmark = pytest.mark.shared_data

TINY = dict(epochs=1, batch_size=8, patch_size=8, patches_per_epoch=24, width=8, num_blocks=1, tile=32,
            threads=1)


def test_simulation_is_the_int8_export_number_for_number(tmp_path, shared_data):
    """The same weights, calibration tiles and crop: ONNX Runtime's INT8 graph and the simulation agree
    to float rounding (> 80 dB), while both are ~28 dB from the float model (the rounding is real).
    The export calibrates 32 tiles in two passes of 16, the simulation in one: min/max ranges merge exactly."""
    from ssran_edge.export.onnx_export import export_weights
    from ssran_edge.export.quantize import TileCalibrationReader, quantize_int8
    from ssran_edge.runtime.runners import OrtRunner

    torch.set_num_threads(1)
    model, card = load_model(MODELS["cave_ssran"])
    data = protocol_of_card(card, shared_data)
    export_weights(MODELS["cave_ssran"], tmp_path / "model.onnx")
    quantize_int8(tmp_path / "model.onnx", tmp_path / "int8.onnx", TileCalibrationReader(data.train, 3, 32, 64))
    crop = np.ascontiguousarray(data.val[0].msi[:96, :96].transpose(2, 0, 1))[None]
    with OrtRunner(tmp_path / "int8.onnx") as runner:
        exported = runner.infer(crop)
    sim = ExportQuantSim(model)
    sim.calibrate(calibration_tiles(data.train, 3, 32, 64))  # all at once
    model.eval()
    with torch.no_grad():
        float_out = model(torch.from_numpy(crop)).numpy()
        sim.enable()
        simulated = model(torch.from_numpy(crop)).numpy()
        sim.remove()
        assert np.array_equal(model(torch.from_numpy(crop)).numpy(), float_out)  # removed: the float model again
    assert psnr(exported, simulated) > 80
    assert psnr(exported, float_out) < 40


def test_qat_fine_tune_scores_through_the_rounding_and_saves_float_weights(tmp_path, shared_data):
    pavia = load_protocol("pavia", shared_data)
    start = train(make_config("pavia", "edge", arch="ssran", output=str(tmp_path / "float"), **TINY), data=pavia)
    start_model, _ = load_model(start)

    # lr 0: the weights stay, so validation must read the float model's PSNR and, through the rounding,
    # what an independent simulation of the export scores on the same weights
    still = train(make_config("pavia", "edge", arch="ssran", init=str(start), qat=True, lr=0.0,
                              output=str(tmp_path / "still"), **TINY), data=pavia)
    history = json.loads((tmp_path / "still" / "history.json").read_text())
    config = make_config("pavia", "edge", **TINY)
    assert history[0]["val_psnr"] == pytest.approx(evaluate_psnr(start_model, pavia.val, "tile", config), abs=1e-6)
    sim = ExportQuantSim(start_model)
    sim.calibrate(calibration_tiles(pavia.train, pavia.in_bands, QAT_CALIBRATION.samples, QAT_CALIBRATION.tile))
    sim.enable()
    expected_int8 = evaluate_psnr(start_model, pavia.val, "tile", config)
    sim.remove()
    assert history[0]["val_psnr_int8"] == pytest.approx(expected_int8, abs=1e-6)
    assert history[0]["val_psnr_int8"] < history[0]["val_psnr"]
    _, card = load_model(still)
    assert card.training["qat"] and card.record["val_psnr_int8"] == pytest.approx(expected_int8)
    assert card.record["selection"].startswith("clean validation PSNR through the INT8 export's rounding")

    # lr > 0: the weights move, and what is saved is a plain float state dict (weights_only load)
    tuned = train(make_config("pavia", "edge", arch="ssran", init=str(start), qat=True, lr=1e-3,
                              output=str(tmp_path / "tuned"), **{**TINY, "epochs": 2}), data=pavia)
    tuned_model, card = load_model(tuned)
    assert list(tuned_model.state_dict()) == list(start_model.state_dict())
    assert any(not torch.equal(a, b) for a, b in zip(tuned_model.state_dict().values(),
                                                     start_model.state_dict().values(), strict=True))
    history = json.loads((tmp_path / "tuned" / "history.json").read_text())
    assert card.best_epoch == int(np.argmax([h["val_psnr_int8"] for h in history])) + 1
    state = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=True)
    assert set(state["model"]) == set(start_model.state_dict())
