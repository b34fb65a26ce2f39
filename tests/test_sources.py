"""Frame sources on real files through real OpenCV / numpy / spectral: video written here with
cv2.VideoWriter, PNG/TIFF/.npy/ENVI frame folders, windowed large scenes, replayed cubes."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from ssran_edge.assets import demo_scene  # noqa: E402
from ssran_edge.errors import SourceError, SSRANEdgeError  # noqa: E402
from ssran_edge.runtime import sources  # noqa: E402
from ssran_edge.runtime.capture import VideoSource  # noqa: E402
from ssran_edge.runtime.sources import (  # noqa: E402
    FileSource,
    FolderSource,
    ReplaySource,
    WindowedSceneSource,
    open_source,
)
from ssran_edge.srf import load_srf, simulate_msi  # noqa: E402

H, W = 48, 64  # small frames: the CI box has two busy cores
RGB_MARK = (220, 110, 20)  # a frame that is bright red, dark blue


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def demo_rgb() -> np.ndarray:
    """The bundled scene through the Nikon D700 SRF, as uint8 RGB frames' source."""
    cube = demo_scene()
    rgb = simulate_msi(cube.data, load_srf("nikon_d700").matrix_for(cube.wavelengths, cube.bands))
    return rgb


def write_video(path: Path, demo_rgb: np.ndarray, frames: int = 5) -> Path:
    """A real video: frames crops of the demo RGB scene, then one constant RGB_MARK frame. MJPG/.avi,
    falling back to other codecs this OpenCV build may have."""
    rgb8 = np.clip(demo_rgb / demo_rgb.max() * 255, 0, 255).astype(np.uint8)
    images = [rgb8[8 * k:8 * k + H, 8 * k:8 * k + W] for k in range(frames - 1)]
    images.append(np.broadcast_to(np.array(RGB_MARK, np.uint8), (H, W, 3)).copy())
    for fourcc in ("MJPG", "XVID", "FFV1", "mp4v"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (W, H))
        if writer.isOpened():
            for image in images:
                writer.write(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV writes BGR
            writer.release()
            return path
        writer.release()
    pytest.fail("no video codec available in this OpenCV build (tried MJPG, XVID, FFV1, mp4v)")


@pytest.fixture
def video(tmp_path: Path, demo_rgb: np.ndarray) -> Path:
    return write_video(tmp_path / "clip.avi", demo_rgb)


# --- video ---------------------------------------------------------------------------------------------

def test_video_file_reads_rgb_srgb_codes_then_ends(video: Path) -> None:
    source = open_source(str(video))
    assert isinstance(source, VideoSource) and source.live is False
    with source:
        frames = list(source)
        assert source.read() is None  # stays ended
    assert len(frames) == 5
    assert [f.index for f in frames] == list(range(5))
    for frame in frames:
        # the codes as the codec delivers them, sRGB-encoded: the stream decodes them to linear
        assert frame.data.shape == (H, W, 3) and frame.data.dtype == np.uint8 and frame.encoding == "srgb"
        assert "pos_msec" in frame.meta
    assert frames[0].timestamp <= frames[-1].timestamp
    mark = frames[-1].data.mean(axis=(0, 1)) / 255
    assert mark[0] > mark[2] + 0.5  # red stays band 0 after OpenCV's BGR
    np.testing.assert_allclose(mark, np.array(RGB_MARK) / 255, atol=0.04)
    assert source.bands == 3


def test_video_missing_or_garbage_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as missing:
        VideoSource(tmp_path / "absent.mp4").open()
    assert "absent.mp4" in one_line(missing)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"this is not a video" * 50)
    with pytest.raises(SourceError) as bad:
        list(open_source(str(garbage)))
    assert "garbage.avi" in one_line(bad)
    assert issubclass(SourceError, SSRANEdgeError)


def test_live_source_reconnects_after_a_failed_read(video: Path) -> None:
    # A file treated as live: the read after its end fails, reconnecting re-opens it from frame 0.
    with VideoSource(str(video), live=True, retries=2, backoff=0.01) as source:
        first = [source.read() for _ in range(5)]
        again = source.read()
    assert again is not None and again.index == 5
    np.testing.assert_allclose(again.data, first[0].data, atol=1e-6)


