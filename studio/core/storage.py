"""How the frozen base model is held (`model.dtype`, `model.quantize`) and computed in
(`train.precision`).

The adapter's weights and its optimizer state are always fp32 (master weights; peft upcasts
them when the base is half). The frozen base may be stored in bf16 or fp16, or have its linear
layers quantized to 4 bits (NF4 with double quantization, QLoRA) or 8 bits by bitsandbytes;
embeddings, norms and the output head then stay in the storage dtype.

`auto` picks, in this order:
    compute   train.precision if set; else the storage dtype if that is half; else on a GPU bf16
              (fp16 where it has no bf16), on a CPU with bf16 matrix units (AMX or AVX512-BF16:
              a bf16 matmul runs ~5x the fp32 rate there) bf16, elsewhere fp32. A CPU run whose
              storage is explicitly fp32 computes in fp32 (autocast over fp32 weights casts every
              weight on every forward: slower than plain fp32 on a CPU).
    storage   model.dtype if set; else the compute dtype when that is half, fp32 otherwise.
Half storage computes in its own dtype (there is no fp32 compute over bf16 weights).

`resolve()` is torch-free when the device is known (the memory plan and the window use it);
`cpu_has_bf16()` reads the CPU's flags, not a guess from its name.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import dataclass

from .errors import ConfigError

HALF = ("bf16", "fp16")
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
BNB_INSTALL = "pip install bitsandbytes"


@dataclass(frozen=True)
class Storage:
    dtype: str        # frozen weights that are not quantized: fp32, bf16, fp16
    quantize: str     # none, 4bit, 8bit (the base's linear layers)
    compute: str      # autocast: fp32 (none), bf16, fp16
    why: str = ""     # what auto saw, for the run's first lines

    @property
    def quantized(self) -> bool:
        return self.quantize != "none"

    def describe(self) -> str:
        held = {"4bit": "4-bit NF4", "8bit": "8-bit"}.get(self.quantize)
        base = f"{held} linear layers, the rest {self.dtype}" if held else self.dtype
        return f"base held in {base}, computing in {self.compute}"


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX or AVX512-BF16), read from
    the flags the kernel reports; where there is no /proc/cpuinfo, from torch's own probe when
    torch is already loaded. Apple silicon and others: False (torch's CPU bf16 matmul is emulated
    there and slower than fp32)."""
    flags = _cpu_flags()
    if flags is not None:
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
        except Exception:   # a private probe: absent in some builds
            return False
    return False


def _cpu_flags() -> set[str] | None:
    override = os.environ.get("LORA_STUDIO_CPU_FLAGS")   # tests: pretend another CPU
    if override is not None:
        return set(override.replace(",", " ").split())
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def bitsandbytes_installed() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def resolve(dtype: str, quantize: str, precision: str, device_type: str, *, gpu_bf16: bool = True,
            variant=None) -> Storage:
    """The storage and compute a run uses on `device_type` ("cpu", "cuda", "mps"). Raises
    ConfigError with one line for a combination that cannot run, before anything is loaded.
    `variant`: the run's Variant (it is asked whether it moves the base weights)."""
    if quantize != "none":
        if not bitsandbytes_installed():
            raise ConfigError(f"model.quantize: {quantize} needs the bitsandbytes package ({BNB_INSTALL})")
        if device_type not in ("cpu", "cuda"):
            raise ConfigError(f"model.quantize: {quantize} runs on a CUDA GPU or a CPU (bitsandbytes), "
                              f"this run is on {device_type}")
        if quantize == "8bit" and device_type == "cpu":
            # bitsandbytes 0.50's 8-bit layer trains on CUDA; on CPU its second forward in a
            # training step finds its row scales gone (AttributeError in MatMul8bitFp): refuse it
            raise ConfigError("model.quantize: 8bit trains on a CUDA GPU only; on this CPU use 4bit (NF4) or "
                              "model.dtype = bf16")
    if dtype == "fp16" and device_type != "cuda":
        raise ConfigError(f"model.dtype: fp16 needs a CUDA device, this run is on {device_type} (use bf16 or fp32)")
    if dtype == "bf16" and device_type == "cuda" and not gpu_bf16:
        raise ConfigError("model.dtype: this GPU does not support bf16 (use fp16 or fp32)")
    why = ""
    if precision != "auto":
        compute = precision
    elif dtype in HALF:
        compute = dtype
    elif device_type == "cuda":
        compute = "bf16" if gpu_bf16 else "fp16"
        why = "a GPU with bf16" if gpu_bf16 else "a GPU without bf16"
    elif device_type == "cpu" and dtype != "fp32" and cpu_has_bf16():
        compute = "bf16"
        why = "this CPU has bf16 matrix units"
    else:
        compute = "fp32"
    if dtype != "auto":
        stored = dtype
    else:
        stored = compute if compute in HALF else "fp32"
    if stored in HALF and compute != stored:
        raise ConfigError(f"model.dtype: a base stored in {stored} computes in {stored}; set train.precision "
                          f"to {stored} or auto (it is {precision})")
    if variant is not None and variant.moves_base_weights and quantize != "none":
        raise ConfigError(f"model.quantize: {variant.name} moves the base weights W themselves, and a {quantize} W "
                          "cannot take its small updates (use model.quantize = none; bf16 storage keeps the "
                          "adapted layers' W in fp32)")
    return Storage(stored, quantize, compute, why)


