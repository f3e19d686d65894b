"""Process-group facts the training loop needs. A single process is rank 0 of 1.

Under `torchrun` (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT) `distributed_session()` joins the process group; without those variables it
yields the single-process context, so one code path serves both. The backend is NCCL when
CUDA is available and gloo otherwise (`train.distributed_backend` overrides it). Every
collective is bounded by `train.distributed_timeout_s`, so when one rank dies the others
stop with an error instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from audiocpc.errors import AudiocpcError, ConfigError
from audiocpc.training.device import local_cuda_index

log = logging.getLogger("audiocpc")


class DistributedRunError(AudiocpcError):
    """A collective failed: another rank stopped, was killed, or the network broke."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average a metric over ranks (identity in a single process)."""
        if not self.enabled:
            return tensor
        reduced = tensor.detach().clone()
        torch.distributed.all_reduce(reduced)
        return reduced / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on at least one (e.g. a stop request)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (pickled between our own processes only)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, value: Any) -> list[Any]:
        """`value` from every rank, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def gather_to_main(self, value: Any) -> Optional[list[Any]]:
        """`value` from every rank, in rank order, on rank 0 only (None on the others): what
        only rank 0 writes need not be held by every rank."""
        if not self.enabled:
            return [value]
        out: Optional[list[Any]] = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(value, out, dst=0)
        return out

    def gather_negative_bank(self, z: torch.Tensor, labels: Optional[torch.Tensor],
                             group: Any = None) -> tuple[torch.Tensor, Optional[torch.Tensor], int]:
        """Concatenate z [B, L, D] of every rank into [world*B, L, D] (and labels alike).

        The gather is differentiable: in the backward pass each rank receives the gradients
        that every rank's loss sent to its z (an all_gather whose backward all-reduces), so the
        DDP-averaged gradient equals that of one process holding the global batch. (Detaching
        the other ranks' z instead breaks InfoNCE's balance between a positive's pull and
        its negatives' push, and training stalls: measured on the tiny preset.) Returns
        (bank, labels, index of this rank's first sequence in the bank).
        """
        if not self.enabled:
            return z, labels, 0
        bank = _GatherWithGradient.apply(z.contiguous(), group, self.rank, self.world_size)
        bank_labels = labels
        if labels is not None:
            label_parts = [torch.empty_like(labels) for _ in range(self.world_size)]
            torch.distributed.all_gather(label_parts, labels.contiguous(), group=group)
            bank_labels = torch.cat(label_parts)
        return bank, bank_labels, self.rank * z.shape[0]


class _GatherWithGradient(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the sum, over all ranks, of the
    gradients for its own slice (an all_reduce then a slice: works on gloo and NCCL)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, group: Any, rank: int, world: int) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.rows = group, rank, local.shape[0]
        parts = [torch.empty_like(local) for _ in range(world)]
        torch.distributed.all_gather(parts, local, group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None, None]:
        grad = grad.contiguous().clone()  # reduced in place below
        torch.distributed.all_reduce(grad, group=ctx.group)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None, None


SINGLE_PROCESS = DistributedContext()


def contiguous_share(weights: Sequence[float], rank: int, world_size: int) -> range:
    """The items (indices into `weights`) that rank `rank` of `world_size` works on:
    consecutive items, each rank about an equal part of the total weight (e.g. the crops of
    each file). In rank order the shares cover every item once, in order, so results
    concatenated in rank order are in item order. A rank may get none (more ranks than items)."""
    if world_size <= 1:
        return range(len(weights))
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size == 0:
        return range(0)
    if not w.sum() > 0:
        w = np.ones_like(w)
    # an item belongs to the rank whose part of the total holds its weight's midpoint; the
    # owners never decrease along the items, so each rank's items are consecutive
    owners = np.minimum(((np.cumsum(w) - w / 2) * world_size / w.sum()).astype(np.int64),
                        world_size - 1)
    return range(int(np.searchsorted(owners, rank, "left")), int(np.searchsorted(owners, rank, "right")))

_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_distributed() -> bool:
    """True when a launcher such as torchrun started this process as one of several."""
    return all(name in os.environ for name in _LAUNCH_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def uses_cuda(device: str) -> bool:
    """Whether train.device (auto, cpu, cuda, cuda:1, ...) puts the model on a GPU."""
    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def choose_backend(requested: str, device: str = "auto") -> str:
    """`auto`: NCCL when the model runs on CUDA, else gloo."""
    if requested == "auto":
        return "nccl" if uses_cuda(device) else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise ConfigError("train.distributed_backend: nccl needs CUDA devices, and none is "
                          "available here; use auto or gloo")
    return requested


def init_from_env(backend: str = "auto", timeout_s: float = 600.0,
                  device: str = "auto") -> DistributedContext:
    """Join the process group described by torchrun's environment variables, or return
    the single-process context when there are none. Idempotent."""
    if not launched_distributed():
        return SINGLE_PROCESS
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    chosen = choose_backend(backend, device)
    if chosen == "nccl":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        if local_world > torch.cuda.device_count():  # NCCL refuses two ranks on one GPU
            raise ConfigError(
                f"train.distributed_backend: nccl needs one GPU per process, but {local_world} "
                f"processes share {torch.cuda.device_count()} GPU(s) on this node; start at most "
                f"{torch.cuda.device_count()} per node (--nproc-per-node) or use "
                "--set train.distributed_backend=gloo")
        torch.cuda.set_device(local_cuda_index(local_rank))
    if not torch.distributed.is_initialized():
        try:
            torch.distributed.init_process_group(chosen, timeout=timedelta(seconds=timeout_s),
                                                 rank=rank, world_size=world)
        except (RuntimeError, ValueError) as exc:
            raise DistributedRunError(
                f"rank {rank}: could not join the process group ({chosen} at "
                f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): {exc}") from None
    return DistributedContext(rank, world, local_rank, chosen)


def shutdown(dist: DistributedContext) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def distributed_session(backend: str = "auto", timeout_s: float = 600.0, device: str = "auto"
                        ) -> Iterator[DistributedContext]:
    """The process group for the duration of a command; ranks other than 0 log errors only."""
    joined_here = launched_distributed() and not torch.distributed.is_initialized()
    dist = init_from_env(backend, timeout_s, device)
    logger = logging.getLogger("audiocpc")
    previous_level = logger.level
    if not dist.is_main:
        logger.setLevel(logging.ERROR)
    try:
        yield dist
    finally:
        logger.setLevel(previous_level)
        if joined_here:  # a process group the caller set up is the caller's to end
            shutdown(dist)


def is_collective_failure(exc: BaseException) -> bool:
    """Whether an exception came from the communication layer rather than from our code."""
    if isinstance(exc, torch.distributed.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("gloo", "nccl", "connection closed", "connection reset",
                                      "broken pipe", "timed out", "socket"))


def effective_lr(lr: float, scaling: str, world_size: int) -> float:
    """The learning rate used with `world_size` processes: `linear` multiplies train.lr by the
    number of processes (the global batch grows with it); `none` keeps train.lr."""
    return lr * world_size if scaling == "linear" else lr
