"""Where an ONNX artefact spends its time, from ONNX Runtime's own profiler (per node, summed by op type).

    python -m benchmarks.profile exports/cave/model_int8.onnx --size 264 --runs 10

The input is one tile of the config's real frame (256 px + an 8 px halo on each side, as the runtime
feeds it). Prints a table of op types by share of kernel time, and the session's wall time per run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(onnx_path: Path, msi: np.ndarray, runs: int, threads: int = 0, spinning: bool = True) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: msi}
        session.run(None, feed)  # warm-up (also profiled; dropped below)
        started = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        wall = (time.perf_counter() - started) / runs
        trace = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    runs_seen = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_run_end = runs_seen[0]["ts"] + runs_seen[0]["dur"] if runs_seen else 0
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > first_run_end:
            by_op[e["args"].get("op_name", "?")] += e["dur"] / 1e3 / runs  # us -> ms per run
    return {"wall_ms": wall * 1e3, "kernel_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    from ssran_edge.bench import suite
    from ssran_edge.runtime.loaders import read_card

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path)
    p.add_argument("--config", help="bundled model whose real frame feeds it (default: the ONNX's protocol)")
    p.add_argument("--size", type=int, default=264, help="tile side fed to the model (256 + 2 x 8 halo)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-spinning", action="store_true", help="intra-op threads sleep instead of spinning")
    args = p.parse_args()
    card = read_card(args.onnx)
    config = args.config or (card.protocol if card and card.protocol in ("cave", "pavia", "paris") else "cave")
    tile = suite.frame(config, args.size).transpose(2, 0, 1)[None]
    msi = np.ascontiguousarray(np.repeat(tile, args.batch, axis=0))
    result = profile(args.onnx, msi, args.runs, args.threads, not args.no_spinning)
    total = sum(result["kernel_ms"].values())
    print(f"{args.onnx}: {result['wall_ms']:.1f} ms per run (wall), {total:.1f} ms in kernels")
    print("| op | ms per run | share |\n|---|---|---|")
    for op, ms in result["kernel_ms"].items():
        print(f"| {op} | {ms:.2f} | {ms / total:.1%} |")


if __name__ == "__main__":
    main()
