"""The stream: reader -> preprocess -> infer (tiles) -> postprocess (stitch) -> write, each stage a thread
joined by bounded queues, so memory stays flat whatever the source or sink speed, and stitching and
writing one frame overlap the next frame's inference.

- Live sources (cameras) drop the oldest waiting frame when inference falls behind (counted);
  file sources block instead and never drop.
- The band count is checked against the model on the first frame.
- Every frame is decoded to linear values as its `encoding` says (sRGB codes: one table lookup), or
  as the user forced with `encoding` ("linear"/"srgb"; "auto": as each file says).
- stop() (SIGINT/SIGTERM in the CLI) stops reading; frames already read are finished and written,
  so every frame that was read is whole on disk. A source that fails (a camera gone after its
  retries, an unreadable file) ends the stream the same way, then its error is raised.
- Each stage's latency is recorded (running totals, percentiles over the recent frames: bounded
  however long the stream runs); summary() gives p50/p95, fps, Mpx/s and the share of wall time
  spent outside the runner (tiling, I/O, stitching).

`open_stream` is what `run`, `batch` and `predict` share once model and source are open: the band
check, the sink opened with the source's grid, and the pipeline (`predict` is a one-frame run).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from ssran_edge.data.readers import check_cube
from ssran_edge.encoding import resolve, to_linear
from ssran_edge.errors import DataError
from ssran_edge.metrics import psnr, sam
from ssran_edge.runtime.frames import Sink, Source
from ssran_edge.runtime.runners import Runner
from ssran_edge.runtime.stats import StreamStats
from ssran_edge.tiling import fill_masked, iter_tiles, run_patches, stitch, tile_windows

log = logging.getLogger("ssran_edge.runtime")
_DONE = object()  # end-of-stream marker passed down the queues


class StreamPipeline:
    def __init__(self, source: Source, runner: Runner, sink: Sink | None, *, tile: int = 256, halo: int = 8,
                 batch: int = 4, queue_size: int = 4, previews=None, max_frames: int = 0, progress=None,
                 reference: np.ndarray | None = None, patch: int = 0, encoding: str = "auto"):
        self.source, self.runner, self.sink = source, runner, sink
        self.tile, self.halo, self.batch = tile, halo, batch
        self.patch = patch  # > 0: patch mode (each frame cut into patch x patch blocks), not tiles
        self.previews, self.max_frames, self.progress = previews, max_frames, progress
        self.reference = reference  # ground truth of a replayed cube: quality is reported per frame
        self.encoding = encoding  # "auto": each frame's own; "linear"/"srgb": the user's word for every frame
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._error: BaseException | None = None  # a stage failed: drop the work in flight
        self._source_error: BaseException | None = None  # the source failed: finish what was read
        # reader -> preprocess -> infer -> postprocess -> writer. Between infer and postprocess wait at most
        # two batches of tile outputs: enough to overlap stitching with inference, small in memory.
        self._queues = [queue.Queue(maxsize=queue_size), queue.Queue(maxsize=queue_size), queue.Queue(maxsize=2),
                        queue.Queue(maxsize=queue_size)]
        # Output cubes are reused once written: a fresh 100 MB array a frame (4 -> 103 bands, 512 px) is
        # mapped anew by malloc and page-faulted in while stitching, which cost more than the stitching.
        self._free_cubes: queue.Queue = queue.Queue(maxsize=queue_size + 2)

    def stop(self) -> None:
        """Stop reading; frames already read are still finished and written."""
        self._stop.set()
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt is not None:  # a camera blocked in a read or a backoff stops waiting
            interrupt()

    # --- stages -------------------------------------------------------------------------------------

    def _put(self, q: queue.Queue, item, may_drop: bool) -> None:
        while True:
            try:
                if may_drop and item is not _DONE:
                    q.put_nowait(item)  # a live camera never waits for a slow stage: it drops instead
                else:
                    q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._error is not None and item is not _DONE:
                    return  # failing: drop work, but the end marker must still reach the next stage
                if may_drop:  # a live camera: the newest frame matters, drop the oldest waiting one
                    try:
                        q.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass

    def _reader(self) -> None:
        q = self._queues[0]
        try:
            count = 0
            while not self._stop.is_set() and (not self.max_frames or count < self.max_frames):
                started = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                self.stats.stage_seconds["read"].append(time.perf_counter() - started)
                self._put(q, frame, may_drop=self.source.live)
                count += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            # A failing source ends the stream, but the frames it already delivered are finished and
            # written: only errors in our own stages abort the frames in flight.
            self._source_error = exc
        finally:
            self._put(q, _DONE, may_drop=False)

    def _preprocess(self) -> None:
        q_in, q_out = self._queues[0], self._queues[1]
        while (frame := q_in.get()) is not _DONE:
            if self._error is None:
                try:
                    started = time.perf_counter()
                    name = f"{self.source.name} frame {frame.index}"
                    frame.data = to_linear(frame.data, resolve(self.encoding, frame.encoding), name)
                    frame.encoding = "linear"
                    self.stats.stage_seconds["decode"].append(time.perf_counter() - started)
                    frame.data = check_cube(frame.data, name, self.runner.in_bands)
                    # nodata (a GDAL raster's mask) is never fed to the network as data
                    frame.data = fill_masked(frame.data, frame.valid)
                    self.stats.stage_seconds["preprocess"].append(time.perf_counter() - started)
                    self._put(q_out, frame, may_drop=False)
                except BaseException as exc:  # noqa: BLE001
                    self._fail(exc)
        self._put(q_out, _DONE, may_drop=False)

    def _infer(self) -> None:
        """Tiles through the runner; each batch's outputs go to the stitcher as soon as they exist, so a
        frame's tile outputs are never all held at once (a window of a large scene is 100+ MB of them)."""
        q_in, q_out = self._queues[1], self._queues[2]
        while (frame := q_in.get()) is not _DONE:
            if self._error is None:
                try:
                    started = time.perf_counter()
                    runner_before = self.runner.inference_seconds
                    if self.patch:  # the whole frame at once, handed on as one tile that covers it
                        h, w = frame.data.shape[:2]
                        y = run_patches(self.runner.infer, frame.data, self.runner.out_bands, self.patch)
                        self._put(q_out, (frame, [((0, h, 0, w), (0, h, 0, w), y.transpose(2, 0, 1))], False),
                                  may_drop=False)
                    else:
                        windows = tile_windows(*frame.data.shape[:2], self.tile, self.halo)
                        for tiles in iter_tiles(self.runner.infer, frame.data, windows, self.batch):
                            self._put(q_out, (frame, tiles, False), may_drop=False)
                    self._put(q_out, (frame, [], True), may_drop=False)  # the frame's last batch is in
                    spent = self.runner.inference_seconds - runner_before
                    self.stats.runner_seconds += spent
                    self.stats.runner_per_frame.append(spent)
                    self.stats.stage_seconds["infer"].append(time.perf_counter() - started)
                except BaseException as exc:  # noqa: BLE001
                    self._fail(exc)
        self._put(q_out, _DONE, may_drop=False)

    def _postprocess(self) -> None:
        """Stitch each batch's kept regions into the frame's cube, beside the inference of the next batch."""
        q_in, q_out = self._queues[2], self._queues[3]
        cube, spent = None, 0.0
        while (item := q_in.get()) is not _DONE:
            if self._error is None:
                frame, tiles, last = item
                try:
                    started = time.perf_counter()
                    shape = (*frame.data.shape[:2], self.runner.out_bands)
                    if cube is None:  # the frame's first batch: a written cube to reuse, else stitch allocates
                        cube = self._reusable_cube(shape)
                    cube = stitch(tiles, *shape, out=cube)
                    spent += time.perf_counter() - started
                    if last:
                        valid = frame.valid
                        if valid is not None and not valid.all():
                            cube[~valid] = np.nan  # nodata in, nodata out
                        self.stats.stage_seconds["postprocess"].append(spent)
                        self._put(q_out, (frame, cube), may_drop=False)
                        cube, spent = None, 0.0
                except BaseException as exc:  # noqa: BLE001
                    self._fail(exc)
        self._put(q_out, _DONE, may_drop=False)

    def _reusable_cube(self, shape: tuple[int, int, int]) -> np.ndarray | None:
        try:
            cube = self._free_cubes.get_nowait()
        except queue.Empty:
            return None
        return cube if cube.shape == shape else None

    def _release_cube(self, cube: np.ndarray) -> None:
        try:
            self._free_cubes.put_nowait(cube)
        except queue.Full:
            pass

    def _writer(self) -> None:
        q_in = self._queues[3]
        while (item := q_in.get()) is not _DONE:
            if self._error is None:
                frame, cube = item
                try:
                    started = time.perf_counter()
                    if self.sink is not None:
                        self.sink.write(frame, cube)
                    if self.previews is not None:
                        self.previews.preview(frame, cube)
                    self.stats.stage_seconds["write"].append(time.perf_counter() - started)
                    if self.reference is not None and self.reference.shape == cube.shape:
                        self.stats.psnr.append(psnr(self.reference, cube))
                        self.stats.sam.append(sam(self.reference, cube))
                    core = frame.core or (0, cube.shape[0], 0, cube.shape[1])
                    self._release_cube(cube)
                    self.stats.frames += 1
                    self.stats.written(time.perf_counter())
                    self.stats.pixels += (core[1] - core[0]) * (core[3] - core[2])
                    if self.progress is not None:
                        self.progress.update(1)
                        # refresh=False: drawn at tqdm's own pace, not once a frame
                        self.progress.set_postfix(dropped=self.stats.dropped, fps=f"{self._fps():.2f}", refresh=False)
                except BaseException as exc:  # noqa: BLE001
                    self._fail(exc)

    def _fps(self) -> float:
        elapsed = time.perf_counter() - self._started
        return self.stats.frames / elapsed if elapsed else 0.0

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self.stop()

    # --- run -----------------------------------------------------------------------------------------

    def run(self) -> StreamStats:
        """Run to the end of the source (or stop()); re-raises the first stage error after the others
        have finished what they hold."""
        self._started = time.perf_counter()
        threads = [threading.Thread(target=target, name=f"ssran-{name}", daemon=True)
                   for name, target in (("reader", self._reader), ("preprocess", self._preprocess),
                                        ("infer", self._infer), ("postprocess", self._postprocess),
                                        ("writer", self._writer))]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)  # short joins keep the main thread free for signal handlers
        finally:
            self.stats.seconds = time.perf_counter() - self._started
        if self._error is not None:
            raise self._error
        if self._source_error is not None:
            raise self._source_error
        if self.stats.frames == 0 and not self._stop.is_set():
            raise DataError(f"{self.source.name}: no frames")
        return self.stats



