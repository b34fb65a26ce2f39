"""`python -m train` (also `ssran-edge train`): train SSRAN on a named protocol, then report on its
test split. With no arguments: the default protocol (cave) with the paper's hyper-parameters.
Data-parallel on N processes: `torchrun --nproc-per-node N -m train ...` (--batch-size is global)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from ssran_edge.arguments import MIN_TILE, OneLineParser, non_negative_int, positive_int, tile_pixels
from ssran_edge.card import ARCHITECTURE_NAMES
from ssran_edge.console import configure_logging
from ssran_edge.errors import MissingExtra, SSRANEdgeError
from ssran_edge.extras import require
from ssran_edge.train.config import RECIPES, TrainConfig, make_config


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = OneLineParser(prog="python -m train", description=__doc__,
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--protocol", default=defaults.protocol, choices=["paris", "pavia", "cave", "cave7", "files"],
                   help="a named protocol, or files: your own cubes (--train-files, --test-files, --srf)")
    p.add_argument("--train-files", nargs="+", help="hyperspectral cubes to train on (protocol files)")
    p.add_argument("--test-files", nargs="+", help="hyperspectral cubes to test on (protocol files)")
    p.add_argument("--srf", help="the camera's SRF: bundled name or .mat/.csv file (protocol files)")
    p.add_argument("--variable", help="variable name inside .mat/.npz cubes (protocol files)")
    p.add_argument("--recipe", default="paper", choices=sorted(RECIPES),
                   help="paper: the authors' settings; edge: the recipe of the shipped weights")
    p.add_argument("--arch", choices=ARCHITECTURE_NAMES,
                   help="faithful SSRAN, or SSRAN + a least-squares linear / root-polynomial (order 3 or 4) skip")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=["step", "cosine"])
    p.add_argument("--lr-step", type=positive_int, help="epochs between lr drops (step schedule)")
    p.add_argument("--lr-gamma", type=float)
    p.add_argument("--optimizer", choices=["adam", "sgd"])
    p.add_argument("--weight-decay", type=float, help="decoupled weight decay (AdamW) when > 0")
    p.add_argument("--loss", choices=["l2", "l1", "mrae"])
    p.add_argument("--patch-size", type=positive_int)
    p.add_argument("--patches-per-epoch", type=non_negative_int, help="0 = every stride-1 patch")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="flips and rotations")
    p.add_argument("--exposure", type=float, nargs=2, metavar=("LO", "HI"),
                   help="scale MSI and HSI together by a log-uniform factor in [LO, HI]")
    p.add_argument("--noise-read", type=float, help="max read-noise sigma added to the MSI (a random level per patch)")
    p.add_argument("--noise-shot", type=float, help="max shot-noise gain (variance = gain * signal)")
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
    p.add_argument("--tile", type=tile_pixels, help=f"validation tile size (>= {MIN_TILE})")
    p.add_argument("--width", type=positive_int)
    p.add_argument("--num-blocks", type=positive_int)
    p.add_argument("--eca-kernel", type=positive_int)
    p.add_argument("--init", help="start from these weights (e.g. a paper-recipe model, to fine-tune on tiles)")
    p.add_argument("--qat", action="store_true", default=None,
                   help="quantization-aware fine-tuning of the --init weights for `export --int8` (e.g. "
                        "--epochs 8 --lr 1e-4): trains through the export's INT8 rounding and chooses the "
                        "epoch on validation through it")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=non_negative_int, help="torch CPU threads (0 = default)")
    p.add_argument("--output", help="run folder (default runs/<protocol>-<recipe>-<arch>)")
    p.add_argument("--data-root", help="folder holding the data sets (default $SSRAN_DATA or ../shared/data)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/checkpoint.pt")
    p.add_argument("-v", "--verbose", action="store_true", help="also the libraries' warnings and notes")
    p.add_argument("--no-report", action="store_true", help="skip the test-split report")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        print(f"python -m train: error: {exc}; the last checkpoint in {out} stands: rerun with --resume "
              f"(any number of ranks)", file=sys.stderr)
        return 2
    except (SSRANEdgeError, ValueError) as exc:
        print(f"python -m train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m train: interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
