"""Where a run computes and how it holds its base: the torch device a run config asks for, and
its storage (storage.py has the rules), refused as one ConfigError before anything is loaded."""

from __future__ import annotations

from . import storage
from .config import RunConfig
from .errors import ConfigError
from .variants import get_variant


def pick_device(requested: str):
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for, but torch sees no CUDA device "
                          "(is this the CPU build of torch?)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("train.device: mps was asked for, but this machine has no Apple GPU")
    return torch.device(requested)


def pick_storage(cfg: RunConfig, device) -> "storage.Storage":
    """How this run holds its base and computes (storage.py has the rules); bad combinations
    are one ConfigError, raised before anything is loaded."""
    import torch

    gpu_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA device, this run is on {device.type} "
                          "(use fp32 or bf16)")
    if cfg.train.precision == "bf16" and not gpu_bf16:
        raise ConfigError("train.precision: this GPU does not support bf16 (use fp16 or fp32)")
    return storage.resolve(cfg.model.dtype, cfg.model.quantize, cfg.train.precision, device.type,
                           gpu_bf16=gpu_bf16, variant=get_variant(cfg.variant_name))
