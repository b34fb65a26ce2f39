"""`ssran-edge bench` (also `python -m benchmarks.report`): run the pytest-benchmark suite, then print
latency and accuracy side by side, check the speed targets, and compare with the last saved run.

    ssran-edge bench                         cave + pavia, 256/512/2048 px, every artefact (~6 min on 2 cores)
    ssran-edge bench --smoke                 cave, 256 px, fp32 + int8, SMOKE_ARTEFACTS (~2.5 min; what CI runs)
    ssran-edge bench --compare-only A B      compare two saved runs (pytest-benchmark JSON)

Every run is saved by pytest-benchmark (--benchmark-autosave) under --history; the report and its
JSON go to --out. A latency regression (> 10 %, in ms scaled by the GEMM ceiling measured in the same
run, so a busier machine does not read as a slower artefact) or a drift increase (> 0.01 dB) against the
previous saved run is flagged; with --fail-on-regression the exit code is then 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssran_edge.arguments import OneLineParser
from ssran_edge.atomic import atomic_path, write_json

TARGETS = {"int8_speedup": 10.0, "int8_drift_db": 0.1, "int8_ceiling_share": 0.85, "fp32_ceiling_share": 0.90,
           "stream_overhead": 0.10, "decode_share": 0.05}
REGRESSION = 0.10  # latency, relative
DRIFT_INCREASE_DB = 0.01
# What the smoke measures (CI runs it): the torch references, each precision's portable ONNX through ONNX
# Runtime, and int8 through OpenVINO both ways. ORT's *_cpu.onnx graphs and OpenVINO fp32 are left to full runs.
SMOKE_ARTEFACTS = ("torch*", "ort model.onnx", "ort model_int8.onnx", "openvino model_int8.onnx*")


def load_rows(path: Path) -> tuple[list[dict], dict]:
    """pytest-benchmark JSON -> one row per case with derived figures; and the run's info."""
    run = json.loads(Path(path).read_text())
    benches = run["benchmarks"]
    ceilings = {b["extra_info"].get("engine", "torch"): b["extra_info"]["flop"] / b["stats"]["min"] / 1e9
                for b in benches if b["extra_info"].get("kind") == "ceiling"}
    best_gflops = max(ceilings.values()) if ceilings else None
    torch_gflops = ceilings.get("torch")  # the issue's ceiling: torch's 2048² matmul (MEASURED.md)
    rows = []
    for b in benches:
        info, stats = b["extra_info"], b["stats"]
        if info.get("kind") not in ("frame", "stream", "decode"):
            continue
        seconds = stats["median"]
        row = {**info, "name": b["name"], "ms": seconds * 1e3, "mpx_per_s": info["pixels"] / seconds / 1e6,
               "gflops": info["flop"] / seconds / 1e9, "rounds": stats["rounds"]}
        # int8 runs 4 multiply-adds where fp32 runs one (VNNI): its roof is 4x the fp32 GEMM's.
        lanes = 4 if info["precision"] == "int8" else 1
        if torch_gflops:
            row["roof_share"] = row["gflops"] / (torch_gflops * lanes)
        if best_gflops:
            row["best_roof_share"] = row["gflops"] / (best_gflops * lanes)
            row["ms_at_ceiling"] = seconds * 1e3 * best_gflops  # machine-speed-normalised latency
        if info["kind"] == "stream":
            row["bare_mpx_per_s"] = info["pixels"] / info["bare_seconds"] / 1e6
            row["overhead_whole_run"] = seconds / info["bare_seconds"] - 1
            # Steady state (the pipeline full) when there were enough frames; else the whole run.
            per_frame = info.get("steady_seconds_per_frame")
            row["overhead"] = (per_frame / (info["bare_seconds"] / info["frames"]) - 1 if per_frame
                               else row["overhead_whole_run"])
        rows.append(row)
    _torch_ratios(rows)
    info = {"ceiling_gflops": torch_gflops, "best_gemm_gflops": best_gflops, "gemm_gflops": ceilings,
            "datetime": run.get("datetime"), "commit": (run.get("commit_info") or {}).get("id"),
            "cpu": run["machine_info"].get("cpu", {})}
    return rows, info


def _torch_ms(rows: list[dict], config: str, size: int, kind: str, whole: bool) -> float | None:
    return next((r["ms"] / r["pixels"] * size * size for r in rows
                 if r["backend"] == "torch" and bool(r.get("whole_frame")) == whole and r["kind"] == kind
                 and (r["config"], r["size"]) == (config, size)), None)


