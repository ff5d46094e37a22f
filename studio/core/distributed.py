"""Runs on several processes: `accelerate launch -m studio train CONFIG.toml` (or torchrun).

The launcher starts one process per device and tells each who it is (RANK, LOCAL_RANK,
WORLD_SIZE). The Trainer does the distributed training itself (accelerate wraps the model in
DDP, shards the batches, averages the gradients); what this module adds is what the Trainer
leaves to its caller:

- one run: the main process makes the run folder and writes the events, the checkpoint markers,
  the adapter and the gallery entry; the others train and write only what the Trainer writes
  per process (their RNG state in a checkpoint). They learn the folder from the main process.
- one batch: `train.batch_size` is the batch of one optimizer micro-step for the whole run, so
  a config trains the same adapter on one process or on N (each process takes batch_size / N
  examples; the Trainer averages the loss over all label tokens of all processes).
- one decision: a stop (Ctrl-C) is agreed by all processes at a step boundary, so that none
  waits for the others' gradients forever.

Nothing here imports torch at module level (the CLI's `--help` stays fast).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError

TRUE = ("1", "true", "yes")


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0
    mode: str = "single"      # "single", "ddp", "fsdp", "deepspeed"

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Parameters split across processes (FSDP, DeepSpeed ZeRO-3): no process holds a whole
        weight between steps."""
        if self.mode == "fsdp":
            return True
        return self.mode == "deepspeed" and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world() -> World:
    """Who this process is, from the launcher's environment (one process when there is none)."""
    size = _int_env("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in TRUE:
        mode = "fsdp"
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in TRUE:
        mode = "deepspeed"
    else:
        mode = "ddp"
    return World(size=size, rank=_int_env("RANK", 0), local_rank=_int_env("LOCAL_RANK", 0), mode=mode)


def per_process_batch(batch_size: int, w: World) -> int:
    """The batch each process takes so that the run's batch is `batch_size`."""
    if batch_size % w.size:
        raise ConfigError(f"train.batch_size: {batch_size} examples cannot be split evenly across "
                          f"{w.size} processes; expected a multiple of {w.size} (each process takes "
                          "batch_size / processes examples per step)")
    return batch_size // w.size


def check_variant(variant, w: World) -> None:
    """Refuse, in one line, a variant that works on whole weights outside forward and backward
    (its `needs_whole_weights`) when this launch shards them."""
    if w.sharded and variant.needs_whole_weights:
        how = "FSDP" if w.mode == "fsdp" else "DeepSpeed ZeRO-3"
        raise ConfigError(f"variant.name: {variant.name} {variant.needs_whole_weights}, which needs whole "
                          f"weights in every process; {how} shards them. Launch it with DDP (accelerate "
                          "launch --multi_gpu) or DeepSpeed ZeRO-1/2")
    if w.mode == "deepspeed":
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("this launch asks for DeepSpeed, which is not installed "
                              "(pip install deepspeed, on a machine with CUDA)")


def start(w: World, use_cpu: bool):
    """Join the process group (accelerate's PartialState: gloo on CPUs, nccl on GPUs), once."""
    from accelerate import PartialState

    if use_cpu:
        os.environ["ACCELERATE_USE_CPU"] = "true"   # what TrainingArguments(use_cpu=True) will ask too
    return PartialState(cpu=use_cpu)


def share(value, w: World):
    """The main process's `value`, in every process (a small picklable object)."""
    if not w.distributed:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value if w.is_main else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


def anyone(flag: bool, device) -> bool:
    """True in every process when it is True in any (a stop asked in one of them)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


LOST_PEER = "another process of this run ended"


def lost_peer(e: BaseException) -> bool:
    """An error that only says another process went away (it failed and reported why itself)."""
    text = str(e)
    return any(m in text for m in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                   "NCCL communicator was aborted", "ProcessGroupNCCL"))


def barrier(w: World) -> None:
    if w.distributed:
        import torch.distributed as dist

        dist.barrier()
