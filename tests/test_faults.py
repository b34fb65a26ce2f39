"""Faults survived, with real processes, real files and a real network camera:

- training killed with SIGKILL mid-epoch resumes with --resume, losing at most the epoch in progress;
  the checkpoint under its final name is always whole, even when the kill lands mid-write;
- a camera that stalls or disconnects mid-stream: read timeout, retry with backoff, reconnect, or a
  clean stop with every frame read written whole;
- a slow sink: bounded queues keep memory flat; live sources drop (counted), files never drop;
- SIGINT / SIGTERM during `ssran-edge run`, also while the camera is stalled: clean stop, outputs whole.

The camera is an HTTP server on 127.0.0.1 streaming multipart JPEG (what IP cameras serve), read by
OpenCV's FFmpeg backend. docs/faults.md reports the figures these tests measure.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from ssran_edge.assets import MODELS, demo_scene  # noqa: E402
from ssran_edge.errors import SourceError  # noqa: E402
from ssran_edge.runtime.capture import VideoSource  # noqa: E402
from ssran_edge.runtime.pipeline import StreamPipeline  # noqa: E402
from ssran_edge.runtime.runners import TorchRunner  # noqa: E402
from ssran_edge.runtime.sinks import NpySink  # noqa: E402
from ssran_edge.srf import load_srf, simulate_msi  # noqa: E402
from tests.conftest import REPO  # noqa: E402

H, W = 48, 64  # small frames: two busy cores


# --- helpers -----------------------------------------------------------------------------------------

def demo_rgb8(count: int, h: int = H, w: int = W) -> list[np.ndarray]:
    """`count` distinct uint8 RGB frames: crops of the bundled CAVE scene through the Nikon D700 SRF."""
    scene = demo_scene()
    rgb = simulate_msi(scene.data, load_srf("nikon_d700").matrix_for(scene.wavelengths, scene.bands))
    rgb8 = np.clip(rgb / rgb.max() * 255, 0, 255).astype(np.uint8)
    step = max((rgb8.shape[0] - h) // max(count, 1), 1)
    return [np.ascontiguousarray(rgb8[(k * step) % (256 - h):][:h, (k * 3) % (256 - w):][:, :w])
            for k in range(count)]


def write_video(path: Path, count: int, h: int = H, w: int = W) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG"
    for image in demo_rgb8(count, h, w):
        writer.write(np.ascontiguousarray(image[:, :, ::-1]))
    writer.release()
    return path


class MJPEGCamera:
    """A network camera on 127.0.0.1: HTTP multipart JPEG at `fps`. Each connection plays the next entry
    of `sessions`, (frames, then): send `frames` frames, then "stall" (keep the connection open and send
    nothing, until the camera is shut down), "close" (drop the connection: a disconnect) or "loop" (send
    forever). Connections beyond the script are refused with HTTP 503 (the camera is gone)."""

    def __init__(self, sessions: list[tuple[int, str]], fps: float = 50.0, h: int = H, w: int = W) -> None:
        self.sessions, self.fps = sessions, fps
        self.jpegs = [cv2.imencode(".jpg", image[:, :, ::-1])[1].tobytes() for image in demo_rgb8(16, h, w)]
        self.sent = 0  # frames written whole to a connection
        self.connections: list[float] = []  # monotonic time of each connection
        self.stalled_at: float | None = None
        self.shutdown = threading.Event()
        self._lock = threading.Lock()
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                camera.serve(self)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.mjpg"

    def serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            session = len(self.connections)
            self.connections.append(time.monotonic())
        if session >= len(self.sessions):
            handler.send_error(503, "camera gone")
            return
        frames, then = self.sessions[session]
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        handler.end_headers()
        try:
            k = 0
            while (then == "loop" or k < frames) and not self.shutdown.is_set():
                jpeg = self.jpegs[self.sent % len(self.jpegs)]
                handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                    % len(jpeg) + jpeg + b"\r\n")
                handler.wfile.flush()
                with self._lock:
                    self.sent += 1
                k += 1
                time.sleep(1.0 / self.fps)
            if then == "stall":
                self.stalled_at = time.monotonic()
                self.shutdown.wait()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (it reconnected, or the stream stopped)

    def __enter__(self) -> MJPEGCamera:
        threading.Thread(target=self.server.serve_forever, name="mjpeg-camera", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown.set()
        self.server.shutdown()
        self.server.server_close()


class NoTimeoutCamera(VideoSource):
    """The same network camera opened without FFmpeg's own read timeout, as a V4L2 device or a GStreamer
    pipeline is: only VideoSource's read timeout can notice that it stalled."""

    def _capture(self):
        cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 600_000])
        if cap.isOpened():
            return cap
        cap.release()
        return None


