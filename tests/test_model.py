import numpy as np
import pytest
import torch

from ssran_edge import SSRAN, LinearSkipSSRAN
from ssran_edge.model import ECA, build_model, count_parameters


def test_parameter_count_matches_the_paper_configuration():
    assert count_parameters(SSRAN(4, 103)) == 278_331


def test_parameter_count_formula_for_other_band_counts():
    # features (in*64+64) + 3 blocks x (2 x 3x3: 2*(64*64*9+64), 2 x 1x1: 2*(64*64+64),
    # fuse 128*64+64, ECA 5) + reconstruct (64*out+out) + ECA 5
    block = 2 * (64 * 64 * 9 + 64) + 2 * (64 * 64 + 64) + (128 * 64 + 64) + 5
    for bands_in, bands_out in [(3, 31), (9, 128)]:
        expected = bands_in * 64 + 64 + 3 * block + 64 * bands_out + bands_out + 5
        assert count_parameters(SSRAN(bands_in, bands_out)) == expected


@pytest.mark.parametrize("shape", [(1, 4, 4, 4), (2, 4, 17, 9), (1, 4, 64, 48)])
def test_output_shape(shape):
    model = SSRAN(4, 103).eval()
    with torch.no_grad():
        y = model(torch.rand(shape))
    assert y.shape == (shape[0], 103, shape[2], shape[3])
    assert torch.isfinite(y).all()


def test_eca_against_hand_computed_example():
    eca = ECA(5)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([[[0.1, 0.2, 0.3, 0.4, 0.5]]]))
    # channel means 1, 2, 3 (each channel constant over 2x2)
    x = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    # zero "same" padding: c0 = .3*1+.4*2+.5*3, c1 = .2*1+.3*2+.4*3, c2 = .1*1+.2*2+.3*3
    logits = torch.tensor([2.6, 2.0, 1.4])
    expected = x * torch.sigmoid(logits).reshape(1, 3, 1, 1)
    assert torch.allclose(eca(x), expected, atol=1e-6)


def test_eca_pools_over_the_whole_extent():
    eca = ECA(5)
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = 4.0  # mean 1.0 per channel, not the pixel value
    w = eca.conv.weight.detach().ravel()
    logits = torch.stack([w[2:].sum(), w[1:4].sum(), w[:3].sum()])
    assert torch.allclose(eca(x)[0, :, 0, 0], 4.0 * torch.sigmoid(logits), atol=1e-6)


def test_xavier_init_no_batch_norm_biases_zero():
    model = SSRAN(3, 31)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    conv = model.blocks[0].spatial[0]
    bound = np.sqrt(6.0 / (64 * 9 + 64 * 9))
    assert conv.weight.abs().max() <= bound + 1e-6
    assert conv.weight.abs().max() > 0.5 * bound
    assert torch.count_nonzero(conv.bias) == 0
    assert model.blocks[0].attention.conv.bias is None


def test_linear_skip_variant_starts_at_the_linear_map():
    model = LinearSkipSSRAN(3, 5).eval()
    weight, bias = torch.randn(5, 3), torch.randn(5)
    model.init_linear(weight, bias)
    x = torch.rand(2, 3, 8, 8)
    expected = torch.einsum("oi,bihw->bohw", weight, x) + bias.reshape(1, 5, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["ssran_rootpoly_skip", "ssran_rootpoly4_skip"])
def test_root_polynomial_skip_starts_at_the_fitted_baseline(arch):
    from ssran_edge.baseline import fit_baseline
    from ssran_edge.card import SKIP_BASELINE

    rng = np.random.default_rng(0)
    msi = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)  # enough pixels for 22 well-conditioned terms
    hsi = rng.uniform(0, 1, (32, 32, 5)).astype(np.float32)
    baseline = fit_baseline(SKIP_BASELINE[arch], [msi], [hsi])
    model = build_model(arch, 3, 5).eval()
    model.init_linear(torch.from_numpy(baseline.weight.T.copy()), torch.from_numpy(baseline.bias))
    with torch.no_grad():
        out = model(torch.from_numpy(msi.transpose(2, 0, 1)[None].copy()))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(out, baseline.predict(msi), atol=1e-4)
    assert not any(name == "exponents" for name, _ in model.named_parameters())  # fixed, not trained


def test_build_model_rejects_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet", 3, 31)
