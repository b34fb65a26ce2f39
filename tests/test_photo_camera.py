"""The sRGB camera (CIE 1931 -> linear sRGB) and a photo's capture chain (8-bit sRGB, PNG or JPEG 4:2:0,
read back by the photo decoder): what the `srgb` model is trained and evaluated through."""

import io
import logging

import numpy as np
import pytest
import torch

from ssran_edge.conditions import SRGB_CONDITIONS, capture, condition_named, conditions_for, photo
from ssran_edge.data.images import decode_picture, encode_picture
from ssran_edge.data.patches import calibration_tiles, photo_chain, training_capture
from ssran_edge.encoding import srgb_codes, to_linear
from ssran_edge.srf import BUNDLED_DIR, XYZ_TO_SRGB, load_srf, simulate_msi

CAVE_NM = np.arange(400, 701, 10, dtype=np.float64)


def test_srgb_camera_reads_a_flat_spectrum_as_white_and_keeps_its_negative_lobes():
    srgb = load_srf("srgb")
    assert srgb.band_names == ["R", "G", "B"] and srgb.signed
    matrix = srgb.matrix_for(CAVE_NM, 31)
    np.testing.assert_allclose(simulate_msi(np.ones((2, 2, 31), np.float32), matrix), 1.0, atol=1e-5)
    assert matrix.min() < -0.05  # red's negative lobe near 500 nm, kept
    assert matrix[0, CAVE_NM.tolist().index(520)] < 0 and matrix[0, CAVE_NM.tolist().index(610)] > 0.15


def test_srgb_camera_matches_the_cie_integral_of_a_smooth_spectrum():
    # colour = XYZ_TO_SRGB . integral(cmf x spectrum), each channel scaled by its response to a flat spectrum,
    # computed here at 1 nm with the spectrum interpolated: the 10 nm band matrix must agree
    from ssran_edge.srf import _read_curve_table

    cmf = _read_curve_table(BUNDLED_DIR / "cie1931_2deg_xyz_cmf.csv", "cie")
    fine = np.arange(400, 701)
    x = (CAVE_NM - 550) / 150
    spectrum = 0.4 + 0.3 * np.sin(2.5 * x) + 0.1 * x ** 2
    rgb_curves = np.stack([np.interp(fine, cmf.wavelengths, c) for c in cmf.curves.T], axis=1) @ XYZ_TO_SRGB.T
    fine_spectrum = np.interp(fine, CAVE_NM, spectrum)
    expected = (rgb_curves * fine_spectrum[:, None]).sum(0) / rgb_curves.sum(0)
    got = simulate_msi(spectrum.astype(np.float32)[None, None], load_srf("srgb").matrix_for(CAVE_NM, 31))[0, 0]
    np.testing.assert_allclose(got, expected, atol=0.01)


def test_bundled_cie_table_is_the_shared_one(shared_data):
    bundled = (BUNDLED_DIR / "cie1931_2deg_xyz_cmf.csv").read_bytes()
    assert bundled == (shared_data / "srf" / "cie1931_2deg_xyz_cmf.csv").read_bytes()


def test_a_measured_curve_s_negatives_are_clipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "cam.csv"
    path.write_text("wavelength_nm,R,G\n400,0.1,-0.002\n500,0.5,0.4\n600,-0.001,0.2\n")
    with caplog.at_level(logging.WARNING, logger="ssran_edge.srf"):
        srf = load_srf(path)
    assert (srf.curves >= 0).all() and not srf.signed
    assert "2 negative response value(s)" in caplog.text and "clipped to 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ssran_edge.srf"):
        load_srf("srgb")
    assert caplog.text == ""  # the colour-matching camera's negatives are real


# --- the capture chain ------------------------------------------------------------------------------

