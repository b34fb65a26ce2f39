"""The end-of-training report: SSRAN (patch and tile inference) and the linear least-squares floor on
the protocol's test split, as JSON and Markdown. The model card gets the test metrics too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssran_edge.baseline import LinearBaseline
from ssran_edge.checkpoint import atomic_path, load_model, save_model, write_json
from ssran_edge.data.protocols import ProtocolData
from ssran_edge.metrics import quality_assessment
from ssran_edge.tiling import predict

COLUMNS = ("psnr", "sam", "ergas", "rmse", "uiqi", "ssim", "cc", "dd")


def _mean_metrics(pairs, estimates) -> dict[str, float]:
    per_region = [quality_assessment(p.hsi, e) for p, e in zip(pairs, estimates, strict=True)]
    return {k: float(np.mean([m[k] for m in per_region])) for k in per_region[0]}


def evaluate(weights: str | Path, data: ProtocolData, device: str = "cpu") -> dict:
    """Metrics on the test split (mean over test regions) for both inference modes and the floor."""
    model, card = load_model(weights, device)
    tile = card["inference"]["tile"]
    floor = LinearBaseline.fit([p.msi for p in data.train], [p.hsi for p in data.train])
    def run(mode, tile_size=tile):
        return [predict(model, p.msi, mode, tile=tile_size, patch=4, device=device) for p in data.test]

    whole = max(max(p.msi.shape[:2]) for p in data.test)  # one tile per test region: ECA over the whole frame
    results = {
        "ssran_tile": _mean_metrics(data.test, run("tile")),
        "ssran_whole": _mean_metrics(data.test, run("tile", whole)),
        "ssran_patch4": _mean_metrics(data.test, run("patch")),
        "linear": _mean_metrics(data.test, [floor.predict(p.msi) for p in data.test]),
    }
    return {"protocol": data.name, "arch": card["arch"], "recipe": card["training"]["recipe"],
            "test_regions": [p.name for p in data.test], "tile": tile, "best_epoch": card.get("best_epoch"),
            "val_psnr": card.get("val_psnr"), "metrics": results}


def markdown_rows(report: dict) -> list[str]:
    rows = []
    for method, m in report["metrics"].items():
        rows.append(f"| {report['protocol']} | {report['arch']} ({report['recipe']}) | {method} | "
                    + " | ".join(f"{m[c]:.4f}" if c in ("uiqi", "ssim", "cc", "rmse", "dd") else f"{m[c]:.2f}"
                                 for c in COLUMNS) + " |")
    return rows


MD_HEADER = ["| protocol | model | inference | " + " | ".join(c.upper() for c in COLUMNS) + " |",
             "|" + "---|" * (3 + len(COLUMNS))]


def write_report(weights: str | Path, data: ProtocolData, device: str = "cpu") -> dict:
    """Evaluate, write report.json / report.md beside the weights, and record test metrics in the card."""
    weights = Path(weights)
    report = evaluate(weights, data, device)
    out = weights.parent
    write_json(out / "report.json", report)
    metrics, lin = report["metrics"], report["metrics"]["linear"]
    verdict = "SSRAN vs linear: " + "; ".join(
        f"{mode.removeprefix('ssran_')} {metrics[mode]['psnr'] - lin['psnr']:+.2f} dB PSNR, "
        f"{metrics[mode]['sam'] - lin['sam']:+.2f} deg SAM" for mode in ("ssran_tile", "ssran_whole", "ssran_patch4"))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join([f"# Test split: {report['protocol']} ({', '.join(report['test_regions'])})", "",
                                  *MD_HEADER, *markdown_rows(report), "", verdict, ""]))
    model, card = load_model(weights)
    card["test_metrics"] = report["metrics"]
    save_model(model, weights, card)
    report["verdict"] = verdict
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
