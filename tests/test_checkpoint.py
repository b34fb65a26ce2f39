import json
import os
import pickle

import pytest
import torch

from ssran_edge.atomic import atomic_path
from ssran_edge.card import ModelCard, sidecar_path
from ssran_edge.checkpoint import load_model, load_state_dict, save_model
from ssran_edge.errors import CheckpointError
from ssran_edge.model import SSRAN

CARD = ModelCard(arch="ssran", in_bands=3, out_bands=6, width=8, num_blocks=1, eca_kernel=3, protocol="test")


@pytest.fixture
def saved(tmp_path):
    model = SSRAN(3, 6, width=8, num_blocks=1, eca_kernel=3)
    path = save_model(model, tmp_path / "m.safetensors", CARD)
    return model, path


def test_round_trip(saved):
    model, path = saved
    loaded, card = load_model(path)
    assert card.to_dict()["format"] == "ssran-edge" and card.in_bands == 3
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not loaded.training


def test_no_temp_files_left(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.safetensors"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_missing_card_is_refused(saved):
    _, path = saved
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match="no model card"):
        load_model(path)


def test_foreign_card_is_refused(saved):
    _, path = saved
    sidecar_path(path).write_text(json.dumps({"model": "yolo"}))
    with pytest.raises(CheckpointError, match="not an ssran-edge model card"):
        load_model(path)


def test_truncated_weights_are_refused(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_model(path)


def test_safetensors_not_written_by_us_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not written by ssran-edge"):
        load_state_dict(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": _Payload()}, f)
    with pytest.raises(CheckpointError, match="cannot load checkpoint safely"):
        load_state_dict(path)


def test_weights_of_another_shape_are_refused(saved, tmp_path):
    _, path = saved
    card = json.loads(sidecar_path(path).read_text())
    card["out_bands"] = 7
    sidecar_path(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not match the model card"):
        load_model(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(path)
