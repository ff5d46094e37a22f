"""The memory plan: a run's peak memory, estimated before anything loads, against what the
device has free (`lora-studio plan CONFIG [--json]`, and the window before Train).

Torch-free: it reads the model's tensor shapes from the safetensors (or GGUF) headers and its
config.json, the device's free memory from psutil (CPU) or nvidia-smi (CUDA). Written by hand:
accelerate's `estimate-memory` counts only the weights of a hub model (no adapter, optimizer,
activations or quantization of a local folder), and nothing else estimates a LoRA run.

    weights      each tensor in its storage: 4-bit NF4 is 0.5 byte a weight plus its block
                 scales (one byte a 64-block, double quantization); 8-bit 1 byte plus an fp32
                 scale a row; the rest in model.dtype (storage.py). Delta-LoRA holds its adapted
                 W in fp32 on a half base.
    adapter      the variant's trainable and frozen factors, fp32
    optimizer    AdamW: the gradient and two moments of each trainable number, fp32
    activations  what backward keeps, per layer and token, in the compute dtype (Llama-shaped:
                 the projections' inputs and outputs, attention's output, the MLP's three
                 intermediates, the norms in fp32); with gradient checkpointing only each
                 layer's input, plus one layer's worth while it is recomputed. Plus the output
                 layer's logits in fp32 (over the labelled positions only with
                 train.label_logits_only: chat and instruction data are counted as half labelled).
                 Every row is counted full (batch x max_seq_len): the worst case, which packed
                 plain text reaches; shorter chats cost less.
    runtime      the Python process with torch and its libraries (CPU), or the CUDA context
                 and allocator slack (GPU)
The constants were checked against measured peaks (tests/bench/bench_memory.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import storage
from .config import RunConfig, find_file
from .errors import ModelError
from .variants import get_variant

GIB = 1024 ** 3
MIB = 1024 ** 2
RUNTIME_CPU = 640 * MIB       # python + torch + transformers + peft + datasets, imported and warmed up
RUNTIME_CUDA = 600 * MIB      # allocator slack and kernels' workspaces (the context is not "allocated")
_NOT_LINEAR = re.compile(r"(embed|wte|wpe|tok_embeddings|token_embd|lm_head|^output\.|norm|ln_|layernorm|"
                         r"position|\.bias$|rotary)", re.IGNORECASE)
_HEADS = ("lm_head", "score", "classifier", "qa_outputs", "output.weight")


@dataclass
class Plan:
    device: str                     # "cpu" or "cuda"
    held: str                       # storage.Storage.describe()
    weights_bytes: int
    adapter_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    runtime_bytes: int
    peak_bytes: int
    free_bytes: int | None          # what the device has free now (None: unknown)
    total_bytes: int | None
    fits: bool | None
    advice: list[str] = field(default_factory=list)    # what would make it fit
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: 'peak ~3.2 GiB of 20.1 GiB free (fits)'."""
        free = f" of {gib(self.free_bytes)} free" if self.free_bytes is not None else ""
        verdict = "" if self.fits is None else (" — fits" if self.fits else " — will not fit")
        return f"peak ~{gib(self.peak_bytes)}{free} on {self.device}{verdict}"

    def lines(self) -> list[str]:
        rows = [("weights", self.weights_bytes), ("adapter", self.adapter_bytes),
                ("optimizer", self.optimizer_bytes), ("activations", self.activations_bytes),
                ("runtime", self.runtime_bytes)]
        out = [f"{self.held}"] + [f"  {name:<12}{gib(n):>10}" for name, n in rows]
        out.append(f"  {'peak':<12}{gib(self.peak_bytes):>10}")
        if self.free_bytes is not None:
            out.append(f"  {'free':<12}{gib(self.free_bytes):>10}  ({self.device})")
        out += [f"to fit: {a}" for a in self.advice] + [f"note: {n}" for n in self.notes]
        return out


def gib(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / MIB:.0f} MiB"


# -- the model's shapes -------------------------------------------------------------------------

