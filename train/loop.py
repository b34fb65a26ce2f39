"""The training loop: sampled patches -> SSRAN -> L2/L1 loss; validation every epoch in the chosen
inference mode; an atomic checkpoint each epoch (resumable); best-on-validation weights kept."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ssran_edge.atomic import write_json
from ssran_edge.baseline import fit_baseline
from ssran_edge.card import SKIP_BASELINE, Inference, ModelCard
from ssran_edge.checkpoint import load_training_state, save_model, save_training_state
from ssran_edge.conditions import CONDITIONS, Condition, capture, condition_named
from ssran_edge.data.patches import gather_patches, mix, patch_origins, photo_chain, photometric, relight
from ssran_edge.data.protocols import ProtocolData, load_protocol
from ssran_edge.errors import SSRANEdgeError
from ssran_edge.metrics import psnr
from ssran_edge.model import build_model, count_parameters
from ssran_edge.tiling import predict
from ssran_edge.train.config import TrainConfig
from ssran_edge.train.distributed import SINGLE_PROCESS, World, collective, sum_over_ranks

log = logging.getLogger("ssran_edge.train")


def model_card(config: TrainConfig, data: ProtocolData) -> ModelCard:
    return ModelCard(arch=config.arch, in_bands=data.in_bands, out_bands=data.out_bands, width=config.width,
                     num_blocks=config.num_blocks, eca_kernel=config.eca_kernel,
                     wavelengths_nm=list(data.wavelengths) if data.wavelengths is not None else None, srf=data.srf,
                     encoding=data.encoding,
                     msi_band_names=data.msi_band_names, protocol=data.name,
                     inference=Inference(mode=config.select_mode, tile=config.tile), training=config.to_dict(),
                     record={"splits": {split: [p.name for p in getattr(data, split)]
                                        for split in ("train", "val", "test")}})


def evaluate_psnr(model, pairs, mode: str, config: TrainConfig, condition: Condition = CONDITIONS["clean"]) -> float:
    model.eval()
    values = [psnr(p.hsi, predict(model, capture(p.msi, condition, p.name), mode, tile=config.tile,
                                  patch=config.patch_size, device=config.device)) for p in pairs]
    return float(np.mean(values))


def selection_conditions(config: TrainConfig) -> dict[str, Condition]:
    """The conditions the epoch is chosen under: --select-conditions by name, else clean plus, with
    --select-noise, read noise of that sigma (a model chosen on clean validation alone can trade
    noise robustness away unseen)."""
    if config.select_conditions:
        return {name: condition_named(name) for name in config.select_conditions}
    chosen = {"clean": CONDITIONS["clean"]}
    if config.select_noise > 0:
        chosen["noisy"] = Condition("validation", read=config.select_noise)
    return chosen


def validation_scores(model, pairs, config: TrainConfig) -> dict[str, float]:
    """val_psnr (under the first selection condition) and, with more than one, val_score, their mean:
    what the epoch is chosen on; the others recorded as val_conditions (--select-conditions) or
    val_psnr_noisy (--select-noise, the key cards have always carried)."""
    under = {name: evaluate_psnr(model, pairs, config.select_mode, config, condition)
             for name, condition in selection_conditions(config).items()}
    scores = {"val_psnr": next(iter(under.values()))}
    if config.select_conditions:
        scores["val_conditions"] = under
    elif "noisy" in under:
        scores["val_psnr_noisy"] = under["noisy"]
    if len(under) > 1:
        scores["val_score"] = float(np.mean(list(under.values())))
    return scores


def selection_rule(config: TrainConfig) -> str:
    """The card's words for what chose the epoch (what `chosen_by` is in train())."""
    if config.qat:
        return f"clean validation PSNR through the INT8 export's rounding, val_psnr_int8 ({config.select_mode} mode)"
    if config.select_conditions:
        return f"mean validation PSNR under {', '.join(config.select_conditions)} ({config.select_mode} mode)"
    if config.select_noise > 0:
        return (f"mean of the clean and the read-noise sigma {config.select_noise:g} validation PSNR "
                f"({config.select_mode} mode)")
    return f"clean validation PSNR ({config.select_mode} mode)"


def quantized_psnr(sim, calibration, model, pairs, config: TrainConfig) -> float:
    """Validation PSNR through the INT8 export's rounding, calibrated as the export will calibrate."""
    sim.calibrate(calibration)
    sim.enable()
    try:
        return evaluate_psnr(model, pairs, config.select_mode, config)
    finally:
        sim.disable()


