"""How the CAVE model does on sRGB renderings nobody here made: the 8-bit `<scene>_RGB.bmp` the CAVE
authors ship beside each of the 7 full-resolution scenes, scored against the scene's own 31-band cube.

    python -m ssran_edge.bench.renderings                      # cave/'s test scenes + its validation scene
    python -m ssran_edge.bench.renderings --scenes superballs --output renderings.md --json renderings.json

Rows per scene (protocol `cave`'s split: the training scenes' BMPs are only fitted on, never scored):
  * the model on the BMP, run through the real CLI (`ssran-edge predict x.bmp`, which decodes sRGB to
    linear), and on the same BMP undecoded (`--input-encoding linear`);
  * root-polynomial-3 fitted on the 4 training scenes' BMPs decoded the same way, on the BMP decoded and
    undecoded: the bar a per-pixel map sets when it is fitted on this rendering's own colours;
  * the model on the scene's MSI simulated through its own camera (`ssran-edge predict <scene folder> --srf`:
    D700 for `cave`, the sRGB camera for `srgb`), linear and unquantised: the gap to the BMP rows is what
    decoding, 8 bits and the camera mismatch cost.

Every prediction gets ONE least-squares gain g = <pred, ref> / <pred, pred> before PSNR: the rendering's
exposure and white scale are unknown, and a scale error would swamp the spectral one. SAM does not depend
on it. PSNR is the project's (`ssran_edge.metrics.psnr`: per band against the reference band's peak,
which is <= 1); "PSNR no gain" is the same without g. The D700 model (`cave`) on sRGB renderings measures
decoding and camera mismatch together; the sRGB-trained `srgb` separates them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ssran_edge.arguments import OneLineParser
from ssran_edge.atomic import atomic_path, check_writable, write_json
from ssran_edge.baseline import Baseline, fit_baseline
from ssran_edge.data.images import read_picture
from ssran_edge.data.protocols import CAVE_SPLIT, shared_data_dir
from ssran_edge.data.readers import read_cave_scene
from ssran_edge.encoding import resolve, to_linear
from ssran_edge.errors import DataError, SSRANEdgeError
from ssran_edge.metrics import psnr, sam

BASELINE = "rootpoly3"
DECODED, UNDECODED = "BMP decoded (sRGB)", "BMP undecoded (as linear)"


def simulated_label(srf: str) -> str:
    return f"simulated {srf} (linear)"


@dataclass
class Row:
    scene: str
    split: str  # test | val
    method: str  # "model <name>" | rootpoly3
    input: str  # DECODED | UNDECODED | simulated_label(srf)
    gain: float
    psnr: float  # after the gain
    sam: float  # degrees; gain-invariant
    psnr_no_gain: float


def scene_folder(root: Path, scene: str) -> Path:
    return root / "cave" / f"{scene}_ms"


def rendering(root: Path, scene: str) -> Path:
    bmp = scene_folder(root, scene) / f"{scene}_RGB.bmp"
    if not bmp.is_file():
        raise DataError(f"{bmp}: no sRGB rendering (only the scenes of cave/ ship one)")
    return bmp


def with_rendering(root: Path, split: str) -> list[str]:
    """The scenes of protocol cave's `split` that ship a BMP (those of cave/)."""
    return [s for s in CAVE_SPLIT[split] if (scene_folder(root, s) / f"{s}_RGB.bmp").is_file()]


def split_of(scene: str) -> str:
    split = next((k for k, scenes in CAVE_SPLIT.items() if scene in scenes), None)
    if split not in ("test", "val"):  # a training scene's numbers would measure fit, not generalisation
        raise DataError(f"--scenes {scene}: not a test or val scene of protocol cave ({split or 'unknown'})")
    return split


def decode(bmp: Path, encoding: str = "auto") -> np.ndarray:
    """The BMP's linear values, decoded as `predict` decodes it (`encoding` overrides the file's)."""
    picture = read_picture(bmp)
    return to_linear(picture.codes, resolve(encoding, picture.encoding), str(bmp))


@cache
def reference(root: Path, scene: str) -> np.ndarray:
    return read_cave_scene(scene_folder(root, scene)).data


