"""The stream pipeline and `ssran-edge run` with real parts: OpenCV video files, ONNX Runtime,
real files on disk, signals to a real subprocess."""

import json
import signal
import subprocess
import sys
import threading
import time

import colour
import cv2
import numpy as np
import pytest

from ssran_edge.assets import MODELS, demo_scene
from ssran_edge.errors import DataError
from ssran_edge.runtime.capture import VideoSource
from ssran_edge.runtime.frames import Frame, Sink
from ssran_edge.runtime.pipeline import StreamPipeline
from ssran_edge.runtime.runners import TorchRunner
from ssran_edge.runtime.sinks import NpySink
from ssran_edge.runtime.sources import WindowedSceneSource
from ssran_edge.srf import load_srf, simulate_msi
from ssran_edge.tiling import run_tiled
from tests.conftest import REPO


def rgb_frames(count: int, size: int = 64) -> list[np.ndarray]:
    scene = demo_scene()
    rgb = simulate_msi(scene.data, load_srf("nikon_d700").matrix_for(scene.wavelengths, 31))
    rgb = rgb / rgb.max()
    return [np.ascontiguousarray(rgb[k * 8: k * 8 + size, k * 8: k * 8 + size]) for k in range(count)]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    """A real MJPG .avi written from CAVE frames, read back through OpenCV in the tests."""
    path = tmp_path_factory.mktemp("video") / "cave.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    assert writer.isOpened()
    for frame in rgb_frames(6):
        writer.write(cv2.cvtColor((frame * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def runner():
    with TorchRunner(MODELS["cave"]) as r:
        yield r


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "ssran_edge.cli", "run", *args], cwd=REPO, capture_output=True,
                          text=True, **kwargs)


def test_video_file_through_the_pipeline_writes_every_frame(video, runner, tmp_path):
    sink = NpySink(tmp_path / "out")
    sink.open(31, list(range(400, 701, 10)))
    stats = StreamPipeline(VideoSource(video), runner, sink, tile=32, halo=8, batch=4).run()
    sink.close()
    assert stats.frames == 6 and stats.dropped == 0
    files = sorted((tmp_path / "out").glob("frame_*.npy"))
    assert len(files) == 6
    # each cube is what the tiled model gives for the decoded frame: RGB order, sRGB codes -> linear
    capture = cv2.VideoCapture(video)
    ok, bgr = capture.read()
    first = colour.models.eotf_sRGB(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) / 255).astype(np.float32)
    np.testing.assert_allclose(np.load(files[0]), run_tiled(runner.infer, first, 31, 32, 8, 4), atol=1e-5)
    summary = stats.summary()
    assert summary["infer_ms_p50"] > 0 and summary["mpx_per_s"] > 0 and summary["runner_seconds"] > 0


class SlowSink(Sink):
    """A real sink (frames kept in memory) that takes `delay` seconds per frame."""

    def __init__(self, delay: float):
        self.delay, self.frames = delay, []

    def write(self, frame: Frame, cube: np.ndarray) -> None:
        time.sleep(self.delay)
        self.frames.append(frame.index)


def test_live_sources_drop_oldest_files_never_drop(video, runner):
    live = VideoSource(video, live=True, retries=0, backoff=0.01)
    slow = SlowSink(0.3)
    try:
        StreamPipeline(live, runner, slow, tile=32, queue_size=1).run()
    except Exception as exc:  # the live "camera" ends by failing its retries: that is how a camera stops
        assert "stopped delivering frames" in str(exc)
    assert slow.frames == sorted(slow.frames)  # order kept
    file_sink = SlowSink(0.3)
    stats = StreamPipeline(VideoSource(video), runner, file_sink, tile=32, queue_size=1).run()
    assert stats.dropped == 0 and file_sink.frames == list(range(6))


def test_live_source_falls_behind_and_drops(runner, tmp_path):
    writer_path = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(writer_path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 32))
    for k in range(40):
        writer.write(np.full((32, 32, 3), k * 5, np.uint8))
    writer.release()
    slow = SlowSink(0.2)
    pipeline = StreamPipeline(VideoSource(str(writer_path), live=True, retries=0), runner, slow, tile=32,
                              queue_size=1)
    with pytest.raises(Exception, match="stopped delivering frames"):
        pipeline.run()
    assert pipeline.stats.dropped > 0
    assert len(slow.frames) + pipeline.stats.dropped <= 40