def load_init(model, config: TrainConfig, data: ProtocolData) -> bool:
    """Start from --init weights; True when they include a skip to keep. Weights of another arch (a skip
    variant or the faithful SSRAN) give the shared SSRAN body only; the skip is then fitted afresh."""
    from ssran_edge.checkpoint import load_model

    start, start_card = load_model(config.init)
    if (start_card.in_bands, start_card.out_bands) != (data.in_bands, data.out_bands):
        raise SSRANEdgeError(f"--init {config.init}: a {start_card.arch} {start_card.in_bands} -> "
                             f"{start_card.out_bands} model cannot start a {config.arch} "
                             f"{data.in_bands} -> {data.out_bands} run")
    if start_card.arch == config.arch:
        model.load_state_dict(start.state_dict())
        return config.arch in SKIP_BASELINE and not config.refit_skip
    body = getattr(model, "ssran", model)
    try:
        body.load_state_dict(getattr(start, "ssran", start).state_dict())
    except RuntimeError:
        raise SSRANEdgeError(f"--init {config.init}: its SSRAN body ({start_card.width} wide, {start_card.num_blocks} "
                             f"blocks) does not fit a {config.width}-wide {config.num_blocks}-block "
                             f"{config.arch}") from None
    log.info("--init %s: the SSRAN body of a %s starts this %s", config.init, start_card.arch, config.arch)
    return False


def fit_skip(config: TrainConfig, data: ProtocolData):
    """The skip's least-squares fit on the training pixels, under read noise of config.skip_noise (or the
    capture condition config.skip_condition)."""
    noise = condition_named(config.skip_condition) if config.skip_condition else Condition("skip fit",
                                                                                           read=config.skip_noise)
    return fit_baseline(SKIP_BASELINE[config.arch], [capture(p.msi, noise, p.name) for p in data.train],
                        [p.hsi for p in data.train], ridge=config.skip_ridge or 1e-9)