@dataclass
class Shapes:
    tensors: list[tuple[str, tuple[int, ...]]]
    config: dict
    file_bytes: int = 0           # the safetensors files' tensor bytes (0: not safetensors)
    file_itemsize: int = 0        # bytes an element in those files (the most common dtype)

    def get(self, *keys, default=None):
        inner = self.config.get("text_config") if isinstance(self.config.get("text_config"), dict) else {}
        for d in (self.config, inner):
            for k in keys:
                v = d.get(k)
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
        return default


def model_shapes(source: str, config_source: str = "") -> Shapes:
    """Tensor names and shapes, and config.json, of a model source, from headers only."""
    from .ggufheader import read_gguf_header
    from .modelfiles import describe_model, safetensors_files, safetensors_header

    info = describe_model(source, config_source=config_source)
    folder = info.get("resolves_to")
    if folder and Path(folder, "config.json").is_file() and safetensors_files(Path(folder)):
        config = json.loads(Path(folder, "config.json").read_text(encoding="utf-8"))
        tensors = []
        file_bytes, itemsizes = 0, {}
        for f in safetensors_files(Path(folder)):
            for name, meta in safetensors_header(f).items():
                if name != "__metadata__" and isinstance(meta, dict):
                    shape = tuple(int(d) for d in meta.get("shape", []))
                    tensors.append((name, shape))
                    start, end = meta.get("data_offsets", (0, 0))
                    file_bytes += int(end) - int(start)
                    if math.prod(shape):
                        size = (int(end) - int(start)) // math.prod(shape)
                        itemsizes[size] = itemsizes.get(size, 0) + math.prod(shape)
        return Shapes(tensors, config, file_bytes, max(itemsizes, key=itemsizes.get) if itemsizes else 0)
    if str(info.get("path", "")).lower().endswith(".gguf"):
        meta, _, entries = read_gguf_header(info["path"])
        arch = str(meta.get("general.architecture", "llama"))
        config = {"num_hidden_layers": meta.get(f"{arch}.block_count"),
                  "hidden_size": meta.get(f"{arch}.embedding_length"),
                  "intermediate_size": meta.get(f"{arch}.feed_forward_length"),
                  "num_attention_heads": meta.get(f"{arch}.attention.head_count"),
                  "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv"),
                  "vocab_size": None}
        tensors = [(name, tuple(reversed(shape))) for name, shape, _ in entries]   # GGUF lists dims inner first
        emb = [s for n, s in tensors if n.startswith("token_embd")]
        if emb:
            config["vocab_size"] = max(emb[0])
        return Shapes(tensors, config)
    raise ModelError(f"model.source: {source}: the memory plan needs the model's files (download or convert it first)")


# -- the estimate -------------------------------------------------------------------------------