class SlowNpySink(NpySink):
    """The real .npy sink, taking `delay` seconds longer per frame (a slow disk or network share)."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay

    def write_frame(self, dest: Path, cube: np.ndarray) -> None:
        time.sleep(self.delay)
        super().write_frame(dest, cube)


def assert_whole_frames(folder: Path, count: int, shape: tuple[int, ...]) -> list[Path]:
    """`count` frame files in `folder`, each loading whole with the right shape; no temp files left."""
    files = sorted(folder.glob("frame_*.npy"))
    assert len(files) == count, [f.name for f in files]
    for f in files:
        cube = np.load(f, allow_pickle=False)
        assert cube.shape == shape and cube.dtype == np.float32 and np.isfinite(cube).all(), f
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no half-written temp
    return files


@pytest.fixture(scope="module")
def runner():
    with TorchRunner(MODELS["cave"]) as r:
        yield r


def stream(source, runner, sink, **kwargs) -> tuple[StreamPipeline, BaseException | None]:
    sink.open(runner.out_bands, None)
    pipeline = StreamPipeline(source, runner, sink, tile=64, halo=8, batch=1, **kwargs)
    error = None
    try:
        with source:
            pipeline.run()
    except SourceError as exc:
        error = exc
    finally:
        sink.close()
    return pipeline, error


# --- training killed with SIGKILL ---------------------------------------------------------------------------

TRAIN = ["--protocol", "pavia", "--recipe", "edge", "--epochs", "3", "--batch-size", "4", "--patch-size", "8",
         "--patches-per-epoch", "600", "--tile", "32", "--threads", "1", "--no-report"]


@pytest.mark.shared_data
def test_sigkill_mid_epoch_resumes_losing_at_most_that_epoch(tmp_path, shared_data):
    from ssran_edge.checkpoint import load_training_state
    from ssran_edge.data.protocols import load_protocol
    from ssran_edge.model import build_model
    from ssran_edge.train.config import make_config
    from ssran_edge.train.loop import train

    out = tmp_path / "run"
    args = [sys.executable, "-m", "train", *TRAIN, "--data-root", str(shared_data), "--output", str(out)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history_file = out / "history.json"
    try:
        deadline = time.monotonic() + 120
        while not history_file.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # history.json is written right after the epoch's checkpoint
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        epoch_seconds = json.loads(history_file.read_text())[0]["seconds"]
        time.sleep(0.35 * epoch_seconds)  # epoch 2 is under way, a third of it done
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        print(f"SIGKILL {0.35 * epoch_seconds:.2f} s into epoch 2 (epoch 1 took {epoch_seconds:.2f} s)")
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    # on disk: the checkpoint of epoch 1, whole (loads with weights_only, into the model), nothing partial
    state = load_training_state(out / "checkpoint.pt")
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1]
    card = json.loads((out / "model.json").read_text())
    build_model(card["arch"], card["in_bands"], card["out_bands"]).load_state_dict(state["model"])
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    before = json.loads(history_file.read_text())

    resumed = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "at epoch 1" in resumed.stderr  # continued after the last completed epoch
    history = json.loads(history_file.read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[:1] == before
    final = load_training_state(out / "checkpoint.pt")

    # each epoch's randomness comes from (seed, epoch): the killed-and-resumed run ends where a run
    # that was never killed ends
    config = make_config("pavia", "edge", output=str(tmp_path / "unbroken"), epochs=3, batch_size=4, patch_size=8,
                         patches_per_epoch=600, tile=32, threads=1)
    train(config, data=load_protocol("pavia", shared_data))
    unbroken = load_training_state(tmp_path / "unbroken" / "checkpoint.pt")
    for key, value in unbroken["model"].items():
        assert torch.equal(value, final["model"][key]), key
    print("resumed at epoch 1, finished epochs 2-3; final weights bit-identical to an unbroken run")


WRITER = """
import sys, torch
from ssran_edge.checkpoint import save_training_state
big = torch.zeros(12 * 2**20)  # 48 MB: each save takes long enough to be killed in the middle
epoch = 0
while True:
    epoch += 1
    big.fill_(epoch)
    save_training_state(sys.argv[1], {"epoch": epoch, "big": big})
