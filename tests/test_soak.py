"""A stream that runs for days: 50,000 tiny frames from a real MJPG file through `ssran-edge run`'s
pipeline. The stream's bookkeeping must stay bounded: throughput at the end as at the start, and no
memory growth (a camera at 30 fps makes 2.6 million frames a day).

Speed is frames per second of this process's CPU time (all its threads): bookkeeping that grows
per frame costs CPU time, while another process taking the cores mid-run (CI neighbours, a training
run) only costs wall time. Wall-clock fps slowed 432 -> 273 in one CI run that way, with the CPU
cost per frame unchanged."""

import time

import cv2
import numpy as np
import pytest

from ssran_edge.runtime.backends import select_runner
from ssran_edge.runtime.capture import VideoSource
from ssran_edge.runtime.pipeline import StreamPipeline

FRAMES, SIZE, PART = 50_000, 16, 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096  # resident pages


class Checkpoints:
    """The pipeline's progress hook (tqdm's update/set_postfix): wall time, process CPU time and RSS
    every PART frames."""

    def __init__(self):
        self.frames, self.marks = 0, []

    def update(self, n: int) -> None:
        self.frames += n
        if self.frames % PART == 0:
            self.marks.append((self.frames, time.perf_counter(), time.process_time(), rss_bytes()))

    def set_postfix(self, **_) -> None:
        pass


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("soak") / "long.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (SIZE, SIZE))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG"
    rng = np.random.default_rng(0)
    patterns = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(64)]
    for k in range(FRAMES):
        writer.write(patterns[k % 64])
    writer.release()
    return str(path)


def test_fifty_thousand_frames_keep_their_speed_and_memory(long_video):
    selection = select_runner(None, "auto", "cpu", threads=1)
    progress = Checkpoints()
    with selection.runner as runner, VideoSource(long_video) as source:
        pipeline = StreamPipeline(source, runner, None, tile=selection.tile, batch=1, progress=progress)
        stats = pipeline.run()
    assert stats.frames == FRAMES and stats.dropped == 0
    (f0, t0, c0, _), (f1, t1, c1, rss1) = progress.marks[0], progress.marks[1]  # frames 10k-20k: warmed up
    (g0, u0, d0, _), (g1, u1, d1, rss_end) = progress.marks[-2], progress.marks[-1]  # the last 10k
    first, last = (f1 - f0) / (c1 - c0), (g1 - g0) / (d1 - d0)
    print(f"\nsoak: {first:.0f} -> {last:.0f} frames per CPU-second, wall {(f1 - f0) / (t1 - t0):.0f} -> "
          f"{(g1 - g0) / (u1 - u0):.0f} fps (frames 10k-20k -> 40k-50k), RSS {rss1 / 2**20:.1f} -> "
          f"{rss_end / 2**20:.1f} MiB ({selection.backend})")
    assert last >= 0.9 * first, f"the stream slowed down: {first:.0f} -> {last:.0f} frames per CPU-second"
    assert rss_end - rss1 < 4 * 2**20, f"memory grew by {(rss_end - rss1) / 2**20:.1f} MiB over 30,000 frames"
    summary = stats.summary()
    assert summary["infer_ms_p95"] >= summary["infer_ms_p50"] > 0
