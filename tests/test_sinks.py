"""Output sinks on real files: round trips, windows of a large scene, interrupted runs, unwritable
destinations, a full disk (RLIMIT_FSIZE in a subprocess) and the PNG previews."""

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import spectral.io.envi as envi
import zarr

from ssran_edge.errors import SinkError
from ssran_edge.runtime.frames import Frame
from ssran_edge.runtime.preview import Preview
from ssran_edge.runtime.sinks import EnviSink, NpySink, ZarrSink, open_sink

REPO = Path(__file__).resolve().parents[1]
BANDS = 7
WAVELENGTHS = [float(w) for w in np.linspace(400, 700, BANDS)]


def _cubes(n=3, h=24, w=18, bands=BANDS, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((h, w, bands), dtype=np.float32) for _ in range(n)]


def _stream(sink, cubes, bands=BANDS, wavelengths=WAVELENGTHS):
    sink.open(bands, wavelengths)
    for i, cube in enumerate(cubes):
        sink.write(Frame(i, cube[:, :, :3], timestamp=0.5 * i), cube)
    sink.close()


def _visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _windows(scene: np.ndarray, tile=128, halo=8, seed=1) -> list[tuple[Frame, np.ndarray]]:
    """Windows of a scene, as a tiling source would cut them: core + halo clipped at the border; the
    'model' is the identity, so each window's cube is its data."""
    h, w, _ = scene.shape
    out = []
    for r in range(0, h, tile):
        for c in range(0, w, tile):
            r1, c1 = min(r + tile, h), min(c + tile, w)
            wr0, wr1, wc0, wc1 = max(r - halo, 0), min(r1 + halo, h), max(c - halo, 0), min(c1 + halo, w)
            data = scene[wr0:wr1, wc0:wc1].copy()
            frame = Frame(len(out), data, region=(wr0, wc0, h, w), core=(r - wr0, r1 - wr0, c - wc0, c1 - wc0))
            out.append((frame, data))
    random.Random(seed).shuffle(out)
    return out


# --- stream round trips -------------------------------------------------------------------------------

def test_npy_round_trip(tmp_path):
    cubes = _cubes()
    _stream(NpySink(tmp_path / "out"), cubes)
    assert _visible(tmp_path / "out") == {f"frame_{i:06d}.npy" for i in range(3)}
    for i, cube in enumerate(cubes):
        back = np.load(tmp_path / "out" / f"frame_{i:06d}.npy")
        assert back.dtype == np.float32 and np.array_equal(back, cube)


def test_envi_round_trip_with_wavelengths(tmp_path):
    cubes = _cubes()
    _stream(EnviSink(tmp_path / "out_envi"), cubes)
    for i, cube in enumerate(cubes):
        img = envi.open(str(tmp_path / "out_envi" / f"frame_{i:06d}.hdr"))
        assert img.metadata["interleave"] == "bsq" and img.metadata["wavelength units"] == "nm"
        assert [float(w) for w in img.metadata["wavelength"]] == pytest.approx(WAVELENGTHS)
        back = img.load()
        assert back.dtype == np.float32 and np.array_equal(np.asarray(back), cube)


def test_zarr_round_trip(tmp_path):
    cubes = _cubes()
    _stream(ZarrSink(tmp_path / "out.zarr"), cubes)
    hsi = zarr.open_array(str(tmp_path / "out.zarr"), path="hsi", mode="r")
    assert hsi.shape == (3, 24, 18, BANDS) and hsi.chunks == (1, 24, 18, BANDS) and hsi.dtype == np.float32
    assert np.array_equal(hsi[:], np.stack(cubes))
    assert hsi.attrs["frames_complete"] == 3 and hsi.attrs["bands"] == BANDS
    assert hsi.attrs["wavelengths_nm"] == pytest.approx(WAVELENGTHS)
    assert list(zarr.open_array(str(tmp_path / "out.zarr"), path="frame_index", mode="r")[:]) == [0, 1, 2]


def test_zarr_refuses_size_change_and_foreign_folder(tmp_path):
    sink = ZarrSink(tmp_path / "out.zarr")
    sink.open(BANDS, WAVELENGTHS)
    a, b = _cubes(1)[0], _cubes(1, h=10)[0]
    sink.write(Frame(0, a), a)
    with pytest.raises(SinkError, match=r"out\.zarr.*size changed from 24x18 to 10x18"):
        sink.write(Frame(1, b), b)
    assert zarr.open_array(str(tmp_path / "out.zarr"), path="hsi", mode="r").attrs["frames_complete"] == 1
    (tmp_path / "mine.zarr").mkdir()
    (tmp_path / "mine.zarr" / "notes.txt").write_text("keep me")
    with pytest.raises(SinkError, match="not a zarr store"):
        ZarrSink(tmp_path / "mine.zarr").open(BANDS, None)
    assert (tmp_path / "mine.zarr" / "notes.txt").read_text() == "keep me"