def held_text(event: dict) -> str:
    """How a run_started event's run computes and holds its base, for the CLI and the window:
    'bf16', or 'bf16, base 4bit' when the base is held otherwise."""
    compute, base, quantize = event.get("precision") or "", event.get("base_dtype"), event.get("quantize") or "none"
    if quantize != "none":
        return f"{compute}, base {quantize}"
    if base and base != compute:
        return f"{compute}, base {base}"
    return compute


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def quantization_config(storage: Storage, skip: tuple[str, ...] = ()):
    """transformers' BitsAndBytesConfig for a quantized storage (None when it is not).
    The output head and a classifier stay unquantized: they are trained or tied."""
    if not storage.quantized:
        return None
    from transformers import BitsAndBytesConfig

    # transformers' own default skip list is the output embedding; a classifier head is trained
    # as a whole (modules_to_save), so it must stay a plain layer too
    keep = ["lm_head", "score", "classifier", "qa_outputs", *skip]
    if storage.quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch_dtype(storage.compute),
                                  llm_int8_skip_modules=keep)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=keep)


def dense_weight(layer):
    """The weight of a (possibly quantized) linear layer as a dense tensor in (out, in) layout
    of its stored shape: bitsandbytes' 4- and 8-bit layers are de-quantized (peft's helper, one
    layer at a time: the caller holds one dense copy at most); a plain layer's weight is
    returned as is (no copy)."""
    weight = getattr(layer, "weight", None)
    if weight is None or not is_quantized_layer(layer):
        return weight
    from peft.utils.integrations import dequantize_module_weight

    return dequantize_module_weight(layer)


def is_quantized_layer(layer) -> bool:
    cls = type(getattr(layer, "weight", None)).__name__
    return cls in ("Params4bit", "Int8Params")


def keep_4bit_differentiable(model) -> None:
    """bitsandbytes' Linear4bit, on a CPU with AVX512-BF16, repacks its weight for a fused
    inference kernel the first time it runs in eval mode on an input that needs no gradient
    (an evaluation, a probe, LoRA-drop's sample), and keeps that layout. That kernel
    (gemv_4bit) has no backward: training after it would silently pass no gradient through the
    frozen layers to the adapters below. Training uses the differentiable path only."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def release_checkpoint(model) -> None:
    """After a quantized load, the layers that stay unquantized (embeddings, norms, the output
    head) are views into the memory-mapped checkpoint, and they keep the whole mapping alive:
    every page of the full-precision weights that were read to be quantized stays resident and
    counted (2.2 GB of a ~1B model's bf16 file, in a run whose weights take 1.1 GB;
    tests/bench/bench_memory.py). Copying those few tensors lets the mapping go."""
    import gc

    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not is_quantized_layer(module) or name != "weight":
                param.data = param.data.clone()
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.clone()
    gc.collect()


class PageOutWhileLoading:
    """While a quantized model loads on CPU, hand the mapped checkpoint's pages back to the kernel
    every `every` seconds, so that the file (2.2 GB for a ~1B bf16 model) is not counted in the
    process's memory beside the weights it is being quantized into.

    transformers reads the safetensors files through mmap and keeps each file mapped until the
    load ends; every page read stays resident and counted. madvise(MADV_PAGEOUT) on those ranges
    (found in /proc/self/maps) reclaims the clean file pages; a page still being read is simply
    read again from the page cache, and a page that was written (never, for a checkpoint) would
    go to swap rather than be lost, unlike MADV_DONTNEED. Neither torch nor transformers offers
    this, hence by hand; Linux only (5.4+), and a no-op elsewhere."""

    MADV_PAGEOUT = 21

    def __init__(self, files, every: float = 0.2):
        import os

        self.files = {os.path.realpath(str(f)) for f in files}
        self.every = every
        self._thread = None
        self._stop = None

    def _madvise(self):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc.madvise

    def page_out(self, madvise) -> int:
        """Page out every mapping of the checkpoint files now; the number of ranges advised."""
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return 0
        n = 0
        for line in lines:
            parts = line.split(None, 5)
            if len(parts) < 6 or parts[5].strip() not in self.files:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            madvise(start, end - start, self.MADV_PAGEOUT)
            n += 1
        return n

    def __enter__(self):
        import sys
        import threading

        madvise = self._madvise() if sys.platform.startswith("linux") and self.files else None
        if madvise is None:
            return self
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.every):
                self.page_out(madvise)

        self._thread = threading.Thread(target=loop, name="page-out-checkpoint", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        return False
