"""`ssran-edge batch` on a real Dask LocalCluster (2 worker processes): the same outputs as `run`, a
corrupt scene recorded while the others finish, a rerun that skips, a worker killed mid-job."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO

pytest.importorskip("distributed", reason="the [distributed] extra is not installed")


def cli(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "ssran_edge.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i, (h, w) in enumerate([(64, 80), (40, 300), (96, 96)]):
        np.save(folder / f"s{i}.npy", np.random.default_rng(i).random((h, w, 3), dtype=np.float32))
    return folder


def _manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_batch_equals_run_records_a_corrupt_scene_and_reruns_skip(tmp_path, scenes):
    (scenes / "broken.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    out = tmp_path / "out"
    result = cli("batch", str(scenes / "s*.npy"), str(scenes / "broken.npy"), "--output", str(out), "--workers", "2")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 of 4 scenes failed" in lines[0] and "broken.npy: unreadable NumPy file" in lines[0]
    records = {r["source"]: r for r in _manifest(out)}
    assert records[str(scenes / "broken.npy")]["status"] == "failed"
    assert len({r["worker_pid"] for r in records.values()}) >= 1
    for i in range(3):
        run = cli("run", str(scenes / f"s{i}.npy"), "--output", str(tmp_path / f"run{i}.npy"))
        assert run.returncode == 0, run.stderr
        np.testing.assert_array_equal(np.load(out / f"s{i}_hsi.npy"), np.load(tmp_path / f"run{i}.npy"))
        assert records[str(scenes / f"s{i}.npy")]["status"] == "done"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.jsonl", "s0_hsi.npy", "s1_hsi.npy", "s2_hsi.npy"]

    rerun = cli("batch", str(scenes / "s*.npy"), "--output", str(out), "--workers", "1")
    assert rerun.returncode == 0 and "3 of 3 scenes already complete" in rerun.stdout, rerun.stderr
    np.save(out / "s1_hsi.npy", np.zeros((2, 2, 31), np.float32))  # an output changed since: redone
    again = cli("batch", str(scenes / "s*.npy"), "--output", str(out), "--workers", "1")
    assert again.returncode == 0 and "2 of 3 scenes already complete" in again.stdout, again.stderr
    np.testing.assert_array_equal(np.load(out / "s1_hsi.npy"), np.load(tmp_path / "run1.npy"))


def test_a_worker_killed_mid_job_and_the_job_still_completes(tmp_path):
    """SIGKILL one worker process while scenes are running: Dask's nanny restarts it, the lost scene is
    rescheduled, every output is whole, nothing half-written is left."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(6):
        np.save(folder / f"s{i}.npy", np.random.default_rng(i).random((256, 512, 3), dtype=np.float32))
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "ssran_edge.cli", "batch", str(folder / "s*.npy"), "--output",
                            str(out), "--workers", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and job.poll() is None and time.monotonic() < deadline:
        workers = _worker_processes(job.pid)
        if (out / "manifest.jsonl").is_file() and workers:  # a scene is done: the others are in flight
            killed = workers[-1]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = job.communicate(timeout=600)
    assert killed is not None, "no worker process was found to kill"
    assert job.returncode == 0, stderr
    records = _manifest(out)
    assert sorted(r["source"] for r in records if r["status"] == "done") == sorted(str(p) for p in folder.glob("*.npy"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or lock file left
    for i in range(6):
        assert np.load(out / f"s{i}_hsi.npy").shape == (256, 512, 31)


def _worker_processes(pid: int) -> list[int]:
    """The Dask worker processes under pid (spawned by the nannies; the resource tracker left out), from
    /proc: no psutil needed."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != parent:
                    continue
                frontier.append(int(entry))
                with open(f"/proc/{entry}/cmdline") as f:
                    command = f.read()
                if "spawn_main" in command and "resource_tracker" not in command:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_the_xarray_api_on_the_local_cluster(tmp_path):
    """ssran_edge.xarray.reconstruct on a dask-backed array computed by a real 2-process LocalCluster: the
    same numbers as `run` with windows of the chunk size."""
    xr = pytest.importorskip("xarray", reason="the [geo] extra is not installed")
    from distributed import Client, LocalCluster

    from ssran_edge.xarray import reconstruct

    scene = np.random.default_rng(7).random((96, 128, 3), dtype=np.float32)
    np.save(tmp_path / "x.npy", scene)
    assert cli("run", str(tmp_path / "x.npy"), "--window", "48", "--output", str(tmp_path / "run.npy")).returncode == 0
    msi = xr.DataArray(np.moveaxis(scene, -1, 0), dims=("band", "y", "x")).chunk({"y": 48, "x": 48})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        hsi = reconstruct(msi, model="cave").compute()
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(np.moveaxis(hsi.values, 0, -1), np.load(tmp_path / "run.npy"), rtol=1e-5, atol=1e-6)


def test_scenes_hold_worker_resources_and_a_cluster_without_them_is_refused(tmp_path, scenes):
    """--resources GPU=1: each scene holds one unit (one scene at a time per GPU worker); a cluster whose
    workers offer none would leave the tasks waiting forever, so it is refused in one line."""
    from distributed import LocalCluster

    out = tmp_path / "out"
    result = cli("batch", str(scenes / "s*.npy"), "--output", str(out), "--workers", "2", "--resources", "GPU=1")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in _manifest(out)] == ["done"] * 3

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        refused = cli("batch", str(scenes / "s*.npy"), "--output", str(tmp_path / "none"),
                      "--scheduler", cluster.scheduler_address, "--resources", "GPU=1", timeout=120)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--resources GPU=1: no worker of tcp://" in lines[0], refused.stderr
    bad = cli("batch", str(scenes / "s*.npy"), "--output", str(tmp_path / "bad"), "--resources", "GPU")
    assert bad.returncode == 2 and "'GPU' is not NAME=AMOUNT" in bad.stderr