def test_wrong_band_count_and_wavelengths(tmp_path):
    sink = NpySink(tmp_path / "out")
    with pytest.raises(SinkError, match="5 wavelengths for 7 output bands"):
        sink.open(BANDS, WAVELENGTHS[:5])
    sink.open(BANDS, WAVELENGTHS)
    bad = _cubes(1, bands=5)[0]
    with pytest.raises(SinkError, match=r"out: frame 0: cube of shape \(24, 18, 5\), expected \(H, W, 7\)"):
        sink.write(Frame(0, bad), bad)
    assert _visible(tmp_path / "out") == set()


# --- windows of a large scene -------------------------------------------------------------------------

def test_windows_reassemble_envi_npy_zarr(tmp_path):
    scene = np.random.default_rng(2).random((300, 250, 5), dtype=np.float32)
    wl = [450.0, 500.0, 550.0, 600.0, 650.0]
    windows = _windows(scene)
    assert len(windows) == 6
    sinks = {"envi": EnviSink(tmp_path / "big.hdr", large_scene=True),
             "npy": NpySink(tmp_path / "big.npy", large_scene=True),
             "zarr": ZarrSink(tmp_path / "big.zarr", large_scene=True, tile=128)}
    for sink in sinks.values():
        sink.open(5, wl)
        for frame, cube in windows:
            sink.write(frame, cube)
    # nothing under the final names until close(); the scene lives in a hidden temp file
    assert not (tmp_path / "big.hdr").exists() and not (tmp_path / "big.img").exists()
    assert not (tmp_path / "big.npy").exists()
    assert len(list(tmp_path.glob(".big.img.*.partial"))) == 1
    for sink in sinks.values():
        sink.close()
    img = envi.open(str(tmp_path / "big.hdr"))
    assert img.shape == (300, 250, 5) and [float(w) for w in img.metadata["wavelength"]] == wl
    assert np.array_equal(np.asarray(img.load()), scene)
    assert np.array_equal(np.load(tmp_path / "big.npy"), scene)
    hsi = zarr.open_array(str(tmp_path / "big.zarr"), path="hsi", mode="r")
    assert hsi.chunks == (128, 128, 5) and np.array_equal(hsi[:], scene)
    assert hsi.attrs["scene_complete"] is True and len(hsi.attrs["windows_complete"]) == 6
    assert _visible(tmp_path) == {"big.hdr", "big.img", "big.npy", "big.zarr"}  # temps renamed away


def test_windows_interrupted_leave_no_final_file(tmp_path, caplog):
    scene = np.random.default_rng(3).random((300, 250, 5), dtype=np.float32)
    windows = _windows(scene)
    sink = EnviSink(tmp_path / "scene_envi", large_scene=True)
    sink.open(5, None)
    for frame, cube in windows[:4]:
        sink.write(frame, cube)
    frame, cube = windows[4]
    with pytest.raises(SinkError, match="scene size changed from 300x250 to 300x260"):
        sink.write(Frame(9, frame.data, region=(*frame.region[:2], 300, 260), core=frame.core), cube)
    with pytest.raises(SinkError, match="expected windows of a large scene"):
        sink.write(Frame(10, cube), cube)
    sink.close()  # two windows missing: warns, keeps the temp, publishes nothing
    assert "scene incomplete" in caplog.text
    assert _visible(tmp_path / "scene_envi") == set()
    assert len(list((tmp_path / "scene_envi").glob(".scene.img.*.partial"))) == 1


# --- interrupted streams ------------------------------------------------------------------------------

def test_npy_stream_interrupted_mid_write(tmp_path):
    cubes = _cubes()
    folder = tmp_path / "out"
    sink = NpySink(folder)
    sink.open(BANDS, WAVELENGTHS)
    for i in range(2):
        sink.write(Frame(i, cubes[i]), cubes[i])
    (folder / "frame_000002.npy").mkdir()  # the final rename of frame 2 fails after its data is written
    (folder / "frame_000002.npy" / "x").touch()
    with pytest.raises(SinkError, match=r"frame_000002\.npy: cannot write"):
        sink.write(Frame(2, cubes[2]), cubes[2])
    assert sorted(os.listdir(folder)) == [".ssran-edge.lock", "frame_000000.npy", "frame_000001.npy",
                                          "frame_000002.npy"]  # no temp file; the open sink's lock
    sink.close()
    assert sorted(os.listdir(folder)) == ["frame_000000.npy", "frame_000001.npy", "frame_000002.npy"]
    assert (folder / "frame_000002.npy").is_dir()
    for i in range(2):
        assert np.array_equal(np.load(folder / f"frame_{i:06d}.npy"), cubes[i])


