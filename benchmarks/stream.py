"""End-to-end stream throughput per backend against the bare runner on the same frames, in one run.

    python -m benchmarks.stream --export exports/cave --size 512 --frames 4

For each runner: (a) the bare runner over the frames' tiles (tiles cut in advance, no I/O, no
stitching) and (b) the full StreamPipeline (reader, preprocess, tiling, stitching, an .npy sink).
The overhead is (b) / (a) - 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ssran_edge.bench import suite
from ssran_edge.records import Manifest
from ssran_edge.runtime.backends import artefact_of, open_runner
from ssran_edge.runtime.frames import Frame, Source
from ssran_edge.runtime.pipeline import StreamPipeline
from ssran_edge.runtime.runners import Runner
from ssran_edge.runtime.sinks import NpySink
from ssran_edge.tiling import tile_windows


class ArraySource(Source):
    """Frames already in memory (the demo scene tiled up to the frame size), as a file source would give."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames, self.name, self.bands = frames, "memory", frames[0].shape[2]
        self._next = 0

    def read(self) -> Frame | None:
        if self._next >= len(self.frames):
            return None
        self._next += 1
        return Frame(self._next - 1, self.frames[self._next - 1].copy(), time.monotonic())


def demo_frames(size: int, count: int) -> list[np.ndarray]:
    """The bundled CAVE crop as simulated RGB frames of size x size (benchmarks.suite.frames)."""
    return suite.frames("cave", size, count)


def bare_seconds(runner: Runner, frames: list[np.ndarray], tile: int, halo: int, batch: int) -> float:
    windows = tile_windows(frames[0].shape[0], frames[0].shape[1], tile, halo)
    batches = []
    for frame in frames:
        chw = np.ascontiguousarray(frame.transpose(2, 0, 1))
        tiles = [chw[:, r0:r1, c0:c1] for (r0, r1, c0, c1), _ in windows]
        shapes: dict[tuple, list] = {}
        for t in tiles:
            shapes.setdefault(t.shape, []).append(t)
        for group in shapes.values():
            batches += [np.stack(group[i: i + batch]) for i in range(0, len(group), batch)]
    runner.infer(batches[0])  # warm-up
    started = time.perf_counter()
    for b in batches:
        runner.infer(b)
    return time.perf_counter() - started


def measure(runner: Runner, frames, tile: int, halo: int, batch: int) -> dict:
    with runner:
        bare = bare_seconds(runner, frames, tile, halo, batch)
        with tempfile.TemporaryDirectory() as tmp:
            sink = NpySink(Path(tmp) / "out")
            sink.open(runner.out_bands, None)
            stats = StreamPipeline(ArraySource(frames), runner, sink, tile=tile, halo=halo, batch=batch).run()
            sink.close()
    px = sum(f.shape[0] * f.shape[1] for f in frames)
    return {"runner": runner.name, "bare_s": bare, "stream_s": stats.seconds, "fps": stats.frames / stats.seconds,
            "mpx_per_s": px / stats.seconds / 1e6, "bare_mpx_per_s": px / bare / 1e6,
            "overhead": stats.seconds / bare - 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, required=True, help="an export folder (python -m export)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--halo", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    manifest = Manifest.in_folder(args.export)
    frames = demo_frames(args.size, args.frames)
    runners: list[tuple[str, Runner]] = [("torch eager", open_runner(manifest.source_weights, "torch"))]
    runners += [(a.file, open_runner(args.export / a.file, "ort")) for a in manifest.artefacts
                if "ort" in artefact_of(a.file).opens]
    rows = []
    for name, runner in runners:
        row = measure(runner, frames, args.tile, args.halo, args.batch)
        row["artefact"] = name
        rows.append(row)
        print(f"{row['artefact']:>18}: stream {row['fps']:.2f} fps, {row['mpx_per_s']:.3f} Mpx/s; bare runner "
              f"{row['bare_mpx_per_s']:.3f} Mpx/s; overhead {row['overhead'] * 100:+.1f} %", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
