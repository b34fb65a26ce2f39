"""The training core on real data (the Pavia University crop: small enough for CI)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ssran_edge.checkpoint import load_model
from ssran_edge.data.patches import gather_patches, patch_origins
from ssran_edge.data.protocols import Pair, load_protocol
from ssran_edge.errors import SSRANEdgeError
from ssran_edge.train.config import make_config
from ssran_edge.train.loop import train
from ssran_edge.train.report import write_report
from tests.conftest import REPO

pytestmark = pytest.mark.shared_data

TINY = dict(epochs=2, batch_size=8, patch_size=8, patches_per_epoch=24, width=8, num_blocks=1, tile=32,
            threads=1)


@pytest.fixture(scope="module")
def pavia(shared_data):
    return load_protocol("pavia", shared_data)


def test_protocol_splits_are_disjoint_and_sized(pavia, shared_data):
    assert (pavia.in_bands, pavia.out_bands) == (4, 103)
    assert pavia.train[0].msi.shape == (50, 21, 4) and pavia.val[0].msi.shape == (50, 4, 4)
    assert pavia.test[0].hsi.shape == (50, 25, 103)
    paris = load_protocol("paris", shared_data)
    assert (paris.in_bands, paris.out_bands) == (9, 128)
    assert paris.train[0].msi.shape[1] + paris.val[0].msi.shape[1] == 36
    assert paris.test[0].msi.shape == (72, 36, 9)


def test_paper_patches_are_every_stride_one_4x4():
    pair = Pair(np.zeros((6, 5, 2), np.float32), np.zeros((6, 5, 3), np.float32))
    origins = patch_origins([pair], 4)
    assert len(origins) == 3 * 2
    msi, hsi = gather_patches([pair], origins, 4)
    assert msi.shape == (6, 2, 4, 4) and hsi.shape == (6, 3, 4, 4)


def test_augmentation_keeps_msi_and_hsi_aligned():
    rng = np.random.default_rng(0)
    cube = rng.random((8, 8, 3), dtype=np.float32)
    pair = Pair(cube[..., :2].copy(), cube.copy())
    msi, hsi = gather_patches([pair], patch_origins([pair], 8), 8, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(msi, hsi[:, :2])


def test_exposure_scales_msi_and_hsi_together_and_noise_touches_the_msi_only():
    from ssran_edge.data.patches import photometric

    rng = np.random.default_rng(0)
    msi0 = rng.uniform(0.1, 1, (64, 3, 4, 4)).astype(np.float32)
    hsi0 = rng.uniform(0.1, 1, (64, 5, 4, 4)).astype(np.float32)
    msi, hsi = photometric(msi0.copy(), hsi0.copy(), np.random.default_rng(1), exposure=[0.25, 2])
    factors = hsi[:, 0, 0, 0] / hsi0[:, 0, 0, 0]
    np.testing.assert_allclose(msi / msi0, np.broadcast_to(factors[:, None, None, None], msi.shape), rtol=1e-5)
    np.testing.assert_allclose(hsi / hsi0, np.broadcast_to(factors[:, None, None, None], hsi.shape), rtol=1e-5)
    assert 0.25 <= factors.min() < 0.5 and 1.0 < factors.max() <= 2  # log-uniform over the range
    msi, hsi = photometric(msi0.copy(), hsi0.copy(), np.random.default_rng(1), noise_read=0.01, noise_shot=0.001)
    np.testing.assert_array_equal(hsi, hsi0)
    assert 0 < np.abs(msi - msi0).std() < 0.02
    msi, _ = photometric(msi0.copy(), hsi0.copy(), np.random.default_rng(1), noise_read=0.01, clean_share=0.5)
    untouched = np.all(msi == msi0, axis=(1, 2, 3))
    assert 16 < untouched.sum() < 48  # about half of the 64 patches left clean, the others all noisy
    assert np.all(np.any(msi[~untouched] != msi0[~untouched], axis=(1, 2, 3)))


def test_ema_with_warmup_forgets_the_init_quickly():
    from ssran_edge.train.loop import ema_with_warmup

    update = ema_with_warmup(0.999)
    averaged, current = [torch.zeros(1)], [torch.ones(1)]
    update(averaged, current, 0)  # decay 1/10: 90 % of the new weights at once
    assert averaged[0].item() == pytest.approx(0.9)
    for n in range(1, 200):
        update(averaged, current, n)
    assert averaged[0].item() > 0.999
    averaged = [torch.zeros(1)]
    update(averaged, current, 100_000)  # fully warmed up: the configured decay
    assert averaged[0].item() == pytest.approx(0.001)


def test_root_polynomial_skip_stays_the_least_squares_fit_and_ema_weights_are_saved(pavia, tmp_path):
    from ssran_edge.baseline import fit_baseline

    config = make_config("pavia", "edge", output=str(tmp_path / "rp"), arch="ssran_rootpoly_skip", train_skip=False,
                         ema=0.99, loss="mrae", exposure=[0.5, 2], noise_read=0.01, **TINY)
    best = train(config, data=pavia)
    model, card = load_model(best)
    fitted = fit_baseline("rootpoly3", [p.msi for p in pavia.train], [p.hsi for p in pavia.train])
    np.testing.assert_allclose(model.linear.weight.detach().numpy()[:, :, 0, 0], fitted.weight.T, rtol=1e-6)
    state = torch.load(tmp_path / "rp" / "checkpoint.pt", weights_only=True)
    assert "ema" in state and card.training["ema"] == 0.99
    # the saved best weights are the average, not the raw weights of that epoch
    raw = state["model"]["ssran.reconstruct.weight"]
    assert not torch.equal(model.ssran.reconstruct.weight.detach(), raw)


def test_train_resume_and_report(pavia, tmp_path):
    config = make_config("pavia", "edge", output=str(tmp_path / "run"), **TINY)
    best = train(config, data=pavia)
    run = tmp_path / "run"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_psnr"]) for h in history)
    model, card = load_model(best)
    assert card.best_epoch == int(np.argmax([h["val_psnr"] for h in history])) + 1
    assert card.val_psnr == pytest.approx(max(h["val_psnr"] for h in history))

    # resume: two more epochs continue from the checkpoint, history keeps the first two
    resumed = make_config("pavia", "edge", output=str(run), **{**TINY, "epochs": 4})
    train(resumed, resume=True, data=pavia)
    history2 = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history2] == [1, 2, 3, 4]
    assert history2[:2] == history

    report = write_report(best, pavia)
    metrics = report["metrics"]
    assert set(metrics) == {"ssran_tile", "ssran_whole", "ssran_patch4", "linear", "rootpoly2", "rootpoly3",
                            "rootpoly4"}
    assert metrics["linear"]["psnr"] > 30  # the floor on this crop is ~39 dB
    assert set(report["per_scene"]["rootpoly3"]) == {p.name for p in pavia.test}
    assert set(report["robustness"]["ssran_tile"]) == {"exposure x0.5", "exposure x2"}
    conditions = report["conditions"]
    assert list(conditions) == ["clean", "read 0.5%", "read 1%", "read 0.5% + shot"]
    assert conditions["clean"]["rootpoly3"] == {s: {"psnr": v["psnr"], "sam": v["sam"]}
                                                for s, v in report["per_scene"]["rootpoly3"].items()}
    for name in ("read 0.5%", "read 1%"):  # noise costs every method something on every scene
        for method in ("ssran_tile", "linear", "rootpoly3"):
            for scene, scores in conditions[name][method].items():
                assert scores["psnr"] < report["per_scene"][method][scene]["psnr"], (name, method, scene)
    # the baselines are refitted under the condition, on training pixels that went through it
    from ssran_edge.baseline import fit_baseline
    from ssran_edge.conditions import CONDITIONS, capture
    from ssran_edge.metrics import psnr

    noisy = CONDITIONS["read 1%"]
    scene = pavia.test[0]
    clean_fit = fit_baseline("rootpoly3", [p.msi for p in pavia.train], [p.hsi for p in pavia.train])
    noisy_fit = fit_baseline("rootpoly3", [capture(p.msi, noisy, p.name) for p in pavia.train],
                             [p.hsi for p in pavia.train])
    scored = conditions["read 1%"]["rootpoly3"][scene.name]["psnr"]
    assert scored == pytest.approx(psnr(scene.hsi, noisy_fit.predict(capture(scene.msi, noisy, scene.name))))
    assert scored != pytest.approx(psnr(scene.hsi, clean_fit.predict(capture(scene.msi, noisy, scene.name))))
    assert json.loads((run / "report.json").read_text())["protocol"] == "pavia"
    text = (run / "report.md").read_text()
    assert "| pavia |" in text and "| **mean** |" in text and "| exposure x0.5 |" in text
    assert "### read 1% (read noise sigma 0.01)" in text and "| read 0.5% + shot |" in text
    assert "chosen on the clean validation PSNR (tile mode)" in text
    assert "under read 1% " in report["verdict"]
    _, card = load_model(best)
    assert card.test_metrics["linear"]["psnr"] == pytest.approx(metrics["linear"]["psnr"])
    assert card.record["splits"] == {"train": [p.name for p in pavia.train], "val": [p.name for p in pavia.val],
                              "test": [p.name for p in pavia.test]}


def test_same_seed_same_result(pavia, tmp_path):
    cfg = dict(TINY, epochs=1)
    a = train(make_config("pavia", "edge", output=str(tmp_path / "a"), **cfg), data=pavia)
    b = train(make_config("pavia", "edge", output=str(tmp_path / "b"), **cfg), data=pavia)
    ma, _ = load_model(a)
    mb, _ = load_model(b)
    for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert (x == y).all(), k


def test_cli_end_to_end_with_linear_skip(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "train", "--protocol", "pavia", "--recipe", "edge", "--arch", "ssran_linear_skip",
         "--epochs", "1", "--batch-size", "8", "--patch-size", "8", "--patches-per-epoch", "16", "--width", "8",
         "--num-blocks", "1", "--tile", "32", "--threads", "1", "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"weights: {out / 'model.safetensors'}" in result.stdout
    report = json.loads((out / "report.json").read_text())
    # the skip starts at the least-squares fit: one short epoch stays close to the floor
    assert abs(report["metrics"]["ssran_tile"]["psnr"] - report["metrics"]["linear"]["psnr"]) < 3


@pytest.mark.parametrize("args,message", [
    (["--protocol", "nope"], "invalid choice"),
    (["--resume", "--output", "/nonexistent/run"], "no training checkpoint to resume from"),
    (["--lr", "abc"], "invalid float value"),
])
def test_cli_bad_input_is_one_line(args, message):
    result = subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_train_on_your_own_cubes_through_an_srf(tmp_path, shared_data):
    """Protocol "files": any cubes read_cube reads, simulated through an SRF (here CAVE crops as .npz)."""
    from ssran_edge.data.readers import read_cave_scene

    paths = []
    for k, scene in enumerate(["balloons_ms", "flowers_ms"]):
        cube = read_cave_scene(shared_data / "cave" / scene)
        path = tmp_path / f"cube{k}.npz"
        np.savez(path, cube=cube.data[:48, :40], wavelengths_nm=cube.wavelengths)
        paths.append(str(path))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "train", "--protocol", "files", "--train-files", paths[0], "--test-files", paths[1],
         "--srf", "nikon_d700", "--recipe", "edge", "--epochs", "1", "--batch-size", "4", "--patch-size", "8",
         "--patches-per-epoch", "8", "--width", "8", "--num-blocks", "1", "--tile", "32", "--threads", "1",
         "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    model, card = load_model(out / "model.safetensors")
    assert (card.in_bands, card.out_bands, card.protocol, card.srf) == (3, 31, "files", "nikon_d700")
    assert card.training["test_files"] == [paths[1]] and len(card.wavelengths_nm) == 31
    assert json.loads((out / "report.json").read_text())["test_regions"] == [paths[1]]
    bad = subprocess.run([sys.executable, "-m", "train", "--protocol", "files", "--train-files", paths[0]],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "needs --train-files and --test-files" in bad.stderr


def test_init_fine_tunes_from_weights_and_refuses_a_mismatch(pavia, tmp_path):
    first = train(make_config("pavia", "edge", output=str(tmp_path / "a"), **{**TINY, "epochs": 1}), data=pavia)
    start, _ = load_model(first)
    tuned = train(make_config("pavia", "edge", output=str(tmp_path / "b"), init=str(first),
                              **{**TINY, "epochs": 1, "lr": 0.0}), data=pavia)  # lr 0: weights must not move
    after, _ = load_model(tuned)
    for (k, a), (_, b) in zip(start.state_dict().items(), after.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # another arch: the SSRAN body starts from the weights, the skip is the least-squares fit on noisy pixels
    skipped = train(make_config("pavia", "edge", output=str(tmp_path / "c"), init=str(first), arch="ssran_linear_skip",
                                skip_noise=0.01, **{**TINY, "epochs": 1, "lr": 0.0}), data=pavia)
    skip_model, _ = load_model(skipped)
    for k, v in start.state_dict().items():
        assert torch.equal(skip_model.ssran.state_dict()[k], v), k
    from ssran_edge.baseline import fit_baseline
    from ssran_edge.conditions import Condition, capture

    noisy_fit = fit_baseline("linear", [capture(p.msi, Condition("skip fit", read=0.01), p.name) for p in pavia.train],
                             [p.hsi for p in pavia.train])
    np.testing.assert_allclose(skip_model.linear.bias.detach().numpy(), noisy_fit.bias, rtol=1e-5, atol=1e-6)
    with pytest.raises(SSRANEdgeError, match="does not fit a 16-wide"):
        train(make_config("pavia", "edge", output=str(tmp_path / "d"), init=str(first), arch="ssran_linear_skip",
                          **{**TINY, "epochs": 1, "width": 16}), data=pavia)


def test_epoch_is_chosen_on_clean_and_noisy_validation(pavia, tmp_path):
    config = make_config("pavia", "edge", output=str(tmp_path / "run"), select_noise=0.01, noise_read=0.02,
                         noise_shot=0.0005, **{**TINY, "epochs": 3})
    best = train(config, data=pavia)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for e in history:
        assert e["val_psnr_noisy"] < e["val_psnr"]  # noise costs something
        assert e["val_score"] == pytest.approx((e["val_psnr"] + e["val_psnr_noisy"]) / 2)
    chosen = max(history, key=lambda e: e["val_score"])
    _, card = load_model(best)
    assert card.best_epoch == chosen["epoch"] and card.val_psnr == pytest.approx(chosen["val_psnr"])
    assert card.record["val_psnr_noisy"] == pytest.approx(chosen["val_psnr_noisy"])
    assert card.record["selection"] == "mean of the clean and the read-noise sigma 0.01 validation PSNR (tile mode)"


def test_recipe_screen_compares_levers_on_validation_and_resumes(tmp_path, shared_data):
    import subprocess
    import sys

    from tests.conftest import REPO

    def screen():
        return subprocess.run([sys.executable, "-m", "ssran_edge.train.screen", "--protocol", "pavia", "--levers",
                               "base", "l2", "--epochs", "2", "--patches-per-epoch", "32", "--output", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)

    first = screen()
    assert first.returncode == 0, first.stderr
    rows = [line for line in (tmp_path / "screen.md").read_text().splitlines() if line.startswith("| base")
            or line.startswith("| l2")]
    assert len(rows) == 2 and "loss=l2" in rows[1] and "Validation baselines, each fitted" in first.stdout
    assert "rootpoly3 " in first.stdout and "at read 1%" in first.stdout
    history = json.loads((tmp_path / "l2" / "history.json").read_text())
    assert len(history) == 2 and all(e["val_psnr"] > 20 for e in history)
    again = screen()  # complete runs are read back, not trained again
    assert again.returncode == 0 and json.loads((tmp_path / "l2" / "history.json").read_text()) == history
    assert again.stdout == first.stdout


def test_mixup_keeps_the_camera_model_exact():
    from ssran_edge.data.patches import mix

    rng = np.random.default_rng(0)
    srf = rng.uniform(0, 1, (3, 7)).astype(np.float32)
    hsi0 = rng.uniform(0, 1, (16, 7, 4, 4)).astype(np.float32)
    msi0 = np.einsum("cb,nbhw->nchw", srf, hsi0)
    msi, hsi = mix(msi0.copy(), hsi0.copy(), np.random.default_rng(1), share=0.5)
    np.testing.assert_allclose(msi, np.einsum("cb,nbhw->nchw", srf, hsi), rtol=1e-5, atol=1e-6)
    changed = np.flatnonzero(np.abs(hsi - hsi0).reshape(16, -1).max(axis=1) > 0)
    assert 2 <= changed.size <= 14  # about half of the batch
    untouched = np.setdiff1d(np.arange(16), changed)
    np.testing.assert_array_equal(hsi[untouched], hsi0[untouched])


def test_relight_changes_spectra_smoothly_and_keeps_the_camera_model_exact():
    from ssran_edge.data.patches import relight

    rng = np.random.default_rng(0)
    srf = rng.uniform(0, 1, (3, 31)).astype(np.float32)
    hsi0 = rng.uniform(0.1, 1, (8, 31, 4, 4)).astype(np.float32)
    msi0 = np.einsum("cb,nbhw->nchw", srf, hsi0)
    msi, hsi = relight(msi0.copy(), hsi0.copy(), np.random.default_rng(1), 0.3, srf)
    np.testing.assert_allclose(msi, np.einsum("cb,nbhw->nchw", srf, hsi), rtol=1e-5, atol=1e-6)
    curve = hsi / hsi0  # one curve per patch, the same at every pixel
    np.testing.assert_allclose(curve, curve[:, :, :1, :1].repeat(4, 2).repeat(4, 3), rtol=1e-5)
    curve = curve[:, :, 0, 0]
    np.testing.assert_allclose(curve.mean(axis=1), 1, rtol=1e-5)  # a colour change, not an exposure
    assert curve.min() > np.exp(-0.6) and curve.max() < np.exp(0.6)
    assert np.abs(curve - 1).max() > 0.05  # it did change the spectra
    assert np.abs(np.diff(curve, 2, axis=1)).max() < 0.01  # smooth over the bands
    off_rng = np.random.default_rng(2)
    same = relight(msi0.copy(), hsi0.copy(), off_rng, 0.0, None)
    np.testing.assert_array_equal(same[1], hsi0)
    assert off_rng.integers(1 << 30) == np.random.default_rng(2).integers(1 << 30)  # off: no draws
