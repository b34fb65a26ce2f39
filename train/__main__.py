"""`python -m train` (also `ssran-edge train`): train SSRAN on a named protocol, then report on its
test split. With no arguments: the default protocol (cave) with the paper's hyper-parameters.
Data-parallel on N processes: `torchrun --nproc-per-node N -m train ...` (--batch-size is global)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from ssran_edge.arguments import (
    MIN_TILE,
    OneLineParser,
    noise_level,
    non_negative_int,
    positive_int,
    prog_for,
    protocol_choices,
    share,
    tile_pixels,
)
from ssran_edge.card import ARCHITECTURE_NAMES
from ssran_edge.console import configure_logging
from ssran_edge.errors import MissingExtra, SSRANEdgeError, one_line
from ssran_edge.extras import require
from ssran_edge.train.config import RECIPES, TrainConfig, make_config


class _DefaultsHelp(argparse.RawDescriptionHelpFormatter):
    """Each option's default in its help: the flag's own, or else what the recipes set it to (on the default
    protocol) or the TrainConfig field's; none for a setting left empty."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        default = action.default if action.default not in (None, False) else _config_default(action.dest)
        if default in (None, "", []):
            return text
        return f"{text} (default {default})" if str(default).startswith("on ") else f"{text} (default: {default})"