def _torch_ratios(rows: list[dict]) -> None:
    """Ratios to torch eager fp32 in this run. The reference is the model called on the whole frame
    where that fits (<= 512²; for a stream, the whole-frame row of its frame size), else torch in tiles."""
    for row in rows:
        pixels_ms = row["ms"] / row["pixels"] * row["size"] ** 2  # per frame of this size
        tiles = _torch_ms(rows, row["config"], row["size"], row["kind"], whole=False)
        whole = _torch_ms(rows, row["config"], row["size"], "frame", whole=True)
        row["speedup_vs_torch_tiles"] = tiles / pixels_ms if tiles else None
        reference = whole or tiles
        row["speedup_vs_torch"] = reference / pixels_ms if reference else None
        row["torch_reference"] = "whole frame" if whole else "tiles"


def _f(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(rows: list[dict], info: dict) -> str:
    gemms = ", ".join(f"{k} {v:.0f}" for k, v in info.get("gemm_gflops", {}).items())
    lines = [f"# ssran-edge bench ({info.get('datetime', '')})", "",
             f"fp32 GEMM (2048² matmul, best of 7) measured in this run, GFLOP/s: {gemms}. **% torch GEMM** is "
             "against torch's (the ceiling of ../shared/MEASURED.md and the issue's targets), **% best** against "
             "the fastest; int8 against 4× those (VNNI). GFLOP/s count convolution FLOPs per output pixel "
             "(fp32-equivalent for int8), so halo recomputation counts against an artefact. **× torch** is the "
             "speed-up over torch eager fp32 on the whole frame (the model called once, as a PyTorch user would; "
             "in tiles at 2048², where the whole frame needs GBs); **× torch tiles** over torch in the runtime's "
             "tiles (`--backend torch`). Accuracy: the config's validation split.", "",
             "## Per frame (tiles + halo, stitched, as `ssran-edge run` infers)", "",
             "| config | artefact | precision | frame | ms | Mpx/s | GFLOP/s | % torch GEMM | % best | × torch "
             "| × torch tiles | PSNR | SAM | drift dB | PSNR read 1% | drift dB read 1% |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["kind"] == "frame"), key=lambda r: (r["config"], r["size"], -r["ms"])):
        lines.append(f"| {r['config']} | {r['artefact']} | {r['precision']} | {r['size']}² | {r['ms']:.0f} | "
                     f"{r['mpx_per_s']:.3f} | {r['gflops']:.0f} | {_f(r.get('roof_share'), '.0%')} | "
                     f"{_f(r.get('best_roof_share'), '.0%')} | {_f(r['speedup_vs_torch'], '.2f')}× | "
                     f"{_f(r['speedup_vs_torch_tiles'], '.2f')}× | {_f(r.get('psnr'), '.2f')} | "
                     f"{_f(r.get('sam'), '.2f')} | {_f(r.get('drift_db'), '+.3f')} | {_f(r.get('psnr_noisy'), '.2f')} "
                     f"| {_f(r.get('drift_db_noisy'), '+.3f')} |")
    stream = [r for r in rows if r["kind"] == "stream"]
    if stream:
        lines += ["", "## End to end: `ssran-edge run`'s pipeline as shipped (.npy sink; ORT workers sleep between "
                  "sections) vs the bare runner at its fastest (workers spinning), same tiles; overhead = steady-state "
                  "time per frame (frames 2..n) over the bare runner's, medians of the rounds", "",
                  "| config | artefact | frames | fps | Mpx/s | GFLOP/s | % torch GEMM | % best | × torch | bare Mpx/s "
                  "| overhead steady | overhead whole run |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(stream, key=lambda r: (r["config"], -r["ms"])):
            lines.append(f"| {r['config']} | {r['artefact']} | {r['frames']} × {r['size']}² | "
                         f"{r['frames'] / r['ms'] * 1e3:.2f} | {r['mpx_per_s']:.3f} | {r['gflops']:.0f} | "
                         f"{_f(r.get('roof_share'), '.0%')} | {_f(r.get('best_roof_share'), '.0%')} | "
                         f"{_f(r['speedup_vs_torch'], '.2f')}× | {r['bare_mpx_per_s']:.3f} | {r['overhead']:+.1%} | "
                         f"{r['overhead_whole_run']:+.1%} |")
    decode = [r for r in rows if r["kind"] == "decode"]
    if decode:
        lines += ["", "## Decoding photos: a folder of 8-bit sRGB PNGs through `ssran-edge run` (no sink); per-frame "
                  "medians of the decode stage (codes -> linear, one table lookup), the runner, and the PNG read", "",
                  "| config | artefact | frame | decode ms | runner ms | decode / (runner + decode) | PNG read ms |",
                  "|---|---|---|---|---|---|---|"]
        for r in decode:
            lines.append(f"| {r['config']} | {r['artefact']} | {r['size']}² | {r['decode_seconds'] * 1e3:.2f} | "
                         f"{r['runner_seconds'] * 1e3:.0f} | {r['decode_share']:.2%} | {r['read_seconds'] * 1e3:.1f} |")
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(rows)]
    return "\n".join(lines) + "\n"


def targets(rows: list[dict]) -> list[str]:
    """The issue's speed targets, each with the figure that decides it."""
    out = []
    for config in sorted({r["config"] for r in rows}):
        mine = [r for r in rows if r["config"] == config]
        for r in (r for r in mine if r["precision"] == "int8" and r["kind"] == "frame" and r["size"] == 512):
            drift, noisy = r.get("drift_db"), r.get("drift_db_noisy")
            ok = (r["speedup_vs_torch"] or 0) >= TARGETS["int8_speedup"] and drift is not None \
                and drift <= TARGETS["int8_drift_db"] and (noisy is None or noisy <= TARGETS["int8_drift_db"])
            out.append(f"{'MET' if ok else 'NOT MET'}: {config} {r['artefact']} at 512²: "
                       f"{_f(r['speedup_vs_torch'], '.2f')}× torch eager fp32 on the frame "
                       f"(target ≥ {TARGETS['int8_speedup']:.0f}×; {_f(r['speedup_vs_torch_tiles'], '.2f')}× torch "
                       f"in tiles), drift {_f(drift, '+.3f')} dB"
                       + (f", {noisy:+.3f} dB at read noise 1 %" if noisy is not None else "")
                       + f" (target ≤ {TARGETS['int8_drift_db']})")
        for r in (r for r in mine if r["kind"] == "stream" and r["backend"] != "torch"):
            goal = {"int8": (TARGETS["int8_ceiling_share"], 600), "fp32": (TARGETS["fp32_ceiling_share"], 160)}.get(
                r["precision"])
            if goal is not None and r.get("roof_share") is not None:
                ok = r["roof_share"] >= goal[0]
                out.append(f"{'MET' if ok else 'NOT MET'}: {config} {r['artefact']} end to end: {r['gflops']:.0f} "
                           f"GFLOP/s = {r['roof_share']:.0%} of {'4× ' if r['precision'] == 'int8' else ''}torch's "
                           f"GEMM (target ≥ {goal[0]:.0%}, the issue's ≈ {goal[1]} GFLOP/s); "
                           f"{_f(r.get('best_roof_share'), '.0%')} of the best GEMM")
            ok = r["overhead"] <= TARGETS["stream_overhead"]
            out.append(f"{'MET' if ok else 'NOT MET'}: {config} {r['artefact']} stream vs bare runner: "
                       f"{r['overhead']:+.1%} per frame at steady state (target ≤ {TARGETS['stream_overhead']:.0%})")
        for r in (r for r in mine if r["kind"] == "decode"):
            ok = r["decode_share"] <= TARGETS["decode_share"]
            out.append(f"{'MET' if ok else 'NOT MET'}: {config} {r['artefact']} at {r['size']}²: decoding sRGB frames "
                       f"is {r['decode_share']:.2%} of run's per-frame runner + decode time "
                       f"(target ≤ {TARGETS['decode_share']:.0%})")
    return out


def compare(previous: list[dict], current: list[dict]) -> list[str]:
    """Regressions of `current` against `previous`: latency (> 10 %, ceiling-normalised) and drift."""
    before = {(r["kind"], r["config"], r["artefact"], r["size"]): r for r in previous}
    flags = []
    for r in current:
        old = before.get((r["kind"], r["config"], r["artefact"], r["size"]))
        if old is None:
            continue
        name = f"{r['kind']} {r['config']} {r['artefact']} {r['size']}²"
        if "ms_at_ceiling" in r and "ms_at_ceiling" in old:
            change = r["ms_at_ceiling"] / old["ms_at_ceiling"] - 1
            if change > REGRESSION:
                flags.append(f"latency regression: {name}: {change:+.0%} (ceiling-normalised; {old['ms']:.0f} -> "
                             f"{r['ms']:.0f} ms raw)")
        for key, where in (("drift_db", ""), ("drift_db_noisy", " at read noise 1 %")):
            if r.get(key) is not None and old.get(key) is not None and r[key] - old[key] > DRIFT_INCREASE_DB:
                flags.append(f"drift increase{where}: {name}: {old[key]:+.3f} -> {r[key]:+.3f} dB")
    return flags


def saved_runs(history: Path) -> list[Path]:
    """pytest-benchmark's autosaved runs (<history>/<machine>/NNNN_*.json), oldest first."""
    return sorted(history.glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: (p.stat().st_mtime, p.name))


def run_suite(args: argparse.Namespace, json_path: Path) -> int:
    import pytest

    suite_dir = Path(__file__).parent
    options = [str(suite_dir), "-q", "-p", "no:cacheprovider", "-c", str(suite_dir / "pytest.ini"),
               "--rootdir", str(suite_dir.parent), f"--benchmark-json={json_path}",
               f"--bench-configs={args.configs}", f"--bench-sizes={args.sizes}",
               f"--bench-precisions={args.precisions}", f"--bench-exports={args.exports}",
               f"--bench-stream-size={args.stream_size}", f"--bench-stream-frames={args.stream_frames}",
               f"--bench-threads={args.threads}", f"--bench-artefacts={args.artefacts}",
               "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name"]
    if args.smoke:
        options.append("--bench-quick-export")
    if not args.no_save:
        options += ["--benchmark-autosave", f"--benchmark-storage=file://{Path(args.history).resolve()}"]
    return int(pytest.main(options))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ssran-edge bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="cave,pavia", help="bundled models or weights paths")
    p.add_argument("--sizes", default="256,512,2048")
    p.add_argument("--precisions", default="fp32,fp16,int8")
    p.add_argument("--exports", default="exports", help="export folders are read (or built) here")
    p.add_argument("--stream-size", type=int, default=512)
    p.add_argument("--stream-frames", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = cores)")
    p.add_argument("--artefacts", default="*", help="comma-separated patterns of the artefacts to measure (fnmatch "
                                                    "on their labels, e.g. 'torch*,ort model_int8.onnx'; default: all)")
    p.add_argument("--smoke", action="store_true",
                   help=f"cave, 256 px, fp32 + int8 ({', '.join(SMOKE_ARTEFACTS)}), 3 stream frames")
    p.add_argument("--out", default="bench", help="report.md and report.json go here")
    p.add_argument("--history", default=".benchmarks", help="pytest-benchmark storage of saved runs")
    p.add_argument("--no-save", action="store_true", help="do not add this run to the history")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 3 when a regression is flagged")
    p.add_argument("--compare-only", nargs=2, metavar=("OLD", "NEW"), help="compare two saved runs and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compare_only:
        flags = compare(load_rows(Path(args.compare_only[0]))[0], load_rows(Path(args.compare_only[1]))[0])
        print("\n".join(flags) if flags else "no regression")
        return 3 if flags and args.fail_on_regression else 0
    if args.smoke:
        args.configs, args.sizes, args.precisions = "cave", "256", "fp32,int8"
        args.stream_size, args.stream_frames, args.artefacts = 256, 3, ",".join(SMOKE_ARTEFACTS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    history = Path(args.history)
    earlier = saved_runs(history)
    json_path = out / "pytest-benchmark.json"
    code = run_suite(args, json_path)
    if code != 0:
        print(f"ssran-edge bench: error: the benchmark suite failed (pytest exit code {code})", file=sys.stderr)
        return 2
    rows, info = load_rows(json_path)
    flags = compare(load_rows(earlier[-1])[0], rows) if earlier else []
    report = markdown(rows, info)
    report += "\n## Against the previous saved run\n\n" + (
        "\n".join(f"- {f}" for f in flags) if flags else
        f"- no regression (vs {earlier[-1].name})" if earlier else "- no earlier run saved") + "\n"
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(report)
    write_json(out / "report.json", {"info": info, "rows": rows, "targets": targets(rows), "regressions": flags})
    print(report)
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return 3 if flags and args.fail_on_regression else 0


if __name__ == "__main__":
    sys.exit(main())
