"""ModelCard: one record for the JSON card, ONNX metadata and engine sidecars; checked when read."""

import json
import shutil

import pytest

from ssran_edge.assets import MODELS
from ssran_edge.card import Inference, ModelCard
from ssran_edge.errors import CheckpointError


def test_every_bundled_card_reads_and_writes_back_unchanged(tmp_path):
    for name, weights in MODELS.items():
        original = json.loads(weights.with_suffix(".json").read_text())
        card = ModelCard.read(weights)
        assert card.to_dict() == original, name  # same keys and values: the record survives a round trip
        assert card.in_bands == original["in_bands"] and card.inference.tile == original["inference"]["tile"]


def test_metadata_round_trip_keeps_what_a_runtime_needs():
    card = ModelCard.read(MODELS["cave"])
    meta = card.metadata("int8", export_tile=256)
    assert meta["ssran_edge.precision"] == "int8" and meta["ssran_edge.export_tile"] == 256
    back = ModelCard.from_metadata(meta)
    assert (back.in_bands, back.out_bands, back.wavelengths_nm, back.srf, back.inference) == \
        (card.in_bands, card.out_bands, card.wavelengths_nm, card.srf, card.inference)
    assert ModelCard.from_metadata({"producer": "another tool"}) is None


def test_missing_optional_fields_take_defaults():
    card = ModelCard.from_dict({"arch": "ssran", "in_bands": 3, "out_bands": 31})
    assert card.protocol is None and card.inference == Inference("tile", 256, 4) and card.training == {}


def _card_with(tmp_path, **changes):
    weights = tmp_path / "m.safetensors"
    shutil.copy(MODELS["cave"], weights)
    card = json.loads(MODELS["cave"].with_suffix(".json").read_text())
    for key, value in changes.items():
        if value is None:
            card.pop(key)
        else:
            card[key] = value
    (tmp_path / "m.json").write_text(json.dumps(card))
    return weights


@pytest.mark.parametrize(("changes", "message"), [
    ({"inference": {"mode": "tile", "tile": 0}}, "inference.tile must be an integer >= 16 (pixels), got 0"),
    ({"inference": {"mode": "tile", "tile": 8}}, "inference.tile must be an integer >= 16 (pixels), got 8"),
    ({"inference": {"mode": "whole"}}, "inference.mode must be one of tile, patch, got 'whole'"),
    ({"inference": "tile"}, "inference must be an object"),
    ({"in_bands": "3"}, "in_bands must be a positive integer, got '3'"),
    ({"out_bands": None}, "model card lacks 'out_bands'"),
    ({"width": None}, "model card lacks width"),
    ({"wavelengths_nm": [float("nan")] * 31}, "wavelengths_nm must be 31 finite numbers"),
    ({"wavelengths_nm": [400.0] * 30}, "wavelengths_nm must be 31 finite numbers"),
    ({"srf": 7}, "srf must be a name, got 7"),
])
def test_a_wrong_card_is_one_line_naming_the_field(tmp_path, changes, message):
    with pytest.raises(CheckpointError, match="^" + str(tmp_path).replace(".", r"\.")) as error:
        ModelCard.read(_card_with(tmp_path, **changes))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_card_without_inference_or_protocol_still_runs(tmp_path):
    weights = _card_with(tmp_path, inference=None, protocol=None)
    shutil.copy(MODELS["cave"].with_suffix(".onnx"), tmp_path / "m.onnx")
    from ssran_edge.cli import main

    assert main(["predict", "--model", str(weights), "--output", str(tmp_path / "p.npy")]) == 0
    assert (tmp_path / "p.npy").is_file()