def _config_default(dest: str) -> str | None:
    """A setting's value under each recipe on the default protocol, from make_config itself:
    '200' where the recipes agree, 'on cave: paper 200, edge 100' where they differ."""
    if dest not in TrainConfig.field_names():
        return None
    protocol = TrainConfig().protocol
    values = {recipe: getattr(make_config(protocol, recipe), dest) for recipe in RECIPES}
    shown = {recipe: " ".join(map(str, v)) if isinstance(v, list) else str(v) for recipe, v in values.items()
             if v not in ("", [])}
    if not shown:
        return None
    if len(set(shown.values())) == 1 and len(shown) == len(values):
        return next(iter(shown.values()))
    return f"on {protocol}: " + ", ".join(f"{recipe} {value}" for recipe, value in shown.items())


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = OneLineParser(prog=prog_for("python -m train"), description=__doc__, formatter_class=_DefaultsHelp)
    p.add_argument("--protocol", default=defaults.protocol, choices=protocol_choices("files"),
                   help="a named protocol, or files: your own cubes (--train-files, --test-files, --srf)")
    p.add_argument("--train-files", nargs="+", help="hyperspectral cubes to train on (protocol files)")
    p.add_argument("--test-files", nargs="+", help="hyperspectral cubes to test on (protocol files)")
    p.add_argument("--srf", help="the camera's SRF: bundled name or .mat/.csv file (protocol files)")
    p.add_argument("--variable", help="variable name inside .mat/.npz cubes (protocol files)")
    p.add_argument("--recipe", default="paper", choices=sorted(RECIPES),
                   help="paper: the authors' settings; edge: the recipe of the shipped weights")
    p.add_argument("--arch", choices=ARCHITECTURE_NAMES,
                   help="faithful SSRAN, or SSRAN + a least-squares linear / root-polynomial (order 3 or 4) skip")
    p.add_argument("--epochs", type=positive_int, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, help="patches per step (global, over all ranks)")
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--schedule", choices=["step", "cosine"],
                   help="step: lr x --lr-gamma every --lr-step epochs; cosine: down to 0 over the epochs")
    p.add_argument("--lr-step", type=positive_int, help="epochs between lr drops (step schedule)")
    p.add_argument("--lr-gamma", type=float, help="lr factor at each drop (step schedule)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="optimizer (the paper does not publish its own)")
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (AdamW) when > 0")
    p.add_argument("--loss", choices=["l2", "l1", "mrae"],
                   help="l2 (the paper), l1, or mrae (relative error, guarded near zero)")
    p.add_argument("--camera-loss", type=float,
                   help="plus this weight x the loss on the spectra seen through the camera (the colour error; "
                        "e.g. 1; simulated protocols only)")
    p.add_argument("--patch-size", type=positive_int, help="side of the square training patches, px")
    p.add_argument("--patches-per-epoch", type=non_negative_int, help="0 = every stride-1 patch")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="flips and rotations")
    p.add_argument("--exposure", type=float, nargs=2, metavar=("LO", "HI"),
                   help="scale MSI and HSI together by a log-uniform factor in [LO, HI]")
    p.add_argument("--noise-read", type=noise_level,
                   help="max read-noise sigma added to the MSI (a random level per patch)")
    p.add_argument("--noise-shot", type=noise_level, help="max shot-noise gain (variance = gain * signal)")
    p.add_argument("--noise-clean-share", type=share,
                   help="share of the training patches left without noise (e.g. 0.5)")
    p.add_argument("--encode", choices=["srgb"],
                   help="the capture chain of a photo in the loop: clip, 8-bit sRGB, JPEG or PNG, decode")
    p.add_argument("--jpeg-quality", type=positive_int, nargs=2, metavar=("LO", "HI"),
                   help="with --encode: JPEG quality drawn uniformly from [LO, HI] (4:2:0 chroma)")
    p.add_argument("--jpeg-share", type=share, help="with --encode: share of the patches written as JPEG (the "
                                                     "rest as PNG)")
    p.add_argument("--illuminant", type=float,
                   help="spectral augmentation strength: spectra times a random smooth curve, the MSI "
                        "re-simulated (e.g. 0.3; simulated protocols only)")
    p.add_argument("--mixup", type=float, help="share of patches blended with another patch (MSI and HSI alike)")
    p.add_argument("--ema", type=float, help="decay of a moving average of the weights (e.g. 0.999; 0 = off)")
    p.add_argument("--train-skip", action=argparse.BooleanOptionalAction, default=None,
                   help="skip variants: train the skip's weights, or keep the least-squares fit")
    p.add_argument("--train-resolution", choices=["native", "binned"],
                   help="cave: train on both scales (native) or bin the 512x512 scenes to 256 (binned)")
    p.add_argument("--fold-validation", action=argparse.BooleanOptionalAction, default=None,
                   help="once the recipe is chosen: train on the validation scenes too and keep the last epoch")
    p.add_argument("--select-mode", choices=["tile", "patch"], help="inference mode for best-on-validation")
    p.add_argument("--select-noise", type=noise_level,
                   help="also score validation with read noise of this sigma (e.g. 0.01) and choose the epoch on "
                        "the mean of the clean and the noisy PSNR (0 = clean only)")
    p.add_argument("--select-conditions", nargs="+", metavar="CONDITION",
                   help="choose the epoch on the mean validation PSNR under these capture conditions (e.g. "
                        "'sRGB JPEG q90'); overrides --select-noise")
    p.add_argument("--skip-condition", metavar="CONDITION",
                   help="skip variants: fit the least-squares skip on training pixels under this capture condition")
    p.add_argument("--skip-noise", type=noise_level,
                   help="skip variants: fit the least-squares skip on training pixels with read noise of this "
                        "sigma (a fit on clean pixels amplifies noise)")
    p.add_argument("--skip-ridge", type=float,
                   help="ridge of the skip's least-squares fit, relative to the Gram matrix's mean diagonal")
    p.add_argument("--refit-skip", action="store_true", default=None,
                   help="with --init of the same arch: fit the skip afresh (--skip-noise, --skip-ridge) and "
                        "keep only the SSRAN body")
    p.add_argument("--tile", type=tile_pixels, help=f"validation tile size (>= {MIN_TILE})")
    p.add_argument("--width", type=positive_int, help="feature channels of the network")
    p.add_argument("--num-blocks", type=positive_int, help="residual attention blocks")
    p.add_argument("--eca-kernel", type=positive_int, help="kernel size of the ECA channel attention's 1-D conv")
    p.add_argument("--init", help="start from these weights (e.g. a paper-recipe model, to fine-tune on tiles)")
    p.add_argument("--qat", action="store_true", default=None,
                   help="quantization-aware fine-tuning of the --init weights for `export --int8` (e.g. "
                        "--epochs 8 --lr 1e-4): trains through the export's INT8 rounding and chooses the "
                        "epoch on validation through it")
    p.add_argument("--seed", type=int, help="random seed (initialisation, patch sampling, augmentation)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=non_negative_int, help="torch CPU threads (0 = default)")
    p.add_argument("--output", help="run folder (default runs/<protocol>-<recipe>-<arch>)")
    p.add_argument("--data-root", help="folder holding the data sets (default $SSRAN_DATA or ../shared/data)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    p.add_argument("-v", "--verbose", action="store_true", help="also the libraries' warnings and notes")
    p.add_argument("--no-report", action="store_true", help="skip the test-split report")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    prog = parser.prog  # python -m train, or ssran-edge train when reached through it
    args = parser.parse_args(argv)
    try:
        require("train", "python -m train")
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(args.verbose)
    from ssran_edge.errors import RankLost
    from ssran_edge.train.distributed import join, leave, rank_device, world_from_environment

    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("protocol", "recipe", "resume", "no_report", "verbose") and v is not None}
    try:
        import torch

        from ssran_edge.data.protocols import load_protocol
        from ssran_edge.train.loop import default_output, train
        from ssran_edge.train.report import write_report

        world = world_from_environment()
        if not world.is_main:  # the other ranks stay quiet: errors only
            logging.getLogger("ssran_edge").setLevel(logging.ERROR)
        config = make_config(args.protocol, args.recipe, **overrides)
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise SSRANEdgeError(f"--device {config.device}: CUDA is not available on this machine")
        device = rank_device(config.device, world)
        out = Path(config.output or default_output(config))
        if args.resume:  # say so before spending time loading data
            from ssran_edge.checkpoint import load_training_state

            load_training_state(out / "checkpoint.pt")
        data = load_protocol(config.protocol, config.data_root or None, **config.data_kwargs())
        join(world, device)
        best = train(replace(config, device=device), resume=args.resume, data=data, world=world)
        leave()
        if not world.is_main:
            return 0
        print(f"weights: {best} (card: {best.with_suffix('.json')})")
        if not args.no_report:
            report = write_report(best, data, device)
            print(f"report: {best.parent / 'report.md'}\n{report['verdict']}")
    except RankLost as exc:  # one line per surviving rank; torchrun then prints its own summary
        print(f"{prog}: error: {one_line(exc)}; the last checkpoint in {out} stands: rerun with --resume "
              f"(any number of ranks)", file=sys.stderr)
        return 2
    except (SSRANEdgeError, ValueError) as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
