"""Bounded bookkeeping for streams that run for days: running totals of every value, percentiles over
the most recent ones. Appends are O(1) and memory is fixed whatever the frame count."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

RECENT = 4096  # values kept for percentiles: ~2 min of a 30 fps camera, p95 from ~200 tail samples


class Window:
    """count, total and mean of all values appended; median/percentiles over the last `size`."""

    def __init__(self, size: int = RECENT):
        self.recent: deque[float] = deque(maxlen=size)
        self.count, self.total = 0, 0.0

    def append(self, value: float) -> None:
        self.recent.append(value)
        self.count += 1
        self.total += value

    def __len__(self) -> int:
        return self.count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float, skip_first: bool = False) -> float:
        """Over the recent values; `skip_first` leaves out the stream's first value while it is still
        among them (a pipeline filling up is not steady state)."""
        values = list(self.recent)
        if skip_first and self.count == len(values) and len(values) > 1:
            values = values[1:]
        return float(np.percentile(values, q)) if values else 0.0


# "decode" (encoded codes -> linear values) is part of "preprocess", timed on its own for the bench
STAGES = ("read", "decode", "preprocess", "infer", "postprocess", "write")


@dataclass
class StreamStats:
    frames: int = 0
    dropped: int = 0
    pixels: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, Window] = field(default_factory=lambda: {s: Window() for s in STAGES})
    runner_seconds: float = 0.0
    runner_per_frame: Window = field(default_factory=Window)  # runner seconds spent on each frame
    write_intervals: Window = field(default_factory=Window)  # seconds between successive written frames
    last_written_at: float | None = None  # perf_counter() of the last written frame
    psnr: Window = field(default_factory=Window)  # per frame vs the reference, when replaying a cube
    sam: Window = field(default_factory=Window)

    def written(self, now: float) -> None:
        if self.last_written_at is not None:
            self.write_intervals.append(now - self.last_written_at)
        self.last_written_at = now

    def steady_state(self) -> dict:
        """Throughput once the pipeline is full: the median interval between successive writes against
        the runner's median time per frame, over the recent frames (the first frame's read and checks
        left out). Filling, draining and one-off stalls are not per-frame overhead."""
        if len(self.write_intervals) < 2:
            return {}
        interval = self.write_intervals.percentile(50)
        runner = self.runner_per_frame.percentile(50, skip_first=True)
        return {"steady_fps": 1 / interval if interval else 0.0,
                "steady_overhead_vs_runner": interval / runner - 1 if runner else None}

    def summary(self) -> dict:
        out = {"frames": self.frames, "dropped": self.dropped, "seconds": round(self.seconds, 3),
               "fps": self.frames / self.seconds if self.seconds else 0.0,
               "mpx_per_s": self.pixels / self.seconds / 1e6 if self.seconds else 0.0,
               "runner_seconds": round(self.runner_seconds, 3),
               "overhead_vs_runner": (self.seconds / self.runner_seconds - 1) if self.runner_seconds else None,
               **self.steady_state()}
        if self.psnr.count:
            out["psnr_vs_reference"] = self.psnr.mean
            out["sam_vs_reference"] = self.sam.mean
        for stage, window in self.stage_seconds.items():
            if window.count:
                out[f"{stage}_ms_p50"] = window.percentile(50) * 1e3
                out[f"{stage}_ms_p95"] = window.percentile(95) * 1e3
        return out