def _lr_at(config: TrainConfig, epoch: int) -> float:
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    if config.schedule == "step":
        return config.lr * config.lr_gamma ** (epoch // config.lr_step)
    raise ValueError(f"unknown schedule {config.schedule!r} (step or cosine)")


def ema_with_warmup(decay: float):
    """An EMA update for torch's AveragedModel whose decay ramps up as min(decay, (1 + n) / (10 + n)),
    n = updates so far: a plain 0.999 average would remember the random init for thousands of steps."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        n = float(num_averaged)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (10 + n)))

    return update


def make_loss(name: str, camera: torch.Tensor | None = None, camera_weight: float = 0.0):
    """l2 (the paper's), l1, or mrae: mean |pred - ref| / (ref + guard). The guard (1e-3 of full scale)
    keeps dark reference pixels, common in CAVE's black backgrounds, from dominating the mean. With a
    `camera` matrix (bands_in x bands_out) and weight: plus that weight x the same loss on the spectra
    seen through the camera (the colour error)."""
    if name == "l2":
        spectral = torch.nn.MSELoss()
    elif name == "l1":
        spectral = torch.nn.L1Loss()
    elif name == "mrae":
        spectral = lambda pred, ref: ((pred - ref).abs() / (ref.abs() + 1e-3)).mean()  # noqa: E731
    else:
        raise ValueError(f"unknown loss {name!r} (l2, l1 or mrae)")
    if camera is None or camera_weight <= 0:
        return spectral

    def spectral_and_seen(pred, ref):
        seen = torch.einsum("mb,nbhw->nmhw", camera, pred), torch.einsum("mb,nbhw->nmhw", camera, ref)
        return spectral(pred, ref) + camera_weight * spectral(*seen)
    return spectral_and_seen


def default_output(config: TrainConfig) -> str:
    return f"runs/{config.protocol}-{config.recipe}-{config.arch}"


def remove_partial_files(out: Path) -> list[Path]:
    """Remove what a run killed mid-write leaves: the hidden temp files of atomic writes (`.<name>.*.tmp`).
    They never carry a final name, so nothing reads them; they only take disk space."""
    stale = sorted(out.glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %d partial file(s) left by an interrupted run", out, len(stale))
    return stale


def train(config: TrainConfig, resume: bool = False, data: ProtocolData | None = None,
          world: World = SINGLE_PROCESS) -> Path:
    """Train per `config`; returns the path of the best weights (<output>/model.safetensors).

    Under torchrun (`world` from train.distributed, its process group joined) every rank calls this:
    each trains its share of every global batch, and rank 0 alone validates and writes."""
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output or default_output(config))
    if out.exists() and not out.is_dir():
        raise SSRANEdgeError(f"--output {out}: exists and is not a folder (a run writes a folder)")
    state_file = out / "checkpoint.pt"
    resumed = load_training_state(state_file) if resume else None  # fails before anything is written
    data = data or load_protocol(config.protocol, config.data_root or None, **config.data_kwargs())
    if config.illuminant > 0 and data.camera is None:
        raise SSRANEdgeError(f"--illuminant re-simulates the MSI through the camera's SRF; protocol "
                             f"{data.name} pairs real sensors ({data.srf}) and has none")
    torch.manual_seed(config.seed)
    model = build_model(config.arch, data.in_bands, data.out_bands, width=config.width,
                        num_blocks=config.num_blocks, eca_kernel=config.eca_kernel).to(config.device)
    keep_skip = False
    if config.init:
        keep_skip = load_init(model, config, data)
    if config.arch in SKIP_BASELINE and not keep_skip:  # the skip starts at the baseline fitted on the training pixels
        floor = fit_skip(config, data)
        model.init_linear(torch.from_numpy(floor.weight.T.copy()), torch.from_numpy(floor.bias))
    if config.arch in SKIP_BASELINE and not config.train_skip:
        # The skip stays the least-squares solution: Adam's per-weight steps of ~lr would random-walk a
        # root-polynomial fit's large, cancelling coefficients (|w| ~ 200 on CAVE) off its optimum.
        model.linear.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam" and config.weight_decay > 0:
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(trainable, lr=config.lr)
    elif config.optimizer == "sgd":
        optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r} (adam or sgd)")
    camera = None
    if config.camera_loss > 0:
        if data.camera is None:
            raise SSRANEdgeError(f"--camera-loss compares spectra through the camera's SRF; protocol {data.name} "
                                 f"pairs real sensors ({data.srf}) and has none")
        camera = torch.from_numpy(data.camera.astype(np.float32)).to(config.device)
    loss_fn = make_loss(config.loss, camera, config.camera_loss)
    # DDP averages the ranks' gradients after each backward; checkpoints hold the bare module, so a run
    # resumes under any world size.
    stepped = (torch.nn.parallel.DistributedDataParallel(model) if world.distributed else model)
    # The moving average is what validation sees and what is saved as the best weights.
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(config.ema), use_buffers=True)
           if config.ema > 0 else None)
    evaluated = ema.module if ema is not None else model
    sim = sim_evaluated = calibration = None
    if config.qat:
        if world.distributed:
            raise SSRANEdgeError("--qat runs in one process (a short fine-tune): start it without torchrun")
        from ssran_edge.data.patches import QAT_CALIBRATION, calibration_tiles, training_capture
        from ssran_edge.train.qat import ExportQuantSim

        noise, photo = training_capture(config.to_dict())
        calibration = calibration_tiles(data.train, data.in_bands, QAT_CALIBRATION.samples, QAT_CALIBRATION.tile,
                                        noise=noise, photo=photo)
        sim = ExportQuantSim(model)  # rounds what is trained
        sim_evaluated = sim if evaluated is model else ExportQuantSim(evaluated)  # rounds what is saved

    start_epoch, best_val, history = 0, -math.inf, []
    if resumed:
        state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, best_val, history = int(state["epoch"]), float(state["best_val"]), list(state["history"])
        log.info("resumed %s at epoch %d (best validation PSNR %.2f dB)", state_file, start_epoch, best_val)

    origins = patch_origins(data.train, config.patch_size)
    per_epoch = min(config.patches_per_epoch or len(origins), len(origins))
    log.info("%s: %d -> %d bands, %d parameters, %d patches of %dx%d (%d per epoch)", config.protocol,
             data.in_bands, data.out_bands, count_parameters(model), len(origins), config.patch_size,
             config.patch_size, per_epoch)
    if world.distributed:
        base, extra = divmod(config.batch_size, world.size)
        log.info("%s: %d ranks; global batch %d = %s patches per rank and step, lr as in one process",
                 config.protocol, world.size, config.batch_size, f"{base}-{base + 1}" if extra else base)
    card = model_card(config, data)
    best_path = out / "model.safetensors"
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)  # only now: a bad --init or data set leaves no empty run folder
        remove_partial_files(out)
    bar = tqdm(range(start_epoch, config.epochs), initial=start_epoch, total=config.epochs, desc=config.protocol,
               unit="epoch", dynamic_ncols=True, disable=not world.is_main)
    for epoch in bar:
        # The epoch's randomness comes from (seed, epoch), so a resumed run replays the same epoch.
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100_003 + epoch)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(config, epoch)
        chosen = origins[rng.permutation(len(origins))[:per_epoch]]
        if sim is not None:  # this epoch trains through the rounding of the weights as they are now
            sim.calibrate(calibration)
            sim.enable()
        model.train()
        started, total_loss, skip_loss, seen = time.perf_counter(), 0.0, 0.0, 0
        for i in range(0, per_epoch, config.batch_size):
            # Every rank draws the whole global batch (same rng stream, so the same flips, exposures and
            # noise as one process) and trains its own rows of it: the equivalent of DistributedSampler
            # with set_epoch, exact for any world size.
            msi, hsi = gather_patches(data.train, chosen[i: i + config.batch_size], config.patch_size,
                                      rng if config.augment else None)
            msi, hsi = mix(msi, hsi, rng, config.mixup)
            msi, hsi = relight(msi, hsi, rng, config.illuminant, data.camera)
            msi, hsi = photometric(msi, hsi, rng, config.exposure, config.noise_read, config.noise_shot,
                                   config.noise_clean_share)
            msi = photo_chain(msi, rng, config.encode, config.jpeg_quality, config.jpeg_share)
            batch, mine = len(msi), world.share(len(msi))
            if batch < world.size:  # an epoch's last, partial batch smaller than the world: dropped by
                continue  # every rank alike (all see the same batch), so no rank waits at a collective alone
            msi, hsi = (torch.from_numpy(msi[mine]).to(config.device),
                        torch.from_numpy(hsi[mine]).to(config.device))
            loss = loss_fn(stepped(msi), hsi)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; weighting each rank's mean by its share of the batch
            # makes that average the gradient of the whole batch's mean, as in one process.
            collective((loss * (len(msi) * world.size / batch)).backward, world=world)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            total_loss += loss.item() * len(msi)
            seen += len(msi)
            if hasattr(model, "skip"):  # the skip alone on the same patches: is SSRAN adding anything?
                with torch.no_grad():
                    skip_loss += loss_fn(model.skip(msi), hsi).item() * len(msi)
        total_loss, skip_loss, seen = sum_over_ranks([total_loss, skip_loss, seen], world)
        if sim is not None:
            sim.disable()  # validation and the saved weights are float; the export rounds them again
        seconds = time.perf_counter() - started
        if not math.isfinite(total_loss):
            raise SSRANEdgeError(f"training diverged at epoch {epoch + 1} (loss {total_loss}); lower --lr "
                                 f"and --resume, or start again")
        if not world.is_main:
            continue  # the other ranks go on to the next epoch; its first backward waits for rank 0
        scores = validation_scores(evaluated, data.val, config)
        val = scores["val_psnr"]
        chosen_by = scores.get("val_score", val)
        if sim is not None:  # what the INT8 export of these weights will score: the epoch is chosen on it
            chosen_by = val_int8 = quantized_psnr(sim_evaluated, calibration, evaluated, data.val, config)
        val_seconds = time.perf_counter() - started - seconds
        history.append({"epoch": epoch + 1, "loss": total_loss / seen, **scores,
                        **({"val_psnr_int8": val_int8} if sim is not None else {}),
                        **({"skip_loss": skip_loss / seen} if hasattr(model, "skip") else {}),
                        "lr": optimizer.param_groups[0]["lr"], "seconds": seconds, "val_seconds": val_seconds,
                        **({"ranks": world.size} if world.distributed else {})})
        if chosen_by > best_val or config.fold_validation:  # folded: validation is seen data; keep the last
            best_val = max(chosen_by, best_val)
            record = {**card.record, "selection": selection_rule(config),
                      **{k: v for k, v in scores.items() if k != "val_psnr"},
                      **({"val_psnr_int8": val_int8} if sim is not None else {})}
            save_model(evaluated, best_path, card.replace(best_epoch=epoch + 1, val_psnr=val, record=record))
        save_training_state(state_file, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         **({"ema": ema.state_dict()} if ema is not None else {}),
                                         "epoch": epoch + 1, "best_val": best_val, "history": history,
                                         "config": config.to_dict()})
        write_json(out / "history.json", history)
        bar.set_postfix(loss=f"{total_loss / seen:.2e}", val_psnr=f"{val:.2f}", best=f"{best_val:.2f}",
                        s_per_epoch=f"{seconds:.1f}")
    bar.close()
    return best_path
