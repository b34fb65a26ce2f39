"""Side-by-side latency of an export folder's artefacts against torch eager fp32, on the same frame,
in one run (these machines are noisy: the ratios are the figures to quote).

    python -m benchmarks.compare exports/cave --size 512 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from ssran_edge.records import Manifest
from ssran_edge.runtime.backends import artefact_of, open_runner


def median_seconds(fn, x: np.ndarray, repeat: int) -> float:
    fn(x)  # warm-up: ORT plans allocations on the first run
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compare(export_dir: Path, size: int, repeat: int, threads: int = 0) -> list[dict]:
    manifest = Manifest.in_folder(export_dir)
    frame = np.random.default_rng(0).random((1, manifest.in_bands, size, size), dtype=np.float32) * 0.5
    rows = []
    with open_runner(manifest.source_weights, "torch") as torch_runner:
        base = median_seconds(torch_runner.infer, frame, repeat)
    rows.append({"artefact": "torch eager", "precision": "fp32", "ms": base * 1e3, "speedup": 1.0})
    for artefact in manifest.artefacts:
        if "ort" not in artefact_of(artefact.file).opens:  # every ONNX, through ONNX Runtime's CPU provider
            continue
        with open_runner(export_dir / artefact.file, "ort", threads=threads) as runner:
            seconds = median_seconds(runner.infer, frame, repeat)
        rows.append({"artefact": f"ORT CPU {artefact.file}", "precision": artefact.precision,
                     "ms": seconds * 1e3, "speedup": base / seconds})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("export_dir", type=Path)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    rows = compare(args.export_dir, args.size, args.repeat, args.threads)
    print(f"| artefact | precision | ms per {args.size}² frame | speed-up vs torch eager fp32 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['artefact']} | {r['precision']} | {r['ms']:.0f} | {r['speedup']:.2f}× |")


if __name__ == "__main__":
    main()
