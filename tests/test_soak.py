"""A stream that runs for days: 50,000 tiny frames from a real MJPG file through `ssran-edge run`'s
pipeline. The stream's bookkeeping must stay bounded: throughput at the end as at the start, and no
memory growth (a camera at 30 fps makes 2.6 million frames a day).

Speed is frames per second of this process's CPU time (all its threads): bookkeeping that grows
per frame costs CPU time, while another process taking the cores mid-run (CI neighbours, a training
run) only costs wall time. Wall-clock fps slowed 432 -> 273 in one CI run that way, with the CPU
cost per frame unchanged.

The default suite streams 10,000 frames (~25 s: growth above ~700 bytes a frame fails it); the full
50,000 (~2 min, ~130 bytes a frame) runs with `pytest -m slow`."""

import time

import cv2
import numpy as np
import pytest

from ssran_edge.runtime.backends import select_runner
from ssran_edge.runtime.capture import VideoSource
from ssran_edge.runtime.pipeline import StreamPipeline

SIZE, PARTS = 16, 5  # frames are counted in parts; the first is warm-up


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096  # resident pages


class Checkpoints:
    """The pipeline's progress hook (tqdm's update/set_postfix): wall time, process CPU time and RSS
    every PART frames."""

    def __init__(self, part: int):
        self.frames, self.part, self.marks = 0, part, []

    def update(self, n: int) -> None:
        self.frames += n
        if self.frames % self.part == 0:
            self.marks.append((self.frames, time.perf_counter(), time.process_time(), rss_bytes()))

    def set_postfix(self, **_) -> None:
        pass


def long_video(folder, frames: int) -> str:
    path = folder / f"long{frames}.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (SIZE, SIZE))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG"
    rng = np.random.default_rng(0)
    patterns = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(64)]
    for k in range(frames):
        writer.write(patterns[k % 64])
    writer.release()
    return str(path)


@pytest.mark.parametrize("frames", [10_000, pytest.param(50_000, marks=pytest.mark.slow)])
def test_a_long_stream_keeps_its_speed_and_memory(tmp_path, frames):
    selection = select_runner(None, "auto", "cpu", threads=1)
    progress = Checkpoints(frames // PARTS)
    with selection.runner as runner, VideoSource(long_video(tmp_path, frames)) as source:
        pipeline = StreamPipeline(source, runner, None, tile=selection.tile, batch=1, progress=progress)
        stats = pipeline.run()
    assert stats.frames == frames and stats.dropped == 0
    (f0, t0, c0, _), (f1, t1, c1, rss1) = progress.marks[0], progress.marks[1]  # the second part: warmed up
    (g0, u0, d0, _), (g1, u1, d1, rss_end) = progress.marks[-2], progress.marks[-1]  # the last part
    first, last = (f1 - f0) / (c1 - c0), (g1 - g0) / (d1 - d0)
    print(f"\nsoak: {first:.0f} -> {last:.0f} frames per CPU-second, wall {(f1 - f0) / (t1 - t0):.0f} -> "
          f"{(g1 - g0) / (u1 - u0):.0f} fps (second part -> last of {frames}), RSS {rss1 / 2**20:.1f} -> "
          f"{rss_end / 2**20:.1f} MiB ({selection.backend})")
    assert last >= 0.9 * first, f"the stream slowed down: {first:.0f} -> {last:.0f} frames per CPU-second"
    assert rss_end - rss1 < 4 * 2**20, f"memory grew by {(rss_end - rss1) / 2**20:.1f} MiB over {g1 - f1} frames"
    summary = stats.summary()
    assert summary["infer_ms_p95"] >= summary["infer_ms_p50"] > 0