def _is_linear(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and not _NOT_LINEAR.search(name) and not any(h in name for h in _HEADS)


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if name.endswith(".weight") else name


def _targets(shapes: Shapes, target_modules: str) -> list[tuple[int, int]]:
    """(d_out, d_in) of each linear layer the adapter wraps."""
    text = target_modules.strip()
    wanted = None if text == "all-linear" else {t.strip() for t in text.split(",") if t.strip()}
    out = []
    for name, shape in shapes.tensors:
        if not name.endswith(".weight") or not _is_linear(name, shape):
            continue
        module = _module(name)
        if wanted is None or module.rsplit(".", 1)[-1] in wanted or module in wanted:
            out.append((shape[0], shape[1]))
    return out


def check_rank(variant_name: str, opts, shapes: Shapes) -> None:
    """A rank above an adapted layer's min(in, out), refused from the file headers, before anything
    loads (the same sentence variants.base.check_ranks gives once the model is built)."""
    from .errors import ConfigError

    option = get_variant(variant_name).rank_option
    if not option:
        return
    rank = getattr(opts, option)
    text = opts.target_modules.strip()
    wanted = None if text == "all-linear" else {t.strip() for t in text.split(",") if t.strip()}
    smallest = None
    for name, shape in shapes.tensors:
        if not name.endswith(".weight") or not _is_linear(name, shape):
            continue
        module = _module(name)
        if wanted is not None and module.rsplit(".", 1)[-1] not in wanted and module not in wanted:
            continue
        if smallest is None or min(shape[:2]) < min(smallest[1]):
            smallest = (module, (shape[1], shape[0]))
    if smallest is not None and rank > min(smallest[1]):
        layer, (fan_in, fan_out) = smallest
        raise ConfigError(f"variant.{option}: expected at most {min(smallest[1])} for this model ({layer} maps "
                          f"{fan_in} to {fan_out} features), got {rank}")


def estimate(cfg: RunConfig, *, device: str | None = None, free_bytes: int | None = None,
             total_bytes: int | None = None, shapes: Shapes | None = None, gpu_bf16: bool = True) -> Plan:
    """The run's estimated peak memory on `device` (default: where train.device would put it)."""
    if device is None:
        device = pick_device(cfg.train.device)
    held = storage.resolve(cfg.model.dtype, cfg.model.quantize, cfg.train.precision, device,
                           gpu_bf16=gpu_bf16, variant=get_variant(cfg.variant_name))
    shapes = shapes or model_shapes(cfg.model.source, cfg.source_path)
    opts = cfg.variant_options()
    targets = _targets(shapes, opts.target_modules)
    check_rank(cfg.variant_name, opts, shapes)
    stored = storage.BYTES[held.dtype]
    weights = 0
    for name, shape in shapes.tensors:
        n = math.prod(shape)
        if held.quantized and _is_linear(name, shape):
            weights += n // 2 + n // 64 + 4096 if held.quantize == "4bit" else n + 4 * shape[0]
        else:
            weights += n * stored
    variant = get_variant(cfg.variant_name)
    trainable, frozen, w_copies = variant.adapter_numbers(opts, targets)
    if variant.moves_base_weights and held.dtype != "fp32":
        weights += w_copies * (4 - stored)      # its adapted W widened to fp32
    if cfg.model.task == "sequence-classification":
        trainable += _head_numbers(shapes)     # the classifier head trains whole
    adapter = 4 * (trainable + frozen)
    optimizer = 12 * trainable                 # gradient + Adam's two moments, fp32

    layers = shapes.get("num_hidden_layers", "n_layer", "num_layers", default=1) or 1
    hidden = shapes.get("hidden_size", "n_embd", "d_model", default=768) or 768
    inter = shapes.get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden) or 4 * hidden
    vocab = shapes.get("vocab_size", default=32000) or 32000
    tokens = cfg.train.batch_size * cfg.data.max_seq_len
    from . import distributed   # per-process share under a launch: the plan is per process

    c = 2 if held.compute in storage.HALF else 4
    # per token and layer: ~12 hidden-sized tensors in the compute dtype (the projections'
    # inputs and outputs, attention's output, the residuals), 4 MLP-sized ones (gate, up, the
    # activation, their product) and ~5 hidden-sized fp32 ones (the norms upcast). Fitted to
    # SmolLM2-135M at 256-2048 tokens a step, fp32 and bf16 (bench_memory.py): within 5%.
    per_layer = c * (12 * hidden + 4 * inter) + 20 * hidden
    if cfg.train.gradient_checkpointing:
        acts = tokens * (layers * c * hidden + per_layer)
    else:
        acts = tokens * layers * per_layer
    if cfg.model.task == "causal-lm":
        # the logits of every labelled position, ~4 fp32 vocabulary-wide tensors (the logits,
        # log-softmax, its gradient, a copy); chat data labels about half its tokens
        text = cfg.data.format == "text" or (cfg.data.format == "auto" and cfg.data.path.lower().endswith(".txt"))
        labelled = 0.5 if cfg.train.label_logits_only and not text else 1.0
        acts += int(tokens * labelled * vocab * 16)
    runtime = RUNTIME_CPU if device == "cpu" else RUNTIME_CUDA
    peak = int(weights + adapter + optimizer + acts + runtime)
    notes = []
    if device == "cpu" and shapes.file_bytes and not held.quantized:
        # Loading maps the checkpoint: its pages count in the process's memory while the weights
        # are read, and a load that changes their dtype holds the new weights beside them
        # (bench_memory.py: fp32 from a ~1B bf16 file, 2.2 GB of file beside 4.4 GB of weights).
        # A quantized load hands the file's pages back as it goes (storage.PageOutWhileLoading).
        converts = shapes.file_itemsize != stored
        load = int(shapes.file_bytes + (weights if converts else 0) + runtime)
        if load > peak:
            notes.append(f"the peak is while loading: the {gib(shapes.file_bytes)} checkpoint is mapped"
                         + (" beside the converted weights" if converts else ""))
            peak = load
    if distributed.World().distributed:
        notes.append("per process")
    if free_bytes is None and total_bytes is None:
        free_bytes, total_bytes = device_memory(device)
    fits = None if free_bytes is None else peak <= free_bytes
    plan = Plan(device=device, held=held.describe(), weights_bytes=int(weights), adapter_bytes=int(adapter),
                optimizer_bytes=int(optimizer), activations_bytes=int(acts), runtime_bytes=runtime, peak_bytes=peak,
                free_bytes=free_bytes, total_bytes=total_bytes, fits=fits, notes=notes)
    if fits is False:
        plan.advice = _advice(cfg, device, free_bytes, shapes, gpu_bf16)
    return plan