def test_live_source_gives_up_after_retries_with_backoff(video: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = VideoSource(str(video), live=True, retries=3, backoff=0.04, max_backoff=0.06)
    source.open()
    video.unlink()  # the open capture keeps reading; re-opening now fails
    for _ in range(5):
        assert source.read() is not None
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ssran_edge.runtime"), pytest.raises(SourceError) as dead:
        source.read()
    elapsed = time.monotonic() - started
    message = one_line(dead)
    assert "stopped delivering frames after 3 retries" in message and "clip.avi" in message
    delays = [float(d) for d in re.findall(r"retry \d/3 in ([0-9.]+) s", caplog.text)]
    assert delays == [0.04, 0.06, 0.06]  # doubled, capped at max_backoff
    assert elapsed >= sum(delays) - 0.005
    source.close()


def test_video_spec_forms() -> None:
    camera = VideoSource("0")
    assert camera.spec == 0 and camera.live is True
    stream = open_source("rtsp://admin:secret@10.0.0.7:554/stream1")
    assert isinstance(stream, VideoSource) and stream.live and "secret" not in stream.name
    pipeline = open_source("videotestsrc ! videoconvert ! appsink")
    assert isinstance(pipeline, VideoSource) and pipeline.api == cv2.CAP_GSTREAMER and pipeline.live
    if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        with pytest.raises(SourceError) as no_gst:
            pipeline.open()
        assert "GStreamer" in one_line(no_gst)


# --- folders and files ---------------------------------------------------------------------------------

def write_envi(path_hdr: Path, cube: np.ndarray, interleave: str = "bsq") -> Path:
    import spectral.io.envi as envi

    envi.save_image(str(path_hdr), cube, interleave=interleave, ext=".img", force=True,
                    metadata={"wavelength": [450.0, 550.0, 650.0][: cube.shape[2]], "wavelength units": "nm"})
    return path_hdr


def test_folder_of_png_npy_envi_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    png16 = rng.integers(0, 65535, (12, 10, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a_frame.png"), png16[:, :, ::-1])  # stored BGR, read back RGB
    npy = rng.random((12, 10, 3), dtype=np.float32)
    np.save(tmp_path / "b_frame.npy", npy)
    envi_cube = rng.random((12, 10, 3)).astype(np.float32)
    write_envi(tmp_path / "c_frame.hdr", envi_cube)
    (tmp_path / "notes.txt").write_text("skipped")
    source = open_source(str(tmp_path))
    assert isinstance(source, FolderSource) and not source.live
    frames = list(source)
    assert len(frames) == 3 and source.bands == 3
    np.testing.assert_array_equal(frames[0].data, png16)  # 16-bit codes kept whole, RGB order
    assert [f.encoding for f in frames] == ["srgb", "linear", "linear"]
    np.testing.assert_array_equal(frames[1].data, npy)
    np.testing.assert_array_equal(frames[2].data, envi_cube)
    assert frames[2].meta["path"].endswith("c_frame.hdr")


def test_folder_multipage_tiff_is_one_band_per_page(tmp_path: Path) -> None:
    pages = [np.full((6, 5), 1000 * (k + 1), np.uint16) for k in range(4)]
    assert cv2.imwritemulti(str(tmp_path / "f.tif"), pages)
    grey8 = np.full((8, 8), 51, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey8)
    source = FolderSource(tmp_path)
    tiff = source.read()
    assert tiff is not None and tiff.data.shape == (6, 5, 4) and tiff.encoding == "linear"  # a band stack
    np.testing.assert_array_equal(tiff.data[0, 0], [1000 * (k + 1) for k in range(4)])
    with pytest.raises(SourceError) as mismatch:  # the grey PNG is read as RGB (R = G = B), the TIFF has 4
        source.read()
    assert "g.png" in one_line(mismatch) and "4" in str(mismatch.value)


def test_folder_unreadable_file_names_it(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 4, 3), np.float32))
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    source = FolderSource(tmp_path)
    assert source.read() is not None
    with pytest.raises(SourceError) as bad:
        source.read()
    assert "b.png" in one_line(bad)
    with pytest.raises(SourceError):
        FolderSource(tmp_path / "nowhere")


def test_file_source_is_one_frame(tmp_path: Path) -> None:
    cube = np.random.default_rng(1).random((8, 9, 4), dtype=np.float32)
    np.save(tmp_path / "msi.npy", cube)
    source = open_source(str(tmp_path / "msi.npy"))
    assert isinstance(source, FileSource)
    frames = list(source)
    assert len(frames) == 1 and source.bands == 4
    np.testing.assert_array_equal(frames[0].data, cube)
    envi_source = open_source(str(write_envi(tmp_path / "msi.hdr", cube[:, :, :3])))
    assert isinstance(envi_source, FileSource)
    envi_source.open()
    assert envi_source.wavelengths == [450.0, 550.0, 650.0]
    np.save(tmp_path / "nan.npy", np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(SourceError) as nan:
        FileSource(tmp_path / "nan.npy").read()
    assert "NaN" in one_line(nan)


# --- windowed scenes -----------------------------------------------------------------------------------

def check_tiling(source: WindowedSceneSource, scene: np.ndarray, window: int, halo: int) -> int:
    rebuilt = np.full(scene.shape, np.nan, np.float32)
    owned = np.zeros(scene.shape[:2], np.int32)
    count = 0
    for frame in source:
        row0, col0, height, width = frame.region
        assert (height, width) == scene.shape[:2]
        r0, r1, c0, c1 = frame.core
        rows, cols = frame.data.shape[:2]
        np.testing.assert_array_equal(frame.data, scene[row0:row0 + rows, col0:col0 + cols])
        assert 0 <= r0 <= halo and 0 <= c0 <= halo and rows - r1 <= halo and cols - c1 <= halo
        assert r1 - r0 <= window and c1 - c0 <= window
        rebuilt[row0 + r0:row0 + r1, col0 + c0:col0 + c1] = frame.data[r0:r1, c0:c1]
        owned[row0 + r0:row0 + r1, col0 + c0:col0 + c1] += 1
        count += 1
    assert (owned == 1).all()  # cores tile the scene exactly, no overlap
    np.testing.assert_array_equal(rebuilt, scene)
    return count


def test_windowed_npy_scene_cores_tile_exactly(tmp_path: Path) -> None:
    scene = np.random.default_rng(2).random((300, 250, 4), dtype=np.float32)
    np.save(tmp_path / "big.npy", scene)
    source = open_source(str(tmp_path / "big.npy"), window=128)
    assert isinstance(source, WindowedSceneSource) and source.halo == 8
    with source:
        assert source.bands == 4 and source.windows == 3 * 2
        assert check_tiling(source, scene, 128, 8) == 6


def test_windowed_envi_scene_and_nan_window(tmp_path: Path) -> None:
    scene = np.random.default_rng(3).random((40, 30, 3)).astype(np.float32)
    hdr = write_envi(tmp_path / "scene.hdr", scene, interleave="bil")
    source = WindowedSceneSource(hdr, window=16, halo=3)
    assert check_tiling(source, scene, 16, 3) == 3 * 2
    assert source.wavelengths == [450.0, 550.0, 650.0]
    scene[35, 25, 1] = np.nan  # lies only in the last window (and not in any other's halo)
    np.save(tmp_path / "nan.npy", scene)
    source = WindowedSceneSource(tmp_path / "nan.npy", window=16, halo=3)
    for _ in range(5):
        source.read()
    with pytest.raises(SourceError) as nan:
        source.read()
    assert "window 5" in one_line(nan) and "NaN" in str(nan.value)


def test_large_file_switches_to_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "scene.npy", np.zeros((20, 20, 3), np.float32))
    assert isinstance(open_source(str(tmp_path / "scene.npy")), FileSource)
    monkeypatch.setattr(sources, "LARGE_SCENE_BYTES", 1000)
    assert isinstance(open_source(str(tmp_path / "scene.npy")), WindowedSceneSource)


# --- replay --------------------------------------------------------------------------------------------

def test_replay_default_is_the_demo_scene_through_nikon() -> None:
    source = open_source("camera_stream", frames=3)
    assert isinstance(source, ReplaySource) and not source.live
    assert source.wavelengths is None and source.band_names == load_srf("nikon_d700").band_names
    frames = list(source)
    assert len(frames) == 3 and [f.index for f in frames] == [0, 1, 2]
    assert frames[0].data.shape == (256, 256, 3) and source.reference.shape == (256, 256, 31)
    np.testing.assert_array_equal(frames[0].data, frames[2].data)
    frames[0].data[:] = 0  # a consumer writing in place does not touch later frames
    assert frames[1].data.max() > 0
    single = list(ReplaySource(None, None))
    assert len(single) == 1


def test_replay_of_a_cube_file(tmp_path: Path) -> None:
    cube = demo_scene()
    np.savez(tmp_path / "cube.npz", cube=cube.data[:16, :16], wavelengths_nm=cube.wavelengths)
    source = open_source(f"replay:{tmp_path / 'cube.npz'}", srf="nikon_d700", frames=2)
    assert isinstance(source, ReplaySource)
    frames = list(source)
    expected = simulate_msi(cube.data[:16, :16], load_srf("nikon_d700").matrix_for(cube.wavelengths, 31))
    assert len(frames) == 2
    np.testing.assert_allclose(frames[1].data, expected, rtol=1e-6)
    np.save(tmp_path / "no_wavelengths.npy", cube.data[:8, :8])
    with pytest.raises(SourceError) as no_wl:  # a curve SRF needs the cube's band centres
        ReplaySource(tmp_path / "no_wavelengths.npy", "nikon_d700").read()
    assert "wavelengths" in one_line(no_wl)
    with pytest.raises(SourceError):
        ReplaySource(None, "no_such_srf")


# --- dispatch ------------------------------------------------------------------------------------------

def test_open_source_dispatch(tmp_path: Path, video: Path) -> None:
    assert isinstance(open_source("0"), VideoSource)
    assert isinstance(open_source("http://camera.local/mjpg"), VideoSource)
    named = open_source(f"camera_stream:{video}")
    assert isinstance(named, VideoSource) and named.live is False and len(list(named)) == 5
    assert isinstance(open_source(str(video)), VideoSource)
    assert isinstance(open_source(str(tmp_path)), FolderSource)
    assert isinstance(open_source("replay:"), ReplaySource)
    for bad in ("frames.xyz", "", str(tmp_path / "missing.npy"), "camera_stream:"):
        with pytest.raises(SourceError) as unknown:
            open_source(bad)
        one_line(unknown)
    with pytest.raises(SourceError) as listed:
        open_source("frames.xyz")
    assert "camera_stream" in str(listed.value) and ".npy" in str(listed.value)
