"""Recipe screens: short runs that each change one lever of a base recipe, compared on the
validation split only (the test split is never read). The figures in docs/fidelity.md come from here.

  python -m train.screen                                    # every lever, cave, 10 epochs x 400 patches
  python -m train.screen --levers base l2 no-flips --jobs 2 --epochs 10 --patches-per-epoch 400
  python -m train.screen --from-shipped --levers base clean-skip linear-skip faithful trained-skip \
      --epochs 12 --patches-per-epoch 800 --lr 3e-4 --jobs 2 --output runs/skip-study

Each lever's run lives in <output>/<lever>/ and is skipped when its history is complete, so an
interrupted screen resumes where it stopped. An epoch is chosen as training chooses it (with the cave
recipe: the mean of the clean and the read-noise sigma 1 % validation PSNR); the table gives that
score, the clean and the noisy PSNR of the chosen epoch, and the baselines (linear, rootpoly3) fitted
on the training pixels under the same condition, for scale. `--from-shipped` starts every lever from
the bundled weights of its architecture (`cave_ssran` for the faithful SSRAN, the body of `cave` for
the skip variants, their skip fitted afresh) instead of from scratch.
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
    "no-noise": dict(noise_read=0.0, noise_shot=0.0),
    "clean-selection": dict(select_noise=0.0),
    "clean-skip": dict(skip_noise=0.0),
    "half-clean": dict(noise_clean_share=0.5),
    "read-1%": dict(noise_read=0.01),
    "lr-1e-3": dict(lr=1e-3),
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
SHIPPED_START = {"ssran": "cave_ssran"}  # --from-shipped: the bundled weights each arch starts from; else cave


def shipped_start(arch: str) -> dict:
    from ssran_edge.assets import model_path

    return dict(init=str(model_path(SHIPPED_START.get(arch, "cave"))), refit_skip=True)


def run_lever(name: str, protocol: str, epochs: int, patches: int, output: str, seed: int,
              from_shipped: bool = False, lr: float | None = None) -> dict:
    import torch

    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.train.config import make_config
    from ssran_edge.train.loop import train

    torch.set_num_threads(1)  # one core per screen: --jobs screens side by side
    folder = Path(output) / name
    history_file = folder / "history.json"
    overrides = {**BASE, **LEVERS[name], **({"lr": lr} if lr else {})}
    if from_shipped:
        overrides.update(shipped_start(overrides["arch"]))
    if not (history_file.is_file() and len(json.loads(history_file.read_text())) >= epochs):
        config = make_config(protocol, "edge", epochs=epochs, patches_per_epoch=patches, output=str(folder),
                             seed=seed, threads=1, **overrides)
        data = load_protocol(protocol, None, train_resolution=config.train_resolution)
        train(config, resume=(folder / "checkpoint.pt").is_file(), data=data)
    history = json.loads(history_file.read_text())
    score = lambda e: e.get("val_score", e["val_psnr"])  # noqa: E731 -- what training chose the epoch on
    best = max(history, key=score)
    shown = {k: v for k, v in (overrides if name == "base" else LEVERS[name]).items() if k != "init"}
    return {"lever": name, "change": shown, "best": score(best), "best_epoch": best["epoch"],
            "clean": best["val_psnr"], "noisy": best.get("val_psnr_noisy"), "last": score(history[-1]),
            "seconds_per_epoch": sum(e["seconds"] for e in history) / len(history)}


def baselines(protocol: str) -> dict[str, dict[str, float]]:
    """Validation PSNR of linear and rootpoly3, each fitted on training pixels under the condition it
    is scored in: clean, and the read noise epochs are chosen with."""
    import numpy as np

    from ssran_edge.baseline import fit_baseline
    from ssran_edge.conditions import CONDITIONS, NOISY_SELECTION, capture
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.metrics import psnr

    data = load_protocol(protocol, None)
    out: dict[str, dict[str, float]] = {}
    for condition in (CONDITIONS["clean"], NOISY_SELECTION):
        train_msi = [capture(p.msi, condition, p.name) for p in data.train]
        for kind in ("linear", "rootpoly3"):
            fitted = fit_baseline(kind, train_msi, [p.hsi for p in data.train])
            out.setdefault(kind, {})[condition.name] = float(np.mean(
                [psnr(p.hsi, fitted.predict(capture(p.msi, condition, p.name))) for p in data.val]))
    return out


def table(rows: list[dict], floors: dict[str, dict[str, float]]) -> str:
    from ssran_edge.conditions import NOISY_SELECTION

    noisy = NOISY_SELECTION.name
    base = next((r["best"] for r in rows if r["lever"] == "base"), None)
    lines = [f"| lever | change | score (epoch) | clean | {noisy} | last score | Δ score vs base | "
             f"Δ clean vs rootpoly3 | Δ {noisy} vs rootpoly3 on noisy pixels | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['best'] - base:+.2f}" if base is not None else ""
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "—"
        noisy_cells = (f"{r['noisy']:.2f}", f"{r['noisy'] - floors['rootpoly3'][noisy]:+.2f}") \
            if r["noisy"] is not None else ("—", "—")
        lines.append(f"| {r['lever']} | {change} | {r['best']:.2f} ({r['best_epoch']}) | {r['clean']:.2f} | "
                     f"{noisy_cells[0]} | {r['last']:.2f} | {delta} | {r['clean'] - floors['rootpoly3']['clean']:+.2f} "
                     f"| {noisy_cells[1]} | {r['seconds_per_epoch']:.0f} |")
    lines.append("\nScore: what training chose the epoch on (with select_noise, the mean of clean and noisy).")
    lines.append("Validation baselines, each fitted on training pixels under the condition: "
                 + "; ".join(f"{kind} {v['clean']:.2f} dB clean, {v[noisy]:.2f} dB at {noisy}"
                             for kind, v in floors.items()) + ".")
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
    p.add_argument("--from-shipped", action="store_true",
                   help="fine-tune: every lever starts from the bundled weights of its architecture (cave)")
    p.add_argument("--lr", type=float, help="learning rate of every lever (default: the recipe's)")
    p.add_argument("--output", default="runs/screen",
                   help="folder for <lever>/ runs and screen.md; a lever whose history is complete is "
                        "skipped (default %(default)s)")
    args = p.parse_args(argv)
    if args.from_shipped and args.protocol != "cave":
        p.error("--from-shipped starts from the bundled cave weights: use it with --protocol cave")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_lever, name, args.protocol, args.epochs, args.patches_per_epoch, args.output,
                               args.seed, args.from_shipped, args.lr) for name in args.levers]
        rows = [f.result() for f in futures]
    text = table(rows, baselines(args.protocol))
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "screen.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