"""


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed meanwhile
        return 0


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_whole(tmp_path):
    from ssran_edge.checkpoint import load_training_state
    from ssran_edge.train.loop import remove_partial_files

    target = tmp_path / "checkpoint.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO, stderr=subprocess.PIPE)
    partial: list[Path] = []
    try:
        inodes: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if target.exists():
                inodes.add(target.stat().st_ino)
            partial = [p for p in tmp_path.glob(".checkpoint.pt.*.tmp") if 0 < size(p) < 24 * 2**20]
            if len(inodes) >= 2 and partial:
                os.kill(proc.pid, signal.SIGKILL)  # mid-write: the temp file is less than half filled
                break
            time.sleep(0.001)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    state = load_training_state(target)  # the final name is always a whole checkpoint
    assert state["epoch"] >= 2 and torch.equal(state["big"], torch.full_like(state["big"], state["epoch"]))
    left = sorted(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert left  # what the kill interrupted stays under a hidden temp name...
    print(f"SIGKILL during save {state['epoch'] + 1}: {target.name} = save {state['epoch']}, whole "
          f"({target.stat().st_size / 2**20:.1f} MB); partial temp {left[0].stat().st_size / 2**20:.1f} MB")
    assert remove_partial_files(tmp_path) == left and not list(tmp_path.glob(".*.tmp"))  # ...until a run starts
    assert load_training_state(target)["epoch"] == state["epoch"]


# --- a camera that stalls or disconnects ------------------------------------------------------------------------

@pytest.mark.parametrize("fault,sessions,frames", [
    ("disconnect", [(8, "close")], 8),                      # the link drops and the camera never comes back
    ("stall", [(8, "stall")], 8),                           # frames stop, the connection stays open
    ("stall, then reconnect", [(6, "stall"), (5, "close")], 11),  # back after one reconnect, then gone
])
def test_camera_fault_mid_stream_every_read_frame_written(fault, sessions, frames, runner, tmp_path):
    with MJPEGCamera(sessions) as camera:
        source = VideoSource(camera.url, retries=2, backoff=0.05, max_backoff=0.1, read_timeout=0.5)
        assert source.live
        pipeline, error = stream(source, runner, NpySink(tmp_path / "out"))
    assert error is not None and "stopped delivering frames after 2 retries" in str(error)
    assert "\n" not in str(error) and "127.0.0.1" in str(error)
    stats = pipeline.stats
    print(f"camera {fault}: sent {camera.sent}, written {stats.frames}, dropped {stats.dropped}, "
          f"connections {len(camera.connections)}, {stats.seconds:.2f} s")
    assert camera.sent == frames and len(camera.connections) == len(sessions) + 2  # + 2 refused retries
    assert stats.frames + stats.dropped == frames  # every frame the camera sent: written, or dropped and counted
    assert_whole_frames(tmp_path / "out", stats.frames, (H, W, 31))


def test_a_stalled_camera_without_a_backend_timeout_is_cut_by_the_read_timeout(runner, tmp_path, caplog):
    with MJPEGCamera([(5, "stall"), (4, "close")]) as camera, \
            caplog.at_level(logging.WARNING, logger="ssran_edge.runtime"):
        source = NoTimeoutCamera(camera.url, retries=1, backoff=0.05, read_timeout=0.6)
        pipeline, error = stream(source, runner, NpySink(tmp_path / "out"))
        assert camera.stalled_at is not None and len(camera.connections) >= 2
        detected = camera.connections[1] - camera.stalled_at  # stall noticed, then a reconnect
    print(f"stall without a backend timeout: reconnected {detected:.2f} s after the stall (timeout 0.6 s)")
    assert "read timeout" in caplog.text and "camera stalled" in caplog.text
    assert 0.5 <= detected < 0.6 + 0.05 + 2.0
    assert error is not None and "stopped delivering frames" in str(error)
    assert pipeline.stats.frames + pipeline.stats.dropped == camera.sent == 9
    assert_whole_frames(tmp_path / "out", pipeline.stats.frames, (H, W, 31))


def test_a_live_video_file_that_disappears_mid_stream(runner, tmp_path):
    video = write_video(tmp_path / "cam.avi", 6)
    source = VideoSource(str(video), live=True, retries=2, backoff=0.02)
    source.open()
    video.unlink()  # the open capture still reads what it holds; every reconnect now fails
    pipeline, error = stream(source, runner, NpySink(tmp_path / "out"))
    assert error is not None and "stopped delivering frames after 2 retries" in str(error)
    # A live source reads as fast as the file allows and may drop the oldest waiting frame when
    # inference falls behind; every frame is either written whole or counted as dropped.
    assert pipeline.stats.frames + pipeline.stats.dropped == 6 and pipeline.stats.frames >= 1
    assert_whole_frames(tmp_path / "out", pipeline.stats.frames, (H, W, 31))


# --- a slow sink -------------------------------------------------------------------------------------------------

def peak_mb(run, *args, **kwargs) -> tuple[float, object]:
    """Peak of Python-allocated memory (numpy arrays included) while `run(*args, **kwargs)` runs, in MB."""
    tracemalloc.start()
    try:
        result = run(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1] / 2**20, result
    finally:
        tracemalloc.stop()


FIGURES: dict[str, object] = {}  # printed for docs/faults.md (pytest -s)


def test_slow_sink_live_camera_drops_and_memory_stays_flat(runner, tmp_path):
    cube_mb = H * W * 31 * 4 / 2**20
    peaks, results = {}, {}
    for n in (20, 60):
        with MJPEGCamera([(0, "loop")], fps=100) as camera:
            source = VideoSource(camera.url, retries=0, read_timeout=2.0)
            sink = SlowNpySink(tmp_path / f"live{n}", delay=0.05)
            peaks[n], (pipeline, error) = peak_mb(stream, source, runner, sink, queue_size=2, max_frames=n)
        assert error is None
        stats = pipeline.stats
        results[n] = (stats.frames, stats.dropped)
        assert stats.dropped > 0  # the sink cannot keep up with a 100 fps camera: the oldest frames go
        assert stats.frames + stats.dropped == n  # each frame read: written or counted as dropped
        files = assert_whole_frames(tmp_path / f"live{n}", stats.frames, (H, W, 31))
        indices = [int(f.stem.split("_")[1]) for f in files]
        assert indices == sorted(indices) and indices[-1] == n - 1  # the newest frame is kept
    FIGURES["live"] = {"peak_mb": peaks, "written_dropped": results, "cube_mb": cube_mb}
    print("slow sink, live:", FIGURES["live"])
    assert peaks[60] < peaks[20] * 1.25 + 1.0  # 3x the frames, same memory
    assert peaks[60] < 0.5 * 60 * cube_mb  # far below holding every output


class GatedNpySink(NpySink):
    """The real .npy sink, writing nothing until `ready()` (a sink that stalls, then recovers)."""

    ready = staticmethod(lambda: True)

    def write_frame(self, dest: Path, cube: np.ndarray) -> None:
        deadline = time.monotonic() + 60
        while not self.ready() and time.monotonic() < deadline:
            time.sleep(0.005)
        super().write_frame(dest, cube)


def test_slow_sink_file_source_never_drops_and_memory_stays_flat(runner, tmp_path):
    video = write_video(tmp_path / "clip.avi", 60)
    cube_mb = H * W * 31 * 4 / 2**20
    peaks, control = {}, {}
    for n in (20, 60):
        source = VideoSource(str(video))
        assert not source.live
        sink = SlowNpySink(tmp_path / f"file{n}", delay=0.03)
        peaks[n], (pipeline, error) = peak_mb(stream, source, runner, sink, queue_size=2, max_frames=n)
        assert error is None
        assert pipeline.stats.frames == n and pipeline.stats.dropped == 0
        files = assert_whole_frames(tmp_path / f"file{n}", n, (H, W, 31))
        assert [int(f.stem.split("_")[1]) for f in files] == list(range(n))

        # the control: unbounded queues (queue.Queue(maxsize=0)) and a sink that writes nothing until every
        # frame is inferred. The same measurement then sees every output cube held in memory at once.
        gated = GatedNpySink(tmp_path / f"unbounded{n}")
        pipeline = StreamPipeline(VideoSource(str(video)), runner, gated, tile=64, halo=8, batch=1, queue_size=0,
                                  max_frames=n)
        gated.ready = lambda p=pipeline, n=n: len(p.stats.stage_seconds["infer"]) >= n
        gated.open(runner.out_bands, None)
        control[n], _ = peak_mb(pipeline.run)
        gated.close()
        assert pipeline.stats.frames == n
    FIGURES["file"] = {"peak_mb": peaks, "unbounded_control_peak_mb": control, "cube_mb": cube_mb}
    print("slow sink, file:", FIGURES["file"])
    assert peaks[60] < peaks[20] * 1.25 + 1.0  # 3x the frames, same memory
    assert peaks[60] < 0.5 * 60 * cube_mb
    assert control[20] > 20 * cube_mb and control[60] > 60 * cube_mb > 10 * peaks[60]  # growth is visible


# --- SIGINT / SIGTERM during `ssran-edge run` --------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_cube(tmp_path_factory) -> Path:
    scene = demo_scene()
    path = tmp_path_factory.mktemp("cube") / "crop.npz"
    np.savez(path, cube=scene.data[:H, :W], wavelengths_nm=scene.wavelengths)
    return path


def run_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ssran_edge.cli", "run", *args, "--backend", "torch"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_files(proc: subprocess.Popen, folder: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and len(list(folder.glob("frame_*.npy"))) < count:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    assert len(list(folder.glob("frame_*.npy"))) >= count


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_stream_clean_stop_outputs_whole(signum, code, small_cube, tmp_path):
    out = tmp_path / "frames"
    proc = run_cli(f"replay:{small_cube}", "--srf", "nikon_d700", "--frames", "5000", "--tile", "64",
                   "--output", str(out), "--summary-json", str(tmp_path / "s.json"))
    try:
        wait_for_files(proc, out, 3)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted_by"] == signal.Signals(signum).name and 3 <= summary["frames"] < 5000
    assert summary["dropped"] == 0  # a replayed file never drops
    assert_whole_frames(out, summary["frames"], (H, W, 31))  # every frame read is on disk, whole
    print(f"{signal.Signals(signum).name}: exit {proc.returncode}, {summary['frames']} frames whole on disk")
    assert "Traceback" not in stderr


def test_sigterm_while_the_camera_is_stalled_stops_at_once(tmp_path):
    out = tmp_path / "frames"
    with MJPEGCamera([(5, "stall")]) as camera:
        # a 60 s read timeout: without the interrupt, the stop would wait for it
        proc = run_cli(f"camera_stream:{camera.url}", "--read-timeout", "60", "--tile", "64", "--output", str(out),
                       "--summary-json", str(tmp_path / "s.json"))
        try:
            wait_for_files(proc, out, 5)
            deadline = time.monotonic() + 30
            while camera.stalled_at is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert camera.stalled_at is not None
            time.sleep(0.3)  # the reader is blocked in the stalled read
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
            stopped_after = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143, stderr
    FIGURES["sigterm_stalled_s"] = stopped_after
    print(f"SIGTERM with a stalled camera: stopped after {stopped_after:.2f} s")
    assert stopped_after < 10
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] + summary["dropped"] == 5 and summary["interrupted_by"] == "SIGTERM"
    assert_whole_frames(out, summary["frames"], (H, W, 31))
    assert "Traceback" not in stderr