def default_batch(runner: Runner) -> int:
    """Tiles per inference call: 4 on a CUDA GPU (TensorRT, ONNX Runtime, PyTorch); otherwise the runner's own
    (OpenVINO: its requests in flight, else 1, where a CPU is fastest and smallest)."""
    return 4 if runner.device.startswith("cuda") else runner.requests


def open_stream(source: Source, runner: Runner, sink: Sink | None, wavelengths: list[float] | None,
                camera: str | None = None, **pipeline: object) -> StreamPipeline:
    """Model and source open: the band check, a warning when the source's camera is known and is not the
    model's (`camera`: the SRF its card names), the sink opened with the source's grid (a raster's CRS and
    transform), and the pipeline that runs them (keywords: StreamPipeline's; the source's reference cube
    unless one is given)."""
    if source.bands is not None and runner.in_bands and source.bands != runner.in_bands:
        raise DataError(f"{source.name}: {source.bands} bands, but the model takes {runner.in_bands}")
    encoding = str(pipeline.get("encoding", "auto"))
    # sRGB-encoded frames decode to linear sRGB: their camera is the sRGB standard, whatever took them
    taken = "srgb" if source.encoding and resolve(encoding, source.encoding) == "srgb" else source.camera
    if camera and taken and taken != camera:
        log.warning("%s: %s camera values, but the model was trained on %s ones: expect a camera mismatch "
                    "in the spectra", source.name, taken, camera)
    elif camera == "srgb" and not taken:
        log.warning("%s: linear values of an unknown camera, but the model was trained on sRGB photos (8-bit, "
                    "JPEG): for linear camera values use --model cave", source.name)
    if sink is not None:
        sink.open(runner.out_bands, wavelengths, geo=source.geo)
    pipeline.setdefault("reference", source.reference)
    return StreamPipeline(source, runner, sink, **pipeline)  # type: ignore[arg-type]