def test_band_mismatch_on_first_frame_is_one_error(runner, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    np.save(folder / "a.npy", np.random.rand(16, 16, 4).astype(np.float32))
    from ssran_edge.runtime.sources import FolderSource

    with pytest.raises(DataError, match="expected 3 bands, got 4"):
        StreamPipeline(FolderSource(folder), runner, None, tile=32).run()


def test_large_scene_windows_stitch_into_one_cube(runner, tmp_path):
    scene = np.concatenate([np.concatenate(rgb_frames(1, 64) * 3, axis=1)] * 2, axis=0)[:100, :150]
    np.save(tmp_path / "scene.npy", scene)
    from ssran_edge.data.readers import read_cube
    from ssran_edge.runtime.sinks import EnviSink

    sink = EnviSink(tmp_path / "scene_hsi.hdr", large_scene=True)
    sink.open(31, list(range(400, 701, 10)))
    source = WindowedSceneSource(tmp_path / "scene.npy", window=64, halo=8)
    StreamPipeline(source, runner, sink, tile=128, halo=8).run()  # a tile holds a whole window
    sink.close()
    out = read_cube(tmp_path / "scene_hsi.hdr").data
    assert out.shape == (100, 150, 31)
    # the window at the origin: the model on that window (with its halo), core kept
    window = scene[:72, :72]
    expected = run_tiled(runner.infer, window, 31, tile=128, halo=0)[:64, :64]
    np.testing.assert_allclose(out[:64, :64], expected, atol=1e-5)


def test_cli_default_camera_stream_reports_quality(tmp_path):
    result = run_cli("--frames", "2", "--backend", "torch", "--output", str(tmp_path / "o.zarr"),
                     "--summary-json", str(tmp_path / "s.json"), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "backend: torch-cpu" in result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 2 and summary["dropped"] == 0
    assert summary["psnr_vs_reference"] > 30
    import zarr

    arr = zarr.open_array(str(tmp_path / "o.zarr"), path="hsi", mode="r")
    assert arr.shape == (2, 256, 256, 31) and arr.attrs["frames_complete"] == 2


def test_sigint_mid_stream_leaves_only_whole_frames(tmp_path):
    out = tmp_path / "frames"
    proc = subprocess.Popen([sys.executable, "-m", "ssran_edge.cli", "run", "replay:", "--frames", "400",
                             "--backend", "torch", "--tile", "64", "--output", str(out),
                             "--summary-json", str(tmp_path / "s.json")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("frame_*.npy"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["interrupted_by"] == "SIGINT" and 2 <= summary["frames"] < 400
    files = sorted(out.glob("frame_*.npy"))
    assert len(files) == summary["frames"]  # every frame read was finished and written
    for f in files:
        assert np.load(f).shape == (256, 256, 31)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written temp left
    assert "Traceback" not in stderr


def test_source_failing_mid_stream_stops_with_one_line(video, tmp_path):
    result = run_cli("camera_stream:" + video, "--backend", "torch", "--tile", "32", "--output", str(tmp_path / "o"),
                     timeout=300)
    assert result.returncode == 0  # a file ends normally
    folder = tmp_path / "bad"
    folder.mkdir()
    np.save(folder / "a.npy", np.random.rand(16, 16, 3).astype(np.float32))
    (folder / "b.npy").write_bytes(b"\x93NUMPY broken")
    result = run_cli(str(folder), "--backend", "torch", "--tile", "32", "--output", str(tmp_path / "o2"), timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("ssran-edge: error:")
    assert "Traceback" not in result.stderr
    assert len(list((tmp_path / "o2").glob("frame_*.npy"))) == 1  # the good frame before the failure is kept


def test_threads_are_gone_after_a_run(video, runner):
    before = threading.active_count()
    StreamPipeline(VideoSource(video), runner, None, tile=32).run()
    assert threading.active_count() == before


def test_stream_benchmark_measures_bare_and_pipeline():
    from ssran_edge.bench.stream import demo_frames, measure

    frames = demo_frames(96, 2)
    assert frames[0].shape == (96, 96, 3) and not np.array_equal(frames[0], frames[1])
    row = measure(TorchRunner(MODELS["cave"]), frames, tile=64, halo=8, batch=4)
    assert row["bare_s"] > 0 and row["stream_s"] > 0 and np.isfinite(row["overhead"])


def test_steady_state_excludes_filling_the_pipeline(video, runner):
    """A sink slow on its first frame only (a cold disk, say) is a start-up cost: the steady-state rate
    (frames 2..n between the first and last write) does not see it; the whole-run rate does."""

    class ColdStartSink(SlowSink):
        def write(self, frame: Frame, cube: np.ndarray) -> None:
            if frame.index == 0:
                time.sleep(self.delay)
            self.frames.append(frame.index)

    stats = StreamPipeline(VideoSource(video), runner, ColdStartSink(1.0), tile=32, queue_size=8).run()
    summary = stats.summary()
    assert stats.frames == 6 and len(stats.write_intervals) == 5 and len(stats.runner_per_frame) == 6
    assert summary["steady_fps"] > summary["fps"] * 1.3
    assert summary["steady_overhead_vs_runner"] < summary["overhead_vs_runner"]


def test_stage_window_keeps_totals_of_all_and_percentiles_of_the_recent():
    from ssran_edge.runtime.stats import Window

    window = Window(size=100)
    for value in range(1000):
        window.append(float(value))
    assert len(window) == 1000 and window.total == sum(range(1000)) and window.mean == pytest.approx(499.5)
    assert len(window.recent) == 100 and window.percentile(50) == pytest.approx(949.5)  # the last 100 only
    young = Window(size=100)
    for value in (100.0, 1.0, 1.0, 1.0):
        young.append(value)
    assert young.percentile(100, skip_first=True) == 1.0 and young.percentile(100) == 100.0


@pytest.mark.parametrize("name", ["pred.npy", "pred.hdr"])
def test_a_single_frame_source_writes_exactly_the_file_asked(tmp_path, name):
    msi = rgb_frames(1, size=40)[0]
    np.save(tmp_path / "scene.npy", msi)
    result = run_cli(str(tmp_path / "scene.npy"), "--output", str(tmp_path / "out" / name), "--backend", "torch")
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == (["pred.npy"] if name.endswith(".npy") else ["pred.hdr", "pred.img"])
    if name.endswith(".npy"):
        assert np.load(tmp_path / "out" / name).shape == (40, 40, 31)
    many = run_cli("replay:", "--frames", "2", "--output", str(tmp_path / "many" / "pred.npy"), "--backend", "torch")
    assert many.returncode == 0, many.stderr
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["pred_000000.npy", "pred_000001.npy"]
