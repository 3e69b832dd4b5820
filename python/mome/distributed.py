"""The processes of a `python -m mome.train` job: process-group setup under torchrun (one node or several) or as one
process, the DDP / FSDP wrapping of the model, and a preemption signal all processes agree on.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; without them we run as rank 0 of 1.
Backend: NCCL for GPU tensors, gloo for CPU tensors. A collective that waits longer than `timeout_s` (a rank that
died without its connection closing, a node cut off) fails with an error instead of hanging; a rank whose process is
killed closes its sockets, so the others fail at their next collective and torchrun stops the job.

FSDP (`fully_shard`, torch's FSDP2) shards every parameter, frozen ones included, over the processes: each decoder
layer of the LLM and each block of a vision encoder is a unit (gathered for its forward / backward, then freed), the
rest of the model is the root unit. Gradients are reduce-scattered (averaged, like DDP's all-reduce) and AdamW's
moments live only beside the shard they update.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (same shape on all), in rank order."""
        if not self.enabled:
            return [tensor]
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(out, tensor)
        return out

    def broadcast_int(self, value: int) -> int:
        """Rank 0's `value` on every rank."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64)
        dist.broadcast(t, src=0)
        return int(t.item())


def setup(device: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Initialises the process group when launched by torchrun; picks this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            # The loop's small collectives (token counts, the loss, the stop flag) are CPU tensors: gloo carries
            # those, NCCL the model's.
            backend="cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return Dist(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------------
# Wrapping


def uses_fsdp(model: nn.Module, env: Dist, strategy: str) -> bool:
    """`train.strategy`: fsdp, ddp, or auto (FSDP for a model over 1B parameters); one process wraps nothing."""
    if not env.enabled:
        return False
    return strategy == "fsdp" or (strategy == "auto" and sum(p.numel() for p in model.parameters()) > 1e9)


def wrap(model: nn.Module, env: Dist, strategy: str) -> nn.Module:
    """The model as the training loop calls it: sharded in place by FSDP (the returned module is `model`, its
    parameters now DTensor shards: build the optimizer after this), inside DDP, or as it is with one process."""
    if not env.enabled:
        return model
    if uses_fsdp(model, env, strategy):
        from torch.distributed.fsdp import fully_shard

        for block in fsdp_units(model):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    # Experts a batch does not route to get no gradient: find_unused_parameters lets DDP cope (K > 1 only).
    return DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
               find_unused_parameters=model.config.num_experts > 1)


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks (the elements of every `nn.ModuleList` of one block type: the LLM's decoder layers with
    their MoLE adapters, each vision encoder's transformer blocks), outermost lists only."""
    units, inside = [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in inside):
            continue
        if (isinstance(module, nn.ModuleList) and len(module) > 1 and len({type(m) for m in module}) == 1
                and any(True for _ in module.parameters())):
            units.extend(module)
            inside.append(name + ".")
    return units


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def unwrap(model: nn.Module) -> nn.Module:
    """The MoME inside a DDP wrapper (FSDP shards in place: the model is its own core)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gradient_sync(model: nn.Module, sync: bool):
    """A context in which backward reduces gradients over the processes (`sync`) or only accumulates them locally
    (the micro-batches before the last of an optimizer step)."""
    if is_fsdp(model):
        model.set_requires_gradient_sync(sync)
    elif isinstance(model, nn.parallel.DistributedDataParallel) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's piece of a (possibly sharded) tensor."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole of a (possibly sharded) tensor: a collective for a DTensor, every rank must call it."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def parameter_bytes(model: nn.Module) -> tuple[int, int]:
    """(frozen, trainable) parameter bytes held by this process."""
    frozen = trainable = 0
    for p in model.parameters():
        n = local(p).numel() * p.element_size()
        if p.requires_grad:
            trainable += n
        else:
            frozen += n
    return frozen, trainable


# ---------------------------------------------------------------------------------------------------------------------
# Preemption


class Preemption:
    """SIGTERM (a scheduler preempting or cancelling the job; torchrun forwards it to every worker) sets a flag;
    `requested()` is true on every rank as soon as it is set on any, so all of them stop at the same step."""

    def __init__(self):
        self.flag = False
        self.signal = None
        self._previous = signal.SIG_DFL

    def install(self) -> "Preemption":
        def handler(signum, frame):
            self.flag, self.signal = True, signum

        self._previous = signal.signal(signal.SIGTERM, handler)
        return self

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def requested(self, env: Dist) -> bool:
        t = torch.tensor([1.0 if self.flag else 0.0])
        return env.all_reduce_sum(t).item() > 0