def test_envi_stream_interrupted_mid_write(tmp_path):
    cubes = _cubes()
    folder = tmp_path / "out_envi"
    sink = EnviSink(folder)
    sink.open(BANDS, WAVELENGTHS)
    for i in range(2):
        sink.write(Frame(i, cubes[i]), cubes[i])
    (folder / "frame_000002.img").mkdir()  # the data rename fails: the header must never appear
    (folder / "frame_000002.img" / "x").touch()
    with pytest.raises(SinkError, match=r"frame_000002\.hdr: cannot write"):
        sink.write(Frame(2, cubes[2]), cubes[2])
    sink.close()  # the lock inside the folder goes with it
    assert sorted(os.listdir(folder)) == ["frame_000000.hdr", "frame_000000.img", "frame_000001.hdr",
                                          "frame_000001.img", "frame_000002.img"]
    assert (folder / "frame_000002.img").is_dir()
    for i in range(2):
        assert np.array_equal(np.asarray(envi.open(str(folder / f"frame_{i:06d}.hdr")).load()), cubes[i])


# --- unwritable destination, full disk ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["sub.zarr", "sub_envi", "sub", "sub.npy"])
def test_destination_under_a_regular_file(tmp_path, name):
    (tmp_path / "file").write_text("not a folder")
    spec = tmp_path / "file" / name
    with pytest.raises(SinkError) as info:
        open_sink(spec).open(BANDS, WAVELENGTHS)
    assert str(tmp_path / "file") in str(info.value) and "\n" not in str(info.value)


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail with EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    from ssran_edge.runtime.frames import Frame
    from ssran_edge.errors import SinkError
    from ssran_edge.runtime.sinks import open_sink
    cube = np.random.default_rng(0).random((256, 256, 8), np.float32)  # 2 MiB, incompressible: over 1 MiB
    failed = 0
    for spec in sys.argv[1:]:
        sink = open_sink(spec)
        sink.open(8, None)
        try:
            sink.write(Frame(0, cube), cube)
        except SinkError as exc:
            print(exc)
            failed += 1
    sys.exit(2 if failed else 0)
