"""Processes of a ``torchrun`` fit: the one place that knows how many processes run.

One mechanism for every task. Each process holds the whole model; after ``backward`` the loop
averages the gradients over processes (``average_gradients``: the gradient of the mean of the
processes' losses, what DistributedDataParallel computes), so every replica takes the same step.
A DistributedDataParallel wrapper would only synchronise when its ``forward`` runs, while a task
evaluates its model through ``Task.jet`` (``model.jet(...)`` or the model's own call), and its
state dict would carry a ``module.`` prefix; averaging after ``backward`` has neither problem.
What each process trains on:

- a task with ``batch_items`` returns a global batch of that many independent items; each
  process keeps every world_size-th item (``share_of_batch``), so K processes follow the
  one-process run with the same global batch;
- a task with ``shards_items`` is built on its share of the items (``FitContext.shard``) and
  fits its own models: no gradient is exchanged;
- any other task samples its own points with a generator seeded by (seed + rank).

The values a step logs are averaged over the processes that share a model
(``mean_over_processes``, only at logged steps); the final metrics are gathered to rank 0
(``gather``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import env
from ..errors import InputError
from ..tasks import FitContext, Task

__all__ = [
    "average_gradients", "barrier", "check_batch_items", "gather", "make_context",
    "mean_over_processes", "process_place", "replicated", "share_of_batch", "stop",
]


def process_place() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun set them; (0, 1, 0) without it."""
    return env.torchrun_ranks()


def make_context(device_name: str) -> FitContext:
    """The device ("auto", "cpu", "cuda"; a process's own GPU under torchrun) and the process
    group (gloo on CPU, nccl on CUDA) of this process."""
    rank, world_size, local_rank = process_place()
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (torch "
                         f"{torch.__version__}, cuda build: {torch.version.cuda})")
    device = torch.device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return FitContext(device, rank, world_size)


def barrier(context: FitContext) -> None:
    """Wait until every process got here (the others wait for rank 0 to own the run folder)."""
    if context.world_size > 1:
        torch.distributed.barrier()


def stop(context: FitContext) -> None:
    """Leave the process group (after the fit, or when it failed)."""
    if context.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def replicated(task: Task, context: FitContext) -> bool:
    """Whether the processes train one model together (gradients and logs averaged)."""
    return context.world_size > 1 and not task.shards_items


def check_batch_items(task: Task, context: FitContext) -> None:
    """A global batch must split into equal shares (so that the mean of the processes' losses
    is the loss of the global batch)."""
    items = task.batch_items
    if items is not None and items % context.world_size:
        raise InputError(f"--batch-size {items}: must be a multiple of the "
                         f"{context.world_size} processes (it is the global batch)")


def share_of_batch(batch: dict[str, torch.Tensor], task: Task,
                   context: FitContext) -> dict[str, torch.Tensor]:
    """This process's items of a global batch (every world_size-th along dim 0, from rank)."""
    if task.batch_items is None or context.world_size == 1:
        return batch
    return {k: v[context.rank::context.world_size] for k, v in batch.items()}


def average_gradients(model: nn.Module, world_size: int) -> None:
    """Every process sampled its own share; the mean of their gradients is the gradient of the
    mean loss."""
    for p in model.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world_size)


def mean_over_processes(values: dict[str, torch.Tensor], world_size: int
                        ) -> dict[str, torch.Tensor]:
    """Scalars averaged over the processes (equal shares): one all-reduce for all of them."""
    if world_size == 1:
        return values
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(())
                           for v in values.values()])
    torch.distributed.all_reduce(stacked)
    return dict(zip(values, stacked / world_size))


def gather(value: Any, context: FitContext) -> list:
    """Every process's ``value`` (any picklable object), in rank order."""
    if context.world_size == 1:
        return [value]
    gathered: list = [None] * context.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered
