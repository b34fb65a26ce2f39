"""Data-parallel training under a real torchrun: 2 CPU processes (gloo) against 1, a resume under a
different world size, and a rank killed mid-run."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from ssran_edge.checkpoint import load_training_state
from ssran_edge.train.distributed import World, world_from_environment

pytestmark = pytest.mark.shared_data

# Pavia with a frozen linear skip and an EMA (the shipped recipe's moving parts), small and fast; a
# step schedule, whose rate does not depend on --epochs, so a 2-epoch run resumed to 3 is a 3-epoch run.
RUN = ["--protocol", "pavia", "--recipe", "edge", "--arch", "ssran_linear_skip", "--no-train-skip",
       "--schedule", "step", "--lr-step", "50",
       "--ema", "0.9", "--batch-size", "8", "--patch-size", "16", "--patches-per-epoch", "60", "--width", "16",
       "--num-blocks", "2", "--tile", "64", "--no-report"]
# Two ranks compute the same step as one process; only the gradient all-reduce's summation order
# differs (measured: 2e-8 dB after 2 epochs). The tolerance leaves room for other BLAS builds.
PSNR_TOLERANCE_DB = 0.01


def torchrun(ranks: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
            "-m", "train", *RUN, *args]


def one_process(*args: str) -> list[str]:
    return [sys.executable, "-m", "train", *RUN, "--threads", "1", *args]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def history(folder) -> list[dict]:
    return json.loads((folder / "history.json").read_text())


def test_two_ranks_train_what_one_process_trains_and_resume_under_another_world_size(tmp_path, shared_data):
    one, two = tmp_path / "one", tmp_path / "two"
    run(one_process("--epochs", "3", "--output", str(one)))
    started = run(torchrun(2, "--epochs", "2", "--output", str(two)))
    assert "2 ranks; global batch 8 = 4 patches per rank" in started.stderr
    assert started.stdout.count("weights:") == 1  # rank 0 alone reports
    assert [h.get("ranks") for h in history(two)] == [2, 2]
    run(one_process("--epochs", "3", "--output", str(two), "--resume"))  # 2 ranks -> 1 process

    reference, resumed = history(one), history(two)
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    for a, b in zip(reference, resumed, strict=True):
        assert b["val_psnr"] == pytest.approx(a["val_psnr"], abs=PSNR_TOLERANCE_DB), (a, b)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
    assert reference[-1]["val_psnr"] > reference[0]["val_psnr"]  # it is learning, not standing still


def _children(pid: int) -> list[int]:
    return [int(child) for task in os.listdir(f"/proc/{pid}/task")
            for child in open(f"/proc/{pid}/task/{task}/children").read().split()]


def _rank_of(pid: int) -> int:
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return int(next(e for e in environ if e.startswith(b"RANK="))[5:])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
@pytest.mark.parametrize("victim", [1, 0])
def test_a_rank_killed_mid_run_ends_the_job_with_one_line_and_the_checkpoint_resumes(tmp_path, shared_data,
                                                                                    victim):
    out = tmp_path / "run"
    job = subprocess.Popen(torchrun(2, "--epochs", "500", "--output", str(out)), cwd=REPO, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint.pt").exists():
            assert job.poll() is None and time.monotonic() < deadline, "the job never wrote a checkpoint"
            time.sleep(0.2)
        ranks = {_rank_of(pid): pid for pid in _children(job.pid)}
        killed_at = time.monotonic()
        os.kill(ranks[victim], signal.SIGKILL)
        _, stderr = job.communicate(timeout=120)  # no hang: the survivor stops within seconds
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert time.monotonic() - killed_at < 60
    # (a killed rank 0 leaves its progress bar without a newline: our line may follow it on one line)
    ours = re.findall(r"python -m train: .*", stderr)
    survivor = 1 - victim
    assert len(ours) == 1, stderr[-3000:]
    assert ours[0].startswith(f"python -m train: error: rank {survivor} of 2: ")
    assert f"the last checkpoint in {out} stands: rerun with --resume" in ours[0]
    assert "train/loop.py" not in stderr and "train/__main__.py" not in stderr  # no traceback of ours
    state = load_training_state(out / "checkpoint.pt")  # weights_only, intact
    done = int(state["epoch"])
    run(one_process("--epochs", str(done + 1), "--output", str(out), "--resume"))
    assert [h["epoch"] for h in history(out)][-1] == done + 1


def test_world_shares_cover_a_batch_once():
    for size in (1, 2, 3, 4):
        for count in range(size, 20):
            rows = [i for rank in range(size) for i in range(count)[World(rank, size).share(count)]]
            assert rows == list(range(count))
            sizes = {len(range(count)[World(rank, size).share(count)]) for rank in range(size)}
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "two"}, "not integers"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 / WORLD_SIZE 2: not a place in a job"),
])
def test_a_bad_torchrun_environment_is_one_line(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match=message):
        world_from_environment()
