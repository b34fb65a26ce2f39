"""`predict` is a one-frame `run`: the same sources, checks and sinks. The typed records that cross the
stages (Frame fields, the geo handed to Sink.open, GeoTiffOptions, SceneRecord) and the preview papercuts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssran_edge.cli import main
from ssran_edge.data.cube import Cube, GeoInfo
from ssran_edge.errors import SinkError
from ssran_edge.runtime.frames import Frame
from ssran_edge.runtime.sinks import MemorySink, NpySink, TeeSink


def test_frame_fields_are_typed_with_linear_defaults():
    frame = Frame(0, np.zeros((2, 2, 3), np.float32))
    assert frame.valid is None and frame.tile is None and frame.camera is None
    assert frame.encoding == "linear" and frame.meta == {}


def test_replay_frames_name_their_camera():
    from ssran_edge.runtime.sources import open_source

    with open_source("camera_stream", srf="nikon_d700") as source:
        frame = source.read()
    assert source.camera == "nikon_d700" and frame.camera == "nikon_d700"
    assert frame.encoding == "linear" and frame.valid is None


def test_cube_source_is_one_frame_with_its_mask_and_grid():
    from ssran_edge.runtime.sources import CubeSource

    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    geo = GeoInfo(crs=None, transform=(2.0, 0, 10.0, 0, -2.0, 20.0))
    source = CubeSource(Cube(np.ones((4, 5, 3), np.float32), None, "x.tif", geo, valid), camera="cam")
    frames = list(source)
    assert len(frames) == 1 and source.single_frame and source.bands == 3 and source.geo is geo
    assert frames[0].valid is valid and frames[0].camera == "cam"


def test_geo_is_handed_to_sink_open(tmp_path):
    geo = GeoInfo(crs='GEOGCS["WGS 84"]', transform=(1.0, 0.0, 5.0, 0.0, -1.0, 7.0))
    sink = NpySink(tmp_path / "frames")
    sink.open(3, None, geo=geo)
    try:
        assert sink.geo is geo and sink._header(2, 2)["map info"] == geo.envi_map_info()
    finally:
        sink.close()


def test_tee_keeps_a_copy_and_writes_the_file(tmp_path):
    kept, file_sink = MemorySink(), NpySink(tmp_path / "one.npy", single_frame=True)
    tee = TeeSink(file_sink, kept)
    tee.open(2, [500.0, 600.0])
    cube = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    tee.write(Frame(0, cube), cube)
    cube[:] = -1  # the stream reuses its cube: the kept copy must not change
    tee.close()
    assert np.array_equal(kept.cubes[0], np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    assert file_sink.last_written == tmp_path / "one.npy"
    assert np.array_equal(np.load(tmp_path / "one.npy"), kept.cubes[0])


def test_predict_output_is_the_run_output_of_the_same_file(tmp_path, capsys):
    rgb = np.random.default_rng(0).random((40, 48, 3)).astype(np.float32)
    np.save(tmp_path / "rgb.npy", rgb)
    assert main(["predict", str(tmp_path / "rgb.npy"), "--backend", "ort", "--output", str(tmp_path / "p.npy")]) == 0
    out = capsys.readouterr().out
    assert "output: " + str(tmp_path / "p.npy") in out and "(40x48x31 float32)" in out
    assert main(["run", str(tmp_path / "rgb.npy"), "--backend", "ort", "--output", str(tmp_path / "r.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "p.npy"), np.load(tmp_path / "r.npy"))
    assert not list(tmp_path.glob(".*lock"))  # the writer lock is gone


def test_predict_unknown_output_format_is_refused_before_writing(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((16, 16, 3)).astype(np.float32))
    assert main(["predict", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.txt")]) == 2
    assert "unknown output format '.txt' (use .npy or .hdr)" in capsys.readouterr().err
    assert not (tmp_path / "y.txt").exists()


def test_predict_and_run_write_the_same_geotiff_tags(tmp_path):
    pytest.importorskip("rasterio")
    import rasterio

    profile = dict(driver="GTiff", width=32, height=32, count=3, dtype="float32", crs="EPSG:32631",
                   transform=rasterio.transform.from_origin(500000, 4000000, 10, 10))
    with rasterio.open(tmp_path / "in.tif", "w", **profile) as dst:
        dst.write(np.random.default_rng(2).random((3, 32, 32)).astype(np.float32))
    assert main(["predict", str(tmp_path / "in.tif"), "--backend", "ort", "--output", str(tmp_path / "p.tif")]) == 0
    assert main(["run", str(tmp_path / "in.tif"), "--backend", "ort", "--output", str(tmp_path / "r.tif")]) == 0
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(tmp_path / "r.tif") as r:
        assert p.tags() == r.tags() and "SSRAN_EDGE_ARCH" in p.tags() and p.crs == r.crs
        assert np.array_equal(p.read(), r.read())


def test_write_geotiff_takes_options(tmp_path):
    pytest.importorskip("rasterio")
    import rasterio

    from ssran_edge.geo import GeoTiffOptions, write_geotiff

    cube = np.random.default_rng(3).random((20, 20, 2)).astype(np.float32)
    write_geotiff(tmp_path / "o.tif", cube, [500.0, 600.0], options=GeoTiffOptions(compress="zstd", tags={"A": "b"}))
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.tags()["A"] == "b" and src.compression.name.lower() == "zstd"


# --- previews -------------------------------------------------------------------------------------------

def test_preview_without_wavelengths_uses_band_indexes(tmp_path):
    pytest.importorskip("matplotlib")
    from ssran_edge.runtime.preview import Preview

    cube = np.random.default_rng(4).random((24, 24, 31)).astype(np.float32)
    image, spectra = Preview(tmp_path / "p", wavelengths=None).preview(Frame(0, cube), cube)
    assert image.stat().st_size > 0 and spectra.stat().st_size > 0


@pytest.mark.parametrize("prefix", ["/dev/null/x", "/proc/ssran-nowhere/prefix"])
def test_preview_under_an_unwritable_special_path_is_one_line_before_any_frame(prefix, capsys):
    pytest.importorskip("matplotlib")
    from ssran_edge.runtime.preview import Preview

    with pytest.raises(SinkError, match="--preview"):
        Preview(prefix, wavelengths=None)
    assert main(["run", "camera_stream", "--backend", "ort", "--preview", prefix]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ssran-edge: error: --preview {prefix}:"), err


# --- batch records ---------------------------------------------------------------------------------------

def test_scene_record_keeps_the_manifest_keys(tmp_path):
    from ssran_edge.runtime.batch import MANIFEST, SceneRecord, is_complete, read_manifest

    done = SceneRecord("a.npy", str(tmp_path / "a_hsi.npy"), worker_pid=7, status="done", sha256="x", seconds=1.0)
    failed = SceneRecord("b.npy", "b_hsi.npy", status="failed", error="b.npy: broken")
    assert list(json.loads(done.to_json())) == ["source", "output", "worker_pid", "status", "sha256", "seconds"]
    assert list(json.loads(failed.to_json())) == ["source", "output", "status", "error"]
    (tmp_path / MANIFEST).write_text(done.to_json() + "\n" + failed.to_json() + "\n{cut")
    records = read_manifest(tmp_path)
    assert records == {"a.npy": done, "b.npy": failed}
    assert not is_complete(records["a.npy"]) and not is_complete(None)


def test_reconstruct_scene_batches_tiles_like_run(tmp_path, monkeypatch):
    from ssran_edge.runtime import pipeline
    from ssran_edge.runtime.batch import reconstruct_scene

    seen = []
    original = pipeline.StreamPipeline.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs["batch"])
        original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.StreamPipeline, "__init__", spy)
    monkeypatch.setattr(pipeline, "default_batch", lambda runner: 3)
    np.save(tmp_path / "s.npy", np.random.default_rng(5).random((24, 24, 3)).astype(np.float32))
    record = reconstruct_scene(str(tmp_path / "s.npy"), str(tmp_path / "out" / "s_hsi.npy"), backend="ort")
    assert record.status == "done", record.error
    assert seen == [3] and record.sha256 and record.worker_pid
