"""Recipe screens: short runs that each change one lever of a base recipe, compared on the
validation split only (the test split is never read). The figures in docs/fidelity.md come from here.

  python -m train.screen                                    # every lever, cave, 10 epochs x 400 patches
  python -m train.screen --levers base l2 no-flips --jobs 2 --epochs 10 --patches-per-epoch 400

Each lever's run lives in <output>/<lever>/ and is skipped when its history is complete, so an
interrupted screen resumes where it stopped. The table gives the best and last validation PSNR, and
the baselines (linear, rootpoly3) fitted on the same training pixels for scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ssran_edge.arguments import OneLineParser, positive_int, protocol_choices

# One change each against the base (the edge recipe with a frozen root-polynomial skip).
LEVERS: dict[str, dict] = {
    "base": {},
    "no-flips": dict(augment=False),
    "no-exposure": dict(exposure=[]),
    "noise": dict(noise_read=0.01, noise_shot=0.001),
    "l2": dict(loss="l2"),
    "mrae": dict(loss="mrae"),
    "no-ema": dict(ema=0.0),
    "constant-lr": dict(schedule="step", lr_step=10_000),
    "lr-3e-4": dict(lr=3e-4),
    "patch-32": dict(patch_size=32, batch_size=32),
    "binned": dict(train_resolution="binned"),
    "linear-skip": dict(arch="ssran_linear_skip"),
    "trained-skip": dict(train_skip=True),
    "faithful": dict(arch="ssran"),
    "weight-decay": dict(weight_decay=1e-4),
    "mixup": dict(mixup=0.5),
    "illuminant": dict(illuminant=0.3),
}
BASE = dict(arch="ssran_rootpoly_skip")


def run_lever(name: str, protocol: str, epochs: int, patches: int, output: str, seed: int) -> dict:
    import torch

    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.train.config import make_config
    from ssran_edge.train.loop import train

    torch.set_num_threads(1)  # one core per screen: --jobs screens side by side
    folder = Path(output) / name
    history_file = folder / "history.json"
    overrides = {**BASE, **LEVERS[name]}
    if not (history_file.is_file() and len(json.loads(history_file.read_text())) >= epochs):
        config = make_config(protocol, "edge", epochs=epochs, patches_per_epoch=patches, output=str(folder),
                             seed=seed, threads=1, **overrides)
        data = load_protocol(protocol, None, train_resolution=config.train_resolution)
        train(config, resume=(folder / "checkpoint.pt").is_file(), data=data)
    history = json.loads(history_file.read_text())
    best = max(history, key=lambda e: e["val_psnr"])
    return {"lever": name, "change": overrides if name == "base" else LEVERS[name], "best": best["val_psnr"],
            "best_epoch": best["epoch"], "last": history[-1]["val_psnr"],
            "seconds_per_epoch": sum(e["seconds"] for e in history) / len(history)}


def baselines(protocol: str) -> dict[str, float]:
    import numpy as np

    from ssran_edge.baseline import fit_baseline
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.metrics import psnr

    data = load_protocol(protocol, None)
    out = {}
    for kind in ("linear", "rootpoly3"):
        fitted = fit_baseline(kind, [p.msi for p in data.train], [p.hsi for p in data.train])
        out[kind] = float(np.mean([psnr(p.hsi, fitted.predict(p.msi)) for p in data.val]))
    return out


def table(rows: list[dict], floors: dict[str, float]) -> str:
    base = next((r["best"] for r in rows if r["lever"] == "base"), None)
    lines = ["| lever | change | best val PSNR (epoch) | last | Δ best vs base | Δ best vs rootpoly3 | s/epoch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['best'] - base:+.2f}" if base is not None else ""
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "—"
        lines.append(f"| {r['lever']} | {change} | {r['best']:.2f} ({r['best_epoch']}) | {r['last']:.2f} | {delta} | "
                     f"{r['best'] - floors['rootpoly3']:+.2f} | {r['seconds_per_epoch']:.0f} |")
    lines.append(f"\nValidation baselines: linear {floors['linear']:.2f} dB, rootpoly3 {floors['rootpoly3']:.2f} dB.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m train.screen", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", default="cave", choices=protocol_choices(),
                   help="whose training data each lever trains on and whose validation split compares them "
                        "(default %(default)s)")
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS), metavar="LEVER",
                   help=f"the levers to screen, each one change against the base ({', '.join(LEVERS)}; "
                        "default: all)")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs per lever (default %(default)s)")
    p.add_argument("--patches-per-epoch", type=positive_int, default=400,
                   help="training patches per epoch (default %(default)s)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="screens side by side, one core each (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of every lever's run (default %(default)s)")
    p.add_argument("--output", default="runs/screen",
                   help="folder for <lever>/ runs and screen.md; a lever whose history is complete is "
                        "skipped (default %(default)s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_lever, name, args.protocol, args.epochs, args.patches_per_epoch, args.output,
                               args.seed) for name in args.levers]
        rows = [f.result() for f in futures]
    text = table(rows, baselines(args.protocol))
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "screen.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