def fit_on_renderings(root: Path) -> Baseline:
    """rootpoly3 from the training scenes' decoded BMPs to their cubes (the fit sees this rendering's colours)."""
    train = with_rendering(root, "train")
    return fit_baseline(BASELINE, [decode(rendering(root, s)) for s in train], [reference(root, s) for s in train])


def predict_cli(args: list[str], output: Path) -> np.ndarray:
    """`ssran-edge predict ARGS --output OUTPUT` in a subprocess (the console script's entry point)."""
    cmd = [sys.executable, "-m", "ssran_edge.cli", "predict", *args, "--output", str(output)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SSRANEdgeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return np.load(output)


def scored(scene: str, method: str, label: str, prediction: np.ndarray, ref: np.ndarray) -> Row:
    """One least-squares gain (the rendering's scale is unknown), then PSNR and SAM against the cube."""
    x, y = prediction.astype(np.float64), ref.astype(np.float64)
    gain = float((x * y).sum() / (x * x).sum())
    return Row(scene, split_of(scene), method, label, gain, psnr(y, gain * x), sam(y, gain * x), psnr(y, x))


def study(root: Path, scenes: list[str], model: str) -> list[Row]:
    srf = srf_of(model)
    for scene in scenes:
        split_of(scene)  # a training or unknown scene is refused now, not after the fit
    bmps = {scene: rendering(root, scene) for scene in scenes}
    baseline, rows = fit_on_renderings(root), []
    with tempfile.TemporaryDirectory(prefix="renderings-") as tmp:
        for scene, bmp in bmps.items():
            ref, out, method = reference(root, scene), Path(tmp) / f"{scene}.npy", f"model {model}"
            for label, encoding in ((DECODED, "auto"), (UNDECODED, "linear")):
                cli = predict_cli([str(bmp), "--model", model, "--input-encoding", encoding], out)
                rows.append(scored(scene, method, label, cli, ref))
                rows.append(scored(scene, BASELINE, label, baseline.predict(decode(bmp, encoding)), ref))
            simulated = predict_cli([str(scene_folder(root, scene)), "--model", model, "--srf", srf], out)
            rows.append(scored(scene, method, simulated_label(srf), simulated, ref))
    return rows


def srf_of(model: str) -> str:
    """The SRF the model was trained through (its card's). The study's split is protocol cave's (cave_srgb
    shares it), so a model trained on another protocol is refused: it may have seen the scenes scored here."""
    from ssran_edge.assets import model_path
    from ssran_edge.card import ModelCard

    card = ModelCard.read(model_path(model))
    if card.protocol not in ("cave", "cave_srgb") or not card.srf:
        raise DataError(f"{model}: trained on protocol {card.protocol!r}; this study scores protocol cave's scenes")
    return card.srf


def markdown(rows: list[Row], root: Path) -> str:
    lines = [f"# sRGB renderings of CAVE ({root / 'cave'}): {BASELINE} fitted on "
             f"{', '.join(with_rendering(root, 'train'))}", "",
             "| scene | split | method | input | gain | PSNR | SAM ° | PSNR no gain |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.scene} | {r.split} | {r.method} | {r.input} | {r.gain:.3f} | {r.psnr:.2f} | {r.sam:.2f} "
              f"| {r.psnr_no_gain:.2f} |" for r in sorted(rows, key=lambda r: r.split != "test")]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m ssran_edge.bench.renderings", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="the data sets' folder (default: $SSRAN_DATA or ../shared/data)")
    p.add_argument("--model", default="cave", help="a bundled model's name or weights with their card")
    p.add_argument("--scenes", help="comma-separated test/val scenes of cave/ (default: all of them with a BMP)")
    p.add_argument("--output", type=Path, help="write the markdown table here too")
    p.add_argument("--json", type=Path, help="write the rows as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for path, flag in ((args.output, "--output"), (args.json, "--json")):
            if path is not None:
                check_writable(path, flag)  # before minutes of work, not after
        root = args.data or shared_data_dir()
        scenes = args.scenes.split(",") if args.scenes else with_rendering(root, "test") + with_rendering(root, "val")
        rows = study(root, scenes, args.model)
    except SSRANEdgeError as exc:
        print(f"renderings: error: {exc}", file=sys.stderr)
        return 2
    table = markdown(rows, root)
    print(table, end="")
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(table)
    if args.json:
        write_json(args.json, {"data": str(root), "model": args.model, "rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
