"""The end-of-training report: SSRAN (tile, whole-frame and 4x4-patch inference) beside the simple
baselines fitted on the same training pixels (linear, root-polynomial 2, 3 and 4), on the protocol's
test split -- mean and per test scene -- plus exposure (x0.5, x2) and MSI-noise robustness. Written as
JSON and Markdown; the model card gets the test metrics too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssran_edge.atomic import atomic_path, write_json
from ssran_edge.baseline import fit_baseline
from ssran_edge.checkpoint import load_model, save_model
from ssran_edge.data.protocols import ProtocolData
from ssran_edge.metrics import psnr, quality_assessment, sam
from ssran_edge.tiling import predict

COLUMNS = ("psnr", "sam", "ergas", "rmse", "uiqi", "ssim", "cc", "dd")
BASELINES = ("linear", "rootpoly2", "rootpoly3", "rootpoly4")  # the strongest is quoted in the verdict
EXPOSURES = (0.5, 2.0)
NOISE_SIGMAS = (0.005, 0.01)


def _mean(per_scene: dict[str, dict[str, float]]) -> dict[str, float]:
    rows = list(per_scene.values())
    return {k: float(np.mean([m[k] for m in rows])) for k in rows[0]}


def evaluate(weights: str | Path, data: ProtocolData, device: str = "cpu", robustness: bool = True) -> dict:
    """Metrics on the test split for the model's inference modes and the baselines: per test region
    and their mean. With `robustness`: the model (tile mode) and rootpoly3 with input and reference
    scaled by EXPOSURES, and with Gaussian noise of NOISE_SIGMAS added to the MSI (seed 0)."""
    model, card = load_model(weights, device)
    tile = card.inference.tile
    baselines = {kind: fit_baseline(kind, [p.msi for p in data.train], [p.hsi for p in data.train])
                 for kind in BASELINES}
    whole = max(max(p.msi.shape[:2]) for p in data.test)  # one tile per test region: ECA over the whole frame

    def ssran(mode, tile_size=tile):
        return lambda msi: predict(model, msi, mode, tile=tile_size, patch=4, device=device)

    methods = {"ssran_tile": ssran("tile"), "ssran_whole": ssran("tile", whole), "ssran_patch4": ssran("patch"),
               **{kind: b.predict for kind, b in baselines.items()}}
    per_scene = {name: {p.name: quality_assessment(p.hsi, fn(p.msi)) for p in data.test}
                 for name, fn in methods.items()}
    report = {"protocol": data.name, "arch": card.arch, "recipe": card.training.get("recipe"),
              "test_regions": [p.name for p in data.test], "tile": tile, "best_epoch": card.best_epoch,
              "val_psnr": card.val_psnr, "metrics": {m: _mean(s) for m, s in per_scene.items()},
              "per_scene": per_scene}
    if robustness:
        report["robustness"] = _robustness({"ssran_tile": methods["ssran_tile"], "rootpoly3": methods["rootpoly3"]},
                                           data)
    return report


def _robustness(methods: dict, data: ProtocolData) -> dict:
    """Mean test PSNR/SAM under exposure changes (MSI and reference scaled together) and MSI noise."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, fn in methods.items():
        rows = {}
        for factor in EXPOSURES:
            rows[f"exposure x{factor:g}"] = _scores([(p.hsi * factor, fn(p.msi * factor)) for p in data.test])
        rng = np.random.default_rng(0)
        for sigma in NOISE_SIGMAS:
            noisy = [(p.msi + rng.normal(0, sigma, p.msi.shape)).astype(np.float32) for p in data.test]
            rows[f"noise sigma {sigma:g}"] = _scores([(p.hsi, fn(m)) for p, m in zip(data.test, noisy, strict=True)])
        out[name] = rows
    return out


def _scores(pairs) -> dict[str, float]:
    return {"psnr": float(np.mean([psnr(r, e) for r, e in pairs])),
            "sam": float(np.mean([sam(r, e) for r, e in pairs]))}


def _fmt(column: str, value: float) -> str:
    return f"{value:.4f}" if column in ("uiqi", "ssim", "cc", "rmse", "dd") else f"{value:.2f}"


def markdown_rows(report: dict) -> list[str]:
    return [f"| {report['protocol']} | {report['arch']} ({report['recipe']}) | {method} | "
            + " | ".join(_fmt(c, m[c]) for c in COLUMNS) + " |" for method, m in report["metrics"].items()]


