"""Data-parallel training under torchrun (`torchrun --nproc-per-node N -m train ...`).

torchrun starts N copies of `python -m train` and tells each its place through the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); without those variables training runs in one
process as before. Each rank holds the whole model (DistributedDataParallel averages the gradients:
gloo on CPU, nccl on CUDA) and trains its share of every global batch. `--batch-size` is the
*global* batch: N ranks of batch/N patches take exactly the step one process takes with the whole
batch, at the same learning rate, so a run may resume under a different world size.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ssran_edge.errors import RankLost, SSRANEdgeError

# How long a rank waits for the others at a collective: long enough for rank 0's validation and
# checkpoint between epochs, short enough that a stuck (not dead) peer does not hold a node for hours.
TIMEOUT = timedelta(minutes=10)



@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, weights, history, the report and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"

    def share(self, count: int) -> slice:
        """This rank's rows of a global batch of `count`: contiguous, sizes differing by at most one."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


SINGLE_PROCESS = World()


def world_from_environment() -> World:
    """The place torchrun gave this process; one process of one when not launched by torchrun."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise SSRANEdgeError(f"RANK/WORLD_SIZE/LOCAL_RANK: not integers ({exc})") from None
    if size < 1 or not 0 <= rank < size:
        raise SSRANEdgeError(f"RANK {rank} / WORLD_SIZE {size}: not a place in a job")
    return World(rank, size, local_rank)


def rank_device(device: str, world: World) -> str:
    """CUDA ranks take the GPU of their local rank (`--device cuda`); CPU ranks share the CPU."""
    if not world.distributed or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise SSRANEdgeError(f"--device {device}: under torchrun give plain --device cuda; "
                             f"each rank takes the GPU of its LOCAL_RANK")
    if world.local_rank >= torch.cuda.device_count():
        raise SSRANEdgeError(f"{world}: LOCAL_RANK {world.local_rank} but this node has "
                             f"{torch.cuda.device_count()} GPU(s); start at most one rank per GPU")
    return f"cuda:{world.local_rank}"


def join(world: World, device: str) -> None:
    """Join the job's process group (rendezvous through torchrun's MASTER_ADDR/PORT), and turn the
    launcher's SIGTERM (sent when another rank died) into a one-line error instead of a silent exit."""
    if not world.distributed:
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    signal.signal(signal.SIGTERM, _stopped_by_launcher(world))


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _stopped_by_launcher(world: World):
    def handler(signum, frame):
        _ignore_further_stops()
        raise RankLost(f"{world}: stopped by torchrun (a rank failed, or the job was cancelled)")
    return handler


def _ignore_further_stops() -> None:
    # This rank is ending with its one line; torchrun's SIGTERM (or a second one) must not interrupt it
    # halfway with a traceback. torchrun escalates to SIGKILL if a rank does not exit.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """Element-wise sum of `values` over all ranks (every rank calls it with the same length)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    collective(dist.all_reduce, tensor, world=world)
    return tensor.cpu().tolist()


def collective(operation, *args, world: World, **kwargs):
    """Run a collective (or a DDP step, whose backward is one); a peer that vanished is one line."""
    try:
        return operation(*args, **kwargs)
    except RuntimeError as exc:
        if not world.distributed or not _is_transport_failure(exc):
            raise
        _ignore_further_stops()
        raise RankLost(f"{world}: lost contact with the other ranks ({_first_sentence(exc)})") from None


def _is_transport_failure(exc: RuntimeError) -> bool:
    # gloo reports a vanished peer as a plain RuntimeError from its TCP transport (measured, torch 2.13)
    return isinstance(exc, dist.DistError) or any(word in str(exc) for word in ("gloo", "NCCL", "Connection"))


def _first_sentence(exc: BaseException) -> str:
    """gloo's "[.../pair.cc:553] Connection closed by peer [127.0.0.1]:24267. This is typically..." ->
    "Connection closed by peer [127.0.0.1]:24267"."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0][:160]
