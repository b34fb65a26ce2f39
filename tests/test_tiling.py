import numpy as np
import pytest
import torch

from ssran_edge.model import ECA, SSRAN
from ssran_edge.tiling import RECEPTIVE_RADIUS, predict_patches, predict_tiled


def _without_attention(model):
    for module in model.modules():
        if isinstance(module, ECA):
            module.forward = lambda t: t
    return model


@pytest.fixture(scope="module")
def conv_path_model():
    torch.manual_seed(0)
    return _without_attention(SSRAN(3, 7, width=16).eval())


@pytest.mark.parametrize("h,w,tile", [(50, 37, 16), (33, 64, 32), (20, 20, 7)])
def test_tiled_equals_whole_frame_on_the_conv_path(conv_path_model, h, w, tile):
    x = np.random.default_rng(h).random((h, w, 3), dtype=np.float32)
    whole = predict_tiled(conv_path_model, x, tile=10_000)
    tiled = predict_tiled(conv_path_model, x, tile=tile, halo=RECEPTIVE_RADIUS)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_a_halo_below_the_receptive_radius_leaves_seams(conv_path_model):
    x = np.random.default_rng(1).random((40, 40, 3), dtype=np.float32)
    whole = predict_tiled(conv_path_model, x, tile=10_000)
    tiled = predict_tiled(conv_path_model, x, tile=16, halo=RECEPTIVE_RADIUS - 1)
    assert np.abs(tiled - whole).max() > 1e-4


def test_patch_mode_runs_each_patch_alone():
    torch.manual_seed(0)
    model = SSRAN(3, 5, width=8).eval()
    x = np.random.default_rng(2).random((10, 9, 3), dtype=np.float32)
    out = predict_patches(model, x, patch=4)
    assert out.shape == (10, 9, 5)
    # the patch at the origin equals the model run on that 4x4 square alone
    with torch.no_grad():
        alone = model(torch.from_numpy(x[:4, :4].transpose(2, 0, 1).copy())[None])[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(out[:4, :4], alone, atol=1e-6)
    # and differs from whole-frame inference (ECA and zero padding see only the patch)
    assert np.abs(out - predict_tiled(model, x, tile=10_000)).max() > 1e-4