MD_HEADER = ["| protocol | model | inference | " + " | ".join(c.upper() for c in COLUMNS) + " |",
             "|" + "---|" * (3 + len(COLUMNS))]


PER_SCENE_METHODS = ("linear", "rootpoly2", "rootpoly3", "rootpoly4", "ssran_tile")


def per_scene_table(report: dict, methods: tuple[str, ...] = PER_SCENE_METHODS) -> list[str]:
    """Test scenes as rows, PSNR / SAM of each method as columns, the mean last."""
    per_scene = report.get("per_scene")
    if not per_scene:
        return []
    methods = tuple(m for m in methods if m in per_scene)
    rows = ["| test scene | " + " | ".join(f"{m} PSNR | {m} SAM" for m in methods) + " |",
            "|---|" + "---|---|" * len(methods)]
    for scene in report["test_regions"]:
        rows.append(f"| {scene} | " + " | ".join(_pair(per_scene[m][scene]) for m in methods) + " |")
    rows.append("| **mean** | " + " | ".join(_pair(report["metrics"][m]) for m in methods) + " |")
    return rows


def _pair(m: dict[str, float]) -> str:
    return f"{m['psnr']:.2f} | {m['sam']:.2f}"


def robustness_table(report: dict) -> list[str]:
    robustness = report.get("robustness")
    if not robustness:
        return []
    rows = ["| condition | " + " | ".join(f"{m} PSNR | {m} SAM" for m in robustness) + " |",
            "|---|" + "---|---|" * len(robustness)]
    base = {m: report["metrics"][m] for m in robustness}
    rows.append("| as recorded | " + " | ".join(_pair(base[m]) for m in robustness) + " |")
    for condition in next(iter(robustness.values())):
        rows.append(f"| {condition} | " + " | ".join(_pair(robustness[m][condition]) for m in robustness) + " |")
    return rows


def verdict(report: dict) -> str:
    """One paragraph: the model (tile mode) against the linear floor and the strongest baseline."""
    metrics = report["metrics"]
    model = metrics["ssran_tile"]
    strongest = max(BASELINES, key=lambda k: metrics[k]["psnr"]) if all(k in metrics for k in BASELINES) else "linear"
    parts = [f"SSRAN (tile) {model['psnr']:.2f} dB PSNR, {model['sam']:.2f} deg SAM"]
    for kind in dict.fromkeys(("linear", strongest)):
        parts.append(f"vs {kind}: {model['psnr'] - metrics[kind]['psnr']:+.2f} dB, "
                     f"{model['sam'] - metrics[kind]['sam']:+.2f} deg")
    per_scene = report.get("per_scene", {})
    if per_scene and strongest in per_scene:
        beaten = sum(per_scene["ssran_tile"][s]["psnr"] > per_scene[strongest][s]["psnr"]
                     for s in report["test_regions"])
        parts.append(f"above {strongest} on {beaten} of {len(report['test_regions'])} test scenes")
    return "; ".join(parts)


def write_report(weights: str | Path, data: ProtocolData, device: str = "cpu") -> dict:
    """Evaluate, write report.json / report.md beside the weights, and record test metrics in the card."""
    weights = Path(weights)
    report = evaluate(weights, data, device)
    report["verdict"] = verdict(report)
    out = weights.parent
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join([f"# Test split: {report['protocol']} ({', '.join(report['test_regions'])})", "",
                                  f"Best epoch {report['best_epoch']}, validation PSNR {report['val_psnr']:.2f} dB.",
                                  "", "## Mean over the test regions", "", *MD_HEADER, *markdown_rows(report), "",
                                  "## Per test scene (model in tile mode; baselines fitted on the training pixels)",
                                  "", *per_scene_table(report), "",
                                  "## Exposure and noise (mean over the test regions)", "",
                                  *robustness_table(report), "", report["verdict"], ""]))
    model, card = load_model(weights)
    card.test_metrics = report["metrics"]
    card.record["test_per_scene"] = {m: {s: {"psnr": v["psnr"], "sam": v["sam"]} for s, v in scenes.items()}
                                     for m, scenes in report["per_scene"].items()}
    card.record["test_robustness"] = report.get("robustness", {})
    save_model(model, weights, card)
    return report


def combine(report_files: list[str | Path]) -> str:
    """One Markdown table from several report.json files (for the README)."""
    rows = [*MD_HEADER]
    for f in report_files:
        rows += markdown_rows(json.loads(Path(f).read_text()))
    return "\n".join(rows)


if __name__ == "__main__":  # python -m train.report runs/*/report.json
    import sys

    print(combine(sys.argv[1:]))
