"""Data-parallel training: `vitbench run --gpus N` through torch.distributed.

The launcher process checks the command, then hands it to ``torch.distributed.run`` (the engine behind
``torchrun``), which starts N copies of it, one per GPU (``LOCAL_RANK``), NCCL on CUDA and gloo on the
CPU. Across hosts (``--nodes M --rdzv-endpoint HOST:PORT``) the same command on every host meets the others
through torch's c10d rendezvous at the endpoint (a port on one of the hosts), and the M x N ranks train as one.
Each copy is a *rank*: it holds the whole dataset, takes its share of every global batch and
wraps the model in ``DistributedDataParallel``; rank 0 alone talks to MLflow, evaluates and writes
checkpoints. Ranks stop together: signals and the time budget are agreed on every ``AGREE_EVERY``
steps and at each epoch's end, so no rank is left waiting in an all-reduce.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vitbench.errors import VitbenchError
from vitbench.gpus import listed_gpus

AGREE_EVERY = 20  # optimizer steps between two agreements on stopping (a Ctrl-C waits at most this long)


def in_rank() -> bool:
    """Whether this process was started by torch.distributed.run as one of several ranks."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def lead() -> bool:
    """Rank 0, or the only process: the one that records, evaluates and checkpoints."""
    return rank() == 0


def visible_gpus() -> list[str]:
    """The ids of this host's GPUs this process may use (its CUDA_VISIBLE_DEVICES, else all of them)."""
    if not torch.cuda.is_available():
        return []
    listed = listed_gpus()
    return listed[: torch.cuda.device_count()] if listed else [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class Nodes:
    """Where the ranks of `run --gpus N` live: this host alone, or ``count`` hosts meeting at ``endpoint``."""

    count: int = 1
    endpoint: str | None = None  # HOST:PORT of the c10d rendezvous, on one of the hosts
    job: str = "vitbench"  # the rendezvous id: the hosts of one run give the same

    def check(self) -> None:
        if self.count < 1:
            raise VitbenchError(f"--nodes must be >= 1, got {self.count}")
        if self.count > 1 and not self.endpoint:
            raise VitbenchError(f"--nodes {self.count} needs --rdzv-endpoint HOST:PORT, a port on one of the hosts "
                                "that every host can reach (the same on each)")
        if self.endpoint and not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", self.endpoint):
            raise VitbenchError(f"--rdzv-endpoint must be HOST:PORT, got {self.endpoint!r}")


def check_launch(gpus: int, device: str | None, batch_size: int, loader: str, nodes: Nodes = Nodes()) -> None:
    """Everything a launch needs, checked before any process starts."""
    nodes.check()
    ranks = gpus * nodes.count
    if ranks < 2:
        return
    if device != "cpu" and (not torch.cuda.is_available() or torch.cuda.device_count() < gpus):
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise VitbenchError(f"--gpus {gpus} needs {gpus} CUDA GPUs; this machine has {have} "
                            f"(--device cpu runs {gpus} CPU processes on gloo, for testing)")
    if batch_size % ranks:
        over = f"--gpus {gpus}" if nodes.count == 1 else f"{ranks} ranks (--gpus {gpus} x --nodes {nodes.count})"
        raise VitbenchError(f"--batch-size {batch_size} (the global batch) must divide evenly over {over}")
    if loader == "dataloader":
        raise VitbenchError("--gpus N keeps the dataset on every GPU: --loader dataloader does not apply")


def launch(gpus: int, argv: list[str], nodes: Nodes = Nodes()) -> int:
    """Run ``vitbench <argv>`` as ``gpus`` ranks on this host (and as many on each other node); the exit code of
    the failed rank, else 0."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # its notes repeat what we say
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // gpus)))
    where = (["--standalone"] if nodes.count == 1 else
             [f"--nnodes={nodes.count}", "--rdzv-backend=c10d", f"--rdzv-endpoint={nodes.endpoint}",
              f"--rdzv-id={nodes.job}"])
    args = get_args_parser().parse_args(
        [*where, f"--nproc-per-node={gpus}", "--max-restarts=0", "--monitor-interval=0.5", "-m", "vitbench", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp)
        code = first.exitcode if first.exitcode and first.exitcode > 0 else 1
        print(f"error: data-parallel run failed: rank {first.local_rank} exited with code {first.exitcode}; "
              "every other rank was stopped", file=sys.stderr)
        return code
    except SignalException:  # Ctrl-C / SIGTERM: passed on to every rank and waited for; rank 0 said what it did
        return 130
    return 0


def init(device: str | None) -> torch.device:
    """Join the process group of this rank; its device (``cuda:LOCAL_RANK``, or with ``device`` "cpu" the
    CPU on gloo)."""
    local = int(os.environ["LOCAL_RANK"])
    on_cuda = device != "cpu" and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return torch.device("cuda", local) if on_cuda else torch.device("cpu")


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def max_over_ranks(device: torch.device, *values: float) -> list[float]:
    """Each value's largest over every rank (one all-reduce; a host sync); the values themselves on one process."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def agree(device: torch.device, *flags: bool) -> list[bool]:
    """Each flag OR-ed over every rank."""
    return [bool(v) for v in max_over_ranks(device, *map(float, flags))]


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` summed over every rank (``t`` itself when there is one process)."""
    if world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t


def rank_tags(device: torch.device) -> dict[str, str]:
    """world_size and, per rank, where it ran: 'rank.1.gpu': 'host cuda:1 NVIDIA H200 (CUDA_VISIBLE_DEVICES=0,1)'."""
    name = f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    mine = f"{socket.gethostname()} {device}{name}" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else "")
    everyone: list = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    return {"world_size": str(world_size()), **{f"rank.{i}.gpu": str(w) for i, w in enumerate(everyone)}}
