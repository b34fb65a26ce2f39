"""The cave protocols on the real CAVE scenes: splits by whole scene, both scales, cave7 as before."""

import numpy as np
import pytest

from ssran_edge.data.protocols import CAVE_SPLIT, bin2x2, load_protocol

pytestmark = pytest.mark.shared_data


def test_cave_splits_whole_scenes_never_mixed(shared_data):
    data = load_protocol("cave", shared_data)
    names = {split: [p.name for p in getattr(data, split)] for split in ("train", "val", "test")}
    assert len(names["train"]) >= 18 and len(names["val"]) >= 3 and len(names["test"]) >= 6
    assert {"real_and_fake_apples", "superballs"} <= set(names["test"])
    everything = names["train"] + names["val"] + names["test"]
    assert len(everything) == len(set(everything)) == 27  # disjoint, and all the visible scenes
    assert names == {k: CAVE_SPLIT[k] for k in names}
    sizes = {p.name: p.hsi.shape[:2] for p in data.train + data.test}
    assert sizes["balloons"] == (512, 512) and sizes["beads"] == (256, 256)  # both scales, native
    assert sizes["superballs"] == (512, 512)
    for pair in data.train + data.val + data.test:
        assert pair.msi.shape[:2] == pair.hsi.shape[:2] and pair.msi.shape[2] == 3 and pair.hsi.shape[2] == 31
    # the camera matrix the MSI was simulated with, for augmentations that re-simulate it
    assert data.camera.shape == (3, 31)
    np.testing.assert_allclose(np.tensordot(data.val[0].hsi, data.camera.T, axes=1), data.val[0].msi, atol=1e-6)


def test_binned_training_scenes_all_have_the_extra_scenes_scale(shared_data):
    native = load_protocol("cave", shared_data)
    binned = load_protocol("cave", shared_data, train_resolution="binned")
    assert {p.hsi.shape[:2] for p in binned.train + binned.val} == {(256, 256)}
    assert [p.hsi.shape for p in binned.test] == [p.hsi.shape for p in native.test]  # test keeps its scale
    np.testing.assert_allclose(binned.train[0].hsi, bin2x2(native.train[0].hsi))
    # binning is a mean: a binned MSI is the MSI of the binned cube (the camera model is linear)
    np.testing.assert_allclose(binned.train[0].msi, bin2x2(native.train[0].msi), atol=1e-6)


def test_folding_validation_into_training_never_touches_test(shared_data):
    """Once a recipe is chosen: train on train + validation; a card that says so reloads the same split."""
    from ssran_edge.card import ModelCard
    from ssran_edge.data.protocols import protocol_of_card

    folded = load_protocol("cave", shared_data, fold_validation=True)
    assert [p.name for p in folded.train] == CAVE_SPLIT["train"] + CAVE_SPLIT["val"]
    assert [p.name for p in folded.val] == CAVE_SPLIT["val"]  # still reported, as seen data
    assert [p.name for p in folded.test] == CAVE_SPLIT["test"]
    card = ModelCard(arch="ssran", in_bands=3, out_bands=31, protocol="cave", training={"fold_validation": True})
    assert [p.name for p in protocol_of_card(card, shared_data).train] == [p.name for p in folded.train]


def test_cave7_is_the_first_protocol(shared_data):
    data = load_protocol("cave7", shared_data)
    assert data.name == "cave7"
    assert [p.name for p in data.test] == ["real_and_fake_apples", "superballs"]
    assert [p.hsi.shape[0] for p in data.train] == [448] * 5 and [p.hsi.shape[0] for p in data.val] == [64] * 5


def test_shared_data_dir_from_env_or_beside_the_checkout(monkeypatch, tmp_path):
    from ssran_edge.data.protocols import shared_data_dir
    from tests.conftest import REPO

    monkeypatch.setenv("SSRAN_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    monkeypatch.delenv("SSRAN_DATA")
    assert shared_data_dir() == REPO.parent / "shared" / "data"
