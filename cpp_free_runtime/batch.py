"""`ssran-edge batch SOURCES... --output DIR`: an archive of scenes on a Dask cluster, one task per scene.

Each scene runs exactly as `ssran-edge run SCENE --output OUT` does (the same source, tiling and
sink, written under a temp name and renamed), inside a Dask worker process that opens the model
once (`backends.opened_runner`, a per-process cache). Without `--scheduler` a LocalCluster is started (`--workers`
processes, one thread each, a memory limit each). A manifest (`DIR/manifest.jsonl`, one JSON line
per finished scene: status, output, sha256, seconds, error) lets a rerun skip scenes whose output is
complete and unchanged; a failing scene is recorded with its one-line error while the others finish.
Dask reschedules a scene whose worker died (its output was never renamed into place). The
`[distributed]` extra.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ssran_edge.atomic import sha256_file
from ssran_edge.data.cube import RASTER_SUFFIXES
from ssran_edge.data.images import is_picture
from ssran_edge.errors import DataError, SSRANEdgeError, one_line

log = logging.getLogger("ssran_edge.runtime")
MANIFEST = "manifest.jsonl"


@dataclass
class SceneRecord:
    """One scene's outcome: a line of the manifest (JSON with these keys; fields that are None are left
    out, as a record written before this class was)."""

    source: str
    output: str
    worker_pid: int | None = None
    status: str = ""  # "done" or "failed"
    sha256: str | None = None  # of the output, when done
    error: str | None = None  # one line, when failed
    seconds: float | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> SceneRecord:
        """A manifest line's record; keys this class does not know are ignored. KeyError, TypeError or
        ValueError for a line that is not a record."""
        record = cls(**{f.name: obj[f.name] for f in fields(cls) if f.name in obj})
        if not isinstance(record.source, str) or not isinstance(record.output, str):
            raise TypeError("source and output must be strings")
        return record


def expand_sources(patterns: list[str]) -> list[Path]:
    """Paths and globs -> the scene files, in order, each once; a pattern that matches nothing is an error."""
    scenes: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or (not glob.has_magic(pattern) and not Path(pattern).exists()):
            raise DataError(f"{pattern}: no such scene (and no file matches it)")
        scenes += [Path(m) for m in matches if Path(m) not in scenes]
    return scenes


def output_for(scene: Path, folder: Path) -> Path:
    """DIR/<stem>_hsi.tif for a GDAL raster (georeferenced output), DIR/<stem>_hsi.npy otherwise (a TIFF
    photo included: it has no grid to carry)."""
    raster = scene.suffix.lower() in RASTER_SUFFIXES and not is_picture(scene)
    return folder / f"{scene.stem}_hsi{'.tif' if raster else '.npy'}"


def reconstruct_scene(scene: str, output: str, model: str = "", backend: str = "auto", tile: int = 0,
                      halo: int = 8, threads: int = 1) -> SceneRecord:
    """One scene, as `ssran-edge run SCENE --output OUTPUT`; returns its manifest record (never raises:
    a failure is a record with its one-line error, so one bad scene cannot stop an archive)."""
    from ssran_edge.geo import OUTPUT_SUFFIXES, GeoTiffOptions
    from ssran_edge.runtime.backends import opened_runner
    from ssran_edge.runtime.pipeline import default_batch, open_stream
    from ssran_edge.runtime.sinks import card_tags, open_sink
    from ssran_edge.runtime.sources import WindowedSceneSource, open_source

    started = time.perf_counter()
    record = SceneRecord(scene, output, worker_pid=os.getpid())
    try:
        selection = opened_runner(model, backend, "", threads)
        source = open_source(scene)
        geotiff = GeoTiffOptions(tags=card_tags(selection)) if Path(output).suffix.lower() in OUTPUT_SUFFIXES else None
        sink = open_sink(output, large_scene=isinstance(source, WindowedSceneSource), single_frame=True,
                         geotiff=geotiff)
        sink.lock()
        try:
            target = Path(output)
            for stale in target.parent.glob(f".{target.name}.*"):  # a killed worker's temp file; we hold the lock
                if stale != sink.lock_path():
                    stale.unlink(missing_ok=True)
            runner = selection.runner
            with source:
                pipeline = open_stream(source, runner, sink, selection.wavelengths, tile=tile or selection.tile,
                                       halo=halo, batch=default_batch(runner), queue_size=2)
                try:
                    pipeline.run()
                finally:
                    sink.close()
        finally:
            sink.unlock()
        record.status, record.sha256 = "done", sha256_file(output)
    except SSRANEdgeError as exc:
        record.status, record.error = "failed", one_line(exc)
    except Exception as exc:  # noqa: BLE001 - a library's own error on a damaged scene, still one line
        record.status, record.error = "failed", f"{type(exc).__name__}: {one_line(exc)}"
    record.seconds = round(time.perf_counter() - started, 3)
    return record


def read_manifest(folder: Path) -> dict[str, SceneRecord]:
    """The last record per source (a rerun appends)."""
    records: dict[str, SceneRecord] = {}
    path = folder / MANIFEST
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = SceneRecord.from_dict(json.loads(line))
                records[record.source] = record
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: that scene is simply redone
    return records


def is_complete(record: SceneRecord | None) -> bool:
    """Done, and the output on disk is the one the manifest hashed."""
    if record is None or record.status != "done":
        return False
    output = Path(record.output)
    return output.is_file() and sha256_file(output) == record.sha256


def _require_resources(client, resources: dict[str, float], scheduler: str | None) -> None:
    """Tasks that ask for a resource no worker has would wait forever: refuse them up front."""
    offered = [info.get("resources", {}) for info in client.scheduler_info()["workers"].values()]
    if offered and not any(all(worker.get(name, 0) >= amount for name, amount in resources.items())
                           for worker in offered):  # (none yet: an autoscaled cluster may add them)
        wanted = ",".join(f"{name}={amount:g}" for name, amount in resources.items())
        raise DataError(f"--resources {wanted}: no worker of {scheduler or 'the LocalCluster'} offers it "
                        f"({len(offered)} workers); start workers with `dask worker {scheduler or 'ADDRESS'} "
                        f"--resources {wanted}`")


def run_batch(scenes: list[Path], folder: Path, *, model: str = "", backend: str = "auto", tile: int = 0,
              halo: int = 8, scheduler: str | None = None, workers: int = 2, memory_limit: str = "4GiB",
              resources: dict[str, float] | None = None, progress: bool = True) -> list[SceneRecord]:
    """Every scene not already complete, one Dask task each; returns this run's records (manifest order).

    `resources` (e.g. {"GPU": 1}): what each scene holds while it runs, so a worker started with
    `--resources GPU=1` runs one scene at a time on its GPU; a LocalCluster's workers get one unit each."""
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    if not log.isEnabledFor(logging.DEBUG):  # the scheduler's and nannies' INFO chatter only with -v
        for name in [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]:
            logging.getLogger(name).setLevel(logging.ERROR)

    folder.mkdir(parents=True, exist_ok=True)
    done = read_manifest(folder)
    todo = [s for s in scenes if not is_complete(done.get(str(s)))]
    skipped = len(scenes) - len(todo)
    if skipped:
        print(f"batch: {skipped} of {len(scenes)} scenes already complete (manifest and hash): skipped")
    if not todo:
        return []
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                               processes=True, dashboard_address=":0", silence_logs=logging.ERROR,
                               **({"resources": resources} if resources else {}))
        client = Client(cluster)
    records = []
    try:
        if resources:
            _require_resources(client, resources, scheduler)
        print(f"batch: {len(todo)} scenes on {scheduler or f'a LocalCluster of {workers} workers'}; "
              f"dashboard {client.dashboard_link}")
        futures = {client.submit(reconstruct_scene, str(s), str(output_for(s, folder)), model, backend, tile, halo,
                                 key=f"ssran-edge-scene-{i}-{s.name}", pure=False, resources=resources or None): s
                   for i, s in enumerate(todo)}
        bar = tqdm(total=len(futures), unit="scene", disable=not progress or None)
        with open(folder / MANIFEST, "a") as manifest:
            for future in as_completed(futures):
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - the task itself failed (its workers kept dying)
                    record = SceneRecord(str(futures[future]), str(output_for(futures[future], folder)),
                                         status="failed", error=f"{type(exc).__name__}: {one_line(exc)}")
                manifest.write(record.to_json() + "\n")
                manifest.flush()
                records.append(record)
                bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return records