""")


def test_full_disk_is_a_one_line_sink_error(tmp_path):
    specs = [tmp_path / "n", tmp_path / "e_envi", tmp_path / "z.zarr"]
    run = subprocess.run([sys.executable, "-c", FULL_DISK, *map(str, specs)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(lines) == 3
    for spec, line in zip(specs, lines, strict=True):
        assert line.startswith(str(spec)) and "file too large" in line
    assert _visible(tmp_path / "n") == set() and _visible(tmp_path / "e_envi") == set()
    assert zarr.open_array(str(tmp_path / "z.zarr"), path="hsi", mode="r").attrs["frames_complete"] == 0


# --- preview, dispatch --------------------------------------------------------------------------------

def test_preview_pngs(tmp_path):
    cube = np.full((48, 64, BANDS), 0.5, np.float32)
    red = int(np.argmin(np.abs(np.array(WAVELENGTHS) - 640)))
    cube[:, :, red] = np.linspace(0, 1, 64, dtype=np.float32)[None, :]  # a ramp in the red band only
    cube[10, 20] = np.linspace(0.1, 0.9, BANDS)
    image, spectra = Preview(tmp_path / "prev" / "p", wavelengths=WAVELENGTHS).preview(Frame(4, cube), cube)
    assert image == tmp_path / "prev" / "p_000004.png" and spectra == tmp_path / "prev" / "p_000004_spectra.png"
    bgr = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and bgr.shape == (48, 64, 3) and bgr.dtype == np.uint8
    assert bgr[0, -1, 2] == 255 and bgr[0, 0, 2] == 0  # red ramp stretched to 2-98 %, in the R channel
    assert cv2.imread(str(spectra)) is not None and spectra.stat().st_size > 5000
    assert _visible(tmp_path / "prev") == {"p_000004.png", "p_000004_spectra.png"}
    with pytest.raises(SinkError, match="outside the 48x64 frame"):
        Preview(tmp_path / "q", wavelengths=WAVELENGTHS, pixels=[(48, 0)]).preview(Frame(0, cube), cube)


@pytest.mark.parametrize("spec, kind", [
    ("a.zarr", ZarrSink), ("a.hdr", EnviSink), ("a.img", EnviSink), ("run_envi", EnviSink), ("envi", EnviSink),
    ("a.npy", NpySink), ("frames", NpySink),
])
def test_open_sink_dispatch(tmp_path, spec, kind):
    assert type(open_sink(tmp_path / spec)) is kind


def test_open_sink_unknown_form(tmp_path):
    with pytest.raises(SinkError, match=r"out\.txt: unknown output form; use one of: .*zarr.*ENVI.*npy.*GeoTIFF"):
        open_sink(tmp_path / "out.txt")
    existing = tmp_path / "run.v2"
    existing.mkdir()
    assert type(open_sink(existing)) is NpySink


def test_one_run_writes_an_output_at_a_time(tmp_path):
    """Two writers of one output: the second is refused at open(), before any inference (two `run
    --window` processes used to share one staging file and mix their scenes). The lock goes with
    close(); a killed run's staging file is removed by the next run."""
    for make in (lambda: NpySink(tmp_path / "big.npy", large_scene=True),
                 lambda: ZarrSink(tmp_path / "big.zarr", large_scene=True, tile=128),
                 lambda: NpySink(tmp_path / "frames")):
        first, second = make(), make()
        first.open(5, None)
        with pytest.raises(SinkError, match="another run is writing this output now"):
            second.open(5, None)
        first.close()
        second.open(5, None)  # free again
        second.close()
        assert not list(tmp_path.glob(".*.lock"))
    (tmp_path / ".big.npy.4242-dead.partial").write_bytes(b"left by a killed run")
    scene = np.random.default_rng(4).random((300, 250, 5), dtype=np.float32)
    sink = NpySink(tmp_path / "big.npy", large_scene=True)
    sink.open(5, None)
    assert not (tmp_path / ".big.npy.4242-dead.partial").exists()
    for frame, cube in _windows(scene):
        sink.write(frame, cube)
    sink.close()
    assert np.array_equal(np.load(tmp_path / "big.npy"), scene)


def test_an_output_folder_holds_its_own_lock(tmp_path):
    """A frame folder's lock lives inside it, so a folder made writable for us inside a read-only
    parent still works; the folder a run made and wrote nothing to goes with the run."""
    folder = tmp_path / "frames"
    sink = NpySink(folder)
    sink.open(5, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert sorted(p.name for p in folder.iterdir()) == [".ssran-edge.lock"]
    sink.close()
    assert not folder.exists()  # nothing was written: no empty folder left behind
    sink = NpySink(folder)
    sink.open(5, None)
    sink.write(Frame(0, np.zeros((4, 4, 5), np.float32)), np.zeros((4, 4, 5), np.float32))
    sink.close()
    assert sorted(p.name for p in folder.iterdir()) == ["frame_000000.npy"]


def test_two_window_runs_on_one_output_never_mix(tmp_path):
    """As users hit it: two `ssran-edge run --window` processes on different scenes, one output."""
    for name, seed in (("a", 0), ("b", 1)):
        np.save(tmp_path / f"{name}.npy", np.random.default_rng(seed).random((600, 600, 3), dtype=np.float32))
    cmd = [sys.executable, "-m", "ssran_edge.cli", "run", "--window", "128", "--output", str(tmp_path / "out.npy")]
    procs = [subprocess.Popen([*cmd[:4], str(tmp_path / f"{n}.npy"), *cmd[4:]], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in ("a", "b")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code == 2]
    if codes == [0, 2]:  # they overlapped: the second was refused in one line, the first wrote its scene
        assert "another run is writing this output now" in refused[0] and len(refused[0].strip().splitlines()) == 1
    else:  # one finished before the other opened: both succeeded, each in turn
        assert codes == [0, 0]
    out = np.load(tmp_path / "out.npy")
    winners = [n for n, (code, _) in zip(("a", "b"), results, strict=True) if code == 0]
    references = {}
    for n in winners:  # the same command alone, into its own file
        subprocess.run([*cmd[:4], str(tmp_path / f"{n}.npy"), *cmd[4:-1], str(tmp_path / f"ref_{n}.npy")],
                       cwd=REPO, check=True, capture_output=True, timeout=300)
        references[n] = np.load(tmp_path / f"ref_{n}.npy")
    assert any(np.array_equal(out, ref) for ref in references.values())  # one scene whole, not a mixture
