"""The end-of-training report: SSRAN (tile, whole-frame and 4x4-patch inference) beside the simple
baselines fitted on the same training pixels (linear, root-polynomial 2, 3 and 4), on the protocol's
test split -- mean and per test scene -- then under each capture condition (sensor noise,
`ssran_edge.conditions`) with every baseline fitted on training pixels under that condition, and under
exposure x0.5 and x2. Written as JSON and Markdown; the model card gets the test metrics too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssran_edge.atomic import atomic_path, write_json
from ssran_edge.baseline import fit_baseline
from ssran_edge.checkpoint import load_model, save_model
from ssran_edge.conditions import NOISY_SELECTION, capture, condition_named, conditions_for
from ssran_edge.data.protocols import ProtocolData
from ssran_edge.metrics import psnr, quality_assessment, sam
from ssran_edge.tiling import predict

COLUMNS = ("psnr", "sam", "ergas", "rmse", "uiqi", "ssim", "cc", "dd")
BASELINES = ("linear", "rootpoly2", "rootpoly3", "rootpoly4")  # the strongest is quoted in the verdict
EXPOSURES = (0.5, 2.0)


def _mean(per_scene: dict[str, dict[str, float]]) -> dict[str, float]:
    rows = list(per_scene.values())
    return {k: float(np.mean([m[k] for m in rows])) for k in rows[0]}


def evaluate(weights: str | Path, data: ProtocolData, device: str = "cpu", robustness: bool = True) -> dict:
    """Metrics on the test split for the model's inference modes and the baselines: per test region
    and their mean. With `robustness`: the model (tile mode) and every baseline under each capture
    condition (baselines refitted under it), and the model and rootpoly3 with input and reference scaled
    by EXPOSURES."""
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
              "val_psnr": card.val_psnr, "selection": card.record.get("selection", "clean validation PSNR"),
              "val_psnr_noisy": card.record.get("val_psnr_noisy"), "val_conditions": card.record.get("val_conditions"),
              "metrics": {m: _mean(s) for m, s in per_scene.items()}, "per_scene": per_scene}
    if robustness:
        clean = {m: {s: {"psnr": v["psnr"], "sam": v["sam"]} for s, v in per_scene[m].items()}
                 for m in CONDITION_METHODS}
        report["conditions"] = under_conditions(methods["ssran_tile"], data, clean)
        if data.encoding == "linear":  # a photo's exposure is within its conditions' chain (clipped at 1)
            report["robustness"] = _exposures({"ssran_tile": methods["ssran_tile"],
                                               "rootpoly3": methods["rootpoly3"]}, data)
    return report


CONDITION_METHODS = ("ssran_tile", *BASELINES)


def under_conditions(model_fn, data: ProtocolData, clean: dict | None = None) -> dict:
    """{condition: {method: {scene: {psnr, sam}}}} on the test split: the model fed each scene as the
    sensor reads it under the condition, and each baseline fitted on training scenes under the same
    condition (the strongest simple method for it, not a clean fit fed noisy pixels)."""
    out = {}
    for name, condition in conditions_for(data.encoding).items():
        if condition.clean and clean is not None:
            out[name] = clean
            continue
        train_msi = [capture(p.msi, condition, p.name) for p in data.train]
        test_msi = {p.name: capture(p.msi, condition, p.name) for p in data.test}
        fns = {"ssran_tile": model_fn, **{kind: fit_baseline(kind, train_msi, [p.hsi for p in data.train]).predict
                                         for kind in BASELINES}}
        out[name] = {m: {p.name: _pair_scores(p.hsi, fn(test_msi[p.name])) for p in data.test}
                     for m, fn in fns.items()}
    return out


def _pair_scores(reference, estimate) -> dict[str, float]:
    return {"psnr": float(psnr(reference, estimate)), "sam": float(sam(reference, estimate))}


def _exposures(methods: dict, data: ProtocolData) -> dict:
    """Mean test PSNR/SAM with MSI and reference scaled together (the camera model is linear)."""
    return {name: {f"exposure x{factor:g}": _scores([(p.hsi * factor, fn(p.msi * factor)) for p in data.test])
                   for factor in EXPOSURES}
            for name, fn in methods.items()}


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
    rows = ["| exposure | " + " | ".join(f"{m} PSNR | {m} SAM" for m in robustness) + " |",
            "|---|" + "---|---|" * len(robustness)]
    base = {m: report["metrics"][m] for m in robustness}
    rows.append("| as recorded | " + " | ".join(_pair(base[m]) for m in robustness) + " |")
    for condition in next(iter(robustness.values())):
        rows.append(f"| {condition} | " + " | ".join(_pair(robustness[m][condition]) for m in robustness) + " |")
    return rows


def condition_means(report: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{condition: {method: mean {psnr, sam} over the test scenes}}."""
    return {c: {m: _mean(scenes) for m, scenes in methods.items()}
            for c, methods in report.get("conditions", {}).items()}