def _frame(shape=(64, 64)) -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = rng.uniform(0, 1, (shape[0] // 8, shape[1] // 8, 3)).repeat(8, 0).repeat(8, 1)
    return (smooth * 1.1 + rng.normal(0, 0.02, (*shape, 3))).astype(np.float32)  # some clips above 1


def test_png_condition_is_exactly_the_8_bit_codes_decoded():
    frame = _frame()
    got = capture(frame, SRGB_CONDITIONS["sRGB 8-bit PNG"], "s")
    np.testing.assert_array_equal(got, to_linear(srgb_codes(frame), "srgb"))
    assert got.max() <= 1.0 and got.min() >= 0.0  # clipped, as a camera clips
    assert np.abs(got - np.clip(frame, 0, 1)).max() < 0.01  # 8-bit steps only


def test_jpeg_is_written_4_2_0_and_costs_more_at_lower_quality():
    from PIL import Image, JpegImagePlugin

    codes = srgb_codes(_frame())
    with Image.open(io.BytesIO(encode_picture(codes, 75))) as im:
        assert im.format == "JPEG" and JpegImagePlugin.get_sampling(im) == 2  # 2 = 4:2:0
    assert decode_picture(encode_picture(codes, 0), "x.png").codes.tolist() == codes.tolist()  # PNG: lossless
    clean = np.clip(_frame(), 0, 1)
    errors = {q: float(np.abs(photo(_frame(), q) - clean).mean()) for q in (95, 90, 75, 60)}
    assert errors[95] < errors[90] < errors[75] < errors[60]


def test_conditions_are_fixed_per_scene_and_named():
    frame = _frame()
    noisy = SRGB_CONDITIONS["read 1% + sRGB 8-bit PNG"]
    np.testing.assert_array_equal(capture(frame, noisy, "a"), capture(frame, noisy, "a"))
    assert not np.array_equal(capture(frame, noisy, "a"), capture(frame, noisy, "b"))
    assert conditions_for("srgb") is SRGB_CONDITIONS and "read 1%" in conditions_for("linear")
    assert condition_named("sRGB JPEG q90").jpeg == 90
    assert SRGB_CONDITIONS["sRGB JPEG q75"].describe() == "8-bit sRGB JPEG quality 75 (4:2:0), decoded to linear"
    with pytest.raises(ValueError, match="unknown capture condition 'jpeg'"):
        condition_named("jpeg")


def test_photo_chain_writes_the_asked_share_as_jpeg_and_draws_nothing_when_off():
    batch = np.stack([_frame().transpose(2, 0, 1)] * 40)
    png = to_linear(srgb_codes(_frame()), "srgb").transpose(2, 0, 1)
    out = photo_chain(batch.copy(), np.random.default_rng(1), "srgb", [60, 95], 0.5)
    as_png = [np.array_equal(patch, png) for patch in out]
    assert 10 <= sum(as_png) <= 30 and not all(as_png)  # about half lossless, the rest JPEG'd
    assert all(np.array_equal(p, png) for p in photo_chain(batch.copy(), np.random.default_rng(1), "srgb", [60, 95], 0))
    rng = np.random.default_rng(2)
    untouched = photo_chain(batch.copy(), rng, "", [], 0.0)
    np.testing.assert_array_equal(untouched, batch)
    assert rng.uniform() == np.random.default_rng(2).uniform()  # the stream is where it was


def test_calibration_tiles_go_through_the_training_chain():
    from ssran_edge.data.protocols import Pair

    pair = Pair(np.clip(_frame((96, 96)), 0, 1), np.zeros((96, 96, 31), np.float32), "p")
    training = {"noise_read": 0.0, "encode": "srgb", "jpeg_quality": [60, 95], "jpeg_share": 1.0}
    noise, photo_ = training_capture(training)
    plain = calibration_tiles([pair], 3, 6, 32)
    chained = calibration_tiles([pair], 3, 6, 32, noise=noise, photo=photo_)
    assert len(chained) == 6
    for a, b in zip(plain, chained, strict=True):
        assert a.shape == b.shape and not np.array_equal(a, b) and np.abs(a - b).mean() < 0.1  # same tile, JPEG


def test_camera_loss_adds_the_colour_error_seen_through_the_camera():
    from ssran_edge.train.loop import make_loss

    gen = torch.Generator().manual_seed(0)
    camera, pred, ref = (torch.rand(*shape, generator=gen) for shape in ((3, 31), (2, 31, 4, 4), (2, 31, 4, 4)))
    spectral = (pred - ref).abs().mean()
    colour = (pred.permute(0, 2, 3, 1) @ camera.T - ref.permute(0, 2, 3, 1) @ camera.T).abs().mean()
    assert make_loss("l1", camera, 0.5)(pred, ref) == pytest.approx(float(spectral + 0.5 * colour), rel=1e-5)
    assert make_loss("l1", camera, 0.0)(pred, ref) == pytest.approx(float(spectral), rel=1e-6)
    assert make_loss("l1")(ref, ref) == 0 and make_loss("l1", camera, 1.0)(ref, ref) == 0


# --- the chroma guide (luma-guided chroma path) ----------------------------------------------------

def test_chroma_guide_starts_as_the_identity_and_the_colour_space_round_trips():
    from ssran_edge.model import build_model, srgb_decode, srgb_encode

    x = torch.rand(2, 3, 16, 16)
    np.testing.assert_allclose(srgb_decode(srgb_encode(x)), x, atol=1e-6)
    np.testing.assert_allclose(srgb_encode(x).numpy(), srgb_codes(x.numpy().transpose(0, 2, 3, 1), 16)
                               .transpose(0, 3, 1, 2) / 65535, atol=2e-5)
    model = build_model("ssran_chroma_skip", 3, 31, width=8, num_blocks=1)
    with torch.no_grad():
        np.testing.assert_allclose(model.guide(x), x, atol=1e-6)
        model.guide.net[-1].bias.fill_(0.01)  # a chroma shift changes colour, not luma
        from ssran_edge.model import RGB_TO_YCC

        luma = torch.einsum("c,nchw->nhw", RGB_TO_YCC[0], srgb_encode(model.guide(x)))
        np.testing.assert_allclose(luma, torch.einsum("c,nchw->nhw", RGB_TO_YCC[0], srgb_encode(x)), atol=1e-5)
        assert not torch.allclose(model.guide(x), x, atol=1e-3)
    with pytest.raises(ValueError, match="3 input bands, not 4"):
        build_model("ssran_chroma_skip", 4, 31)


# --- training through the chain ---------------------------------------------------------------------

@pytest.mark.shared_data
def test_a_photo_model_trains_through_the_chain_and_its_card_says_so(shared_data, tmp_path):
    import json
    from dataclasses import replace

    from ssran_edge.checkpoint import load_model
    from ssran_edge.data.protocols import Pair, load_protocol
    from ssran_edge.train.config import make_config
    from ssran_edge.train.loop import train
    from ssran_edge.train.report import under_conditions

    data = load_protocol("cave_srgb", shared_data)
    assert (data.encoding, data.srf, data.name) == ("srgb", "srgb", "cave_srgb")
    assert all(0 <= p.msi.min() and p.msi.max() <= 1 for p in data.train + data.test)  # clipped frames
    crop = lambda pairs, n: [Pair(p.msi[:96, :96], p.hsi[:96, :96], p.name) for p in pairs[:n]]  # noqa: E731
    small = replace(data, train=crop(data.train, 2), val=crop(data.val, 1), test=crop(data.test, 2))
    recipe = make_config("cave_srgb", "edge")
    assert (recipe.arch, recipe.encode, recipe.jpeg_share, recipe.skip_condition) == (
        "ssran_linear_skip", "srgb", 0.0, "read 1% + sRGB 8-bit PNG")
    assert recipe.select_conditions == ["sRGB 8-bit PNG", "read 1% + sRGB 8-bit PNG"]
    # JPEG in the loop too (the study's lever), chosen on lossless and JPEG frames
    chosen_on = ["sRGB 8-bit PNG", "sRGB JPEG q90", "sRGB JPEG q75"]
    config = make_config("cave_srgb", "edge", output=str(tmp_path / "run"), epochs=2, patches_per_epoch=16,
                         patch_size=32, width=8, num_blocks=1, tile=32, threads=1, jpeg_share=0.5,
                         select_conditions=chosen_on)
    best = train(config, data=small)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for e in history:
        assert list(e["val_conditions"]) == chosen_on
        assert e["val_score"] == pytest.approx(np.mean(list(e["val_conditions"].values())))
        assert e["val_conditions"]["sRGB 8-bit PNG"] > e["val_conditions"]["sRGB JPEG q75"]  # JPEG costs
    _, card = load_model(best)
    assert (card.srf, card.encoding, card.protocol) == ("srgb", "srgb", "cave_srgb")
    assert card.record["selection"].startswith("mean validation PSNR under sRGB 8-bit PNG, sRGB JPEG q90")
    # evaluation: every photo condition, baselines fitted on training frames through the same chain
    conditions = under_conditions(lambda msi: np.zeros((*msi.shape[:2], 31), np.float32), small)
    assert list(conditions) == list(SRGB_CONDITIONS)
    q90, png = conditions["sRGB JPEG q90"]["rootpoly3"], conditions["sRGB 8-bit PNG"]["rootpoly3"]
    assert all(q90[s]["psnr"] < png[s]["psnr"] for s in q90)