def _head_numbers(shapes: Shapes) -> int:
    return sum(math.prod(s) for n, s in shapes.tensors if any(h in n for h in ("score", "classifier")))


def _advice(cfg: RunConfig, device: str, free: int, shapes: Shapes, gpu_bf16: bool) -> list[str]:
    """The changes, alone, that would bring the estimate under `free` (cheapest first)."""
    tries = []
    moves_base = get_variant(cfg.variant_name).moves_base_weights   # a quantized W cannot move
    if cfg.model.quantize == "none" and storage.bitsandbytes_installed() and not moves_base:
        tries.append(("model.quantize = 4bit", {"model.quantize": "4bit"}))
    if not cfg.train.gradient_checkpointing:
        tries.append(("train.gradient_checkpointing = true", {"train.gradient_checkpointing": True}))
    for batch in (cfg.train.batch_size // 2, cfg.train.batch_size // 4, 1):
        if 1 <= batch < cfg.train.batch_size:
            tries.append((f"train.batch_size = {batch} (train.grad_accum = "
                          f"{cfg.train.grad_accum * cfg.train.batch_size // batch} keeps the batch)",
                          {"train.batch_size": batch}))
    for length in (cfg.data.max_seq_len // 2, cfg.data.max_seq_len // 4):
        if length >= 64:
            tries.append((f"data.max_seq_len = {length}", {"data.max_seq_len": length}))
    out = []
    for text, change in tries:
        try:
            changed = cfg.with_overrides([f"{k}={json.dumps(v)}" for k, v in change.items()])
            p = estimate(changed, device=device, free_bytes=free, total_bytes=None, shapes=shapes, gpu_bf16=gpu_bf16)
        except Exception:   # an option that cannot run here: not advice
            continue
        if p.fits:
            out.append(f"{text}: ~{gib(p.peak_bytes)}")
    if not out and tries:
        out.append("a smaller model (none of 4bit, checkpointing, a smaller batch or length alone is enough)")
    return out


# -- the device ----------------------------------------------------------------------------------

def pick_device(requested: str) -> str:
    """Where train.device would run, without torch: a visible NVIDIA GPU for auto, else the CPU."""
    if requested in ("cpu", "cuda", "mps"):
        return requested
    return "cuda" if _nvidia_smi() else "cpu"


def _nvidia_smi() -> list[tuple[int, int]]:
    """(free, total) bytes of each GPU nvidia-smi sees (CUDA_VISIBLE_DEVICES honoured for the first)."""
    exe = shutil.which("nvidia-smi")
    if exe is None or os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            gpus.append((int(parts[0]) * MIB, int(parts[1]) * MIB))
    return gpus


def device_memory(device: str) -> tuple[int | None, int | None]:
    if device == "cpu":
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)
    if device == "cuda":
        gpus = _nvidia_smi()
        return gpus[0] if gpus else (None, None)
    return None, None


def plan_for(path_or_cfg, overrides: list[str] | None = None) -> Plan:
    cfg = path_or_cfg if isinstance(path_or_cfg, RunConfig) else RunConfig.from_toml(path_or_cfg)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    cfg = cfg.copy()
    src = cfg.model.source
    if not src.startswith("bundled:") and (src.startswith((".", "~", "/")) or Path(src).exists()):
        cfg.model.source = find_file(src, cfg.source_path)
    return estimate(cfg)