def conditions_table(report: dict) -> list[str]:
    """Conditions as rows: the model and each condition-fitted baseline (mean PSNR / SAM), the model's
    margin over the strongest baseline, and on how many test scenes it is above that baseline."""
    conditions = report.get("conditions")
    if not conditions:
        return []
    means = condition_means(report)
    rows = ["| condition | " + " | ".join(f"{m} PSNR | {m} SAM" for m in CONDITION_METHODS)
            + " | vs strongest baseline | scenes above it |",
            "|---|" + "---|---|" * len(CONDITION_METHODS) + "---|---|"]
    for c, methods in conditions.items():
        strongest = max(BASELINES, key=lambda k: means[c][k]["psnr"])
        above = sum(methods["ssran_tile"][s]["psnr"] > methods[strongest][s]["psnr"] for s in report["test_regions"])
        rows.append(f"| {c} | " + " | ".join(_pair(means[c][m]) for m in CONDITION_METHODS)
                    + f" | {means[c]['ssran_tile']['psnr'] - means[c][strongest]['psnr']:+.2f} dB ({strongest}) | "
                    f"{above} of {len(report['test_regions'])} |")
    return rows


def condition_scene_tables(report: dict) -> list[str]:
    """One per-scene table per noisy condition (the clean one is the per-scene table above)."""
    lines = []
    for c, methods in report.get("conditions", {}).items():
        if condition_named(c).clean:
            continue
        lines += [f"### {c} ({condition_named(c).describe()})", "",
                  *per_scene_table({"test_regions": report["test_regions"], "per_scene": methods,
                                    "metrics": {m: _mean(v) for m, v in methods.items()}},
                                   ("ssran_tile", *BASELINES)), ""]
    return lines


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
    for name in (NOISY_SELECTION.name, "sRGB JPEG q90"):  # the noisy condition of a linear camera; a photo's
        scenes = report.get("conditions", {}).get(name)
        if not scenes:
            continue
        means = condition_means(report)[name]
        best = max(BASELINES, key=lambda k: means[k]["psnr"])
        above = sum(scenes["ssran_tile"][s]["psnr"] > scenes[best][s]["psnr"] for s in report["test_regions"])
        parts.append(f"under {name} {means['ssran_tile']['psnr']:.2f} dB, "
                     f"{means['ssran_tile']['psnr'] - means[best]['psnr']:+.2f} dB vs {best} fitted on such pixels "
                     f"(above it on {above} of {len(report['test_regions'])})")
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
                                  _selection_line(report),
                                  "", "## Mean over the test regions", "", *MD_HEADER, *markdown_rows(report), "",
                                  "## Per test scene (model in tile mode; baselines fitted on the training pixels)",
                                  "", *per_scene_table(report), "",
                                  "## Capture conditions (mean over the test regions; baselines fitted on "
                                  "training pixels under the same condition)", "", *conditions_table(report), "",
                                  *condition_scene_tables(report),
                                  *(["## Exposure (mean over the test regions)", "", *robustness_table(report), ""]
                                    if report.get("robustness") else []),
                                  report["verdict"], ""]))
    model, card = load_model(weights)
    card.test_metrics = report["metrics"]
    card.record["test_per_scene"] = {m: {s: {"psnr": v["psnr"], "sam": v["sam"]} for s, v in scenes.items()}
                                     for m, scenes in report["per_scene"].items()}
    card.record["test_robustness"] = report.get("robustness", {})
    card.record["test_conditions"] = report.get("conditions", {})
    save_model(model, weights, card)
    return report


def _selection_line(report: dict) -> str:
    if report.get("val_conditions"):
        under = ", ".join(f"{v:.2f} dB {c}" for c, v in report["val_conditions"].items())
        return f"Best epoch {report['best_epoch']}, validation PSNR {under}; chosen on the {report['selection']}."
    line = f"Best epoch {report['best_epoch']}, validation PSNR {report['val_psnr']:.2f} dB clean"
    if report.get("val_psnr_noisy") is not None:
        line += f", {report['val_psnr_noisy']:.2f} dB noisy"
    return f"{line}; chosen on the {report['selection']}."


def combine(report_files: list[str | Path]) -> str:
    """One Markdown table from several report.json files (for the README)."""
    rows = [*MD_HEADER]
    for f in report_files:
        rows += markdown_rows(json.loads(Path(f).read_text()))
    return "\n".join(rows)


if __name__ == "__main__":  # python -m train.report runs/*/report.json
    import sys

    print(combine(sys.argv[1:]))
