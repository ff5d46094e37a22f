"""A model source described from its file headers, torch-free and offline: `describe_model`.

`describe_model` is what the set-up panel shows about a model; the memory plan (plan.py) reads
safetensors headers through `safetensors_files` and `safetensors_header`.

    info = describe_model("bundled:smollm2-135m-instruct")     # fast, torch-free, no conversion

It reads only headers: config.json, tokenizer_config.json, the JSON header of each safetensors
file, the key/value and tensor tables at the head of a .gguf file (ggufheader.py). It never
converts a GGUF, never downloads, never imports torch or transformers. Everything returned is
plain Python, safe to hand to the GUI thread.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .config import find_file
from .dataformats import TASKS
from .errors import ModelError
from .ggufheader import GGUF_FILE_TYPES, read_gguf_header
from .models import BUNDLED, gguf_cache_folder, locate_source, pickled_weights
from .safeload import check_safetensors

# model_type values of encoder-only models: they classify, they do not generate.
ENCODER_TYPES = frozenset({
    "bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta",
    "xlm-roberta-xl", "camembert", "mpnet", "modernbert", "ernie", "xlm", "flaubert", "longformer",
    "big_bird", "funnel", "mobilebert", "squeezebert", "convbert", "rembert", "megatron-bert", "nezha",
    "roc_bert", "data2vec-text", "luke", "esm", "canine", "ibert", "layoutlm", "mra", "nystromformer",
    "yoso", "xmod", "nomic_bert", "new", "jina_bert",
})
GGUF_ENCODER_ARCHS = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "neo-bert",
                                "modern-bert"})
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json",
                    "spiece.model", "sentencepiece.bpe.model")


def describe_model(source: str, task: str = "causal-lm", config_source: str = "") -> dict:
    """What a model source is, from file headers only (no torch, no conversion, no network).

    Returns a dict with these keys (None where not known):
      source, kind ("bundled" | "folder" | "gguf" | "hub"), path (the folder, .gguf file or hub id
      the source names), resolves_to (the folder training loads: the GGUF's cache folder, the hub
      cache snapshot; None for a hub id not cached), ready (False: a GGUF conversion or a download
      comes first), note (one line about that, or ""), format ("safetensors" | "bin" | "gguf"),
      name, architecture, model_type, parameters, parameters_exact, dtype, size_bytes, layers,
      hidden_size, vocab_size, max_positions, has_chat_template, suits (the task it is built
      for), tasks (the tasks it can be trained for), task (as asked), warnings (list of lines).
    Raises ModelError (one line naming the path and what was expected) for bad input.
    """
    src = source.strip()
    if src and not src.startswith("bundled:") and (src.startswith((".", "~", "/")) or Path(src).exists()):
        src = find_file(src, config_source)  # as training resolves it (config.resolved_paths)
    try:
        kind, where = locate_source(src)
    except ModelError as e:
        raise _with_hint(e, src) from None
    target = Path(where)
    info = _blank(source.strip(), kind, where)
    if kind == "hub":
        cached = _hub_cache_folder(where)
        if cached is None:
            info["note"] = ("not a local folder or file: read as a Hugging Face hub id, downloaded when "
                            "training starts")
            if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
                info["warnings"].append(f"'{where}' is not in the Hugging Face cache and the hub is offline "
                                        "(HF_HUB_OFFLINE): training will fail to download it")
            _fit_task(info, task)
            return info
        info.update(_describe_folder(cached))
        info.update(resolves_to=str(cached), ready=True, note="in the Hugging Face cache")
    elif target.suffix.lower() == ".gguf":
        info.update(_describe_gguf(target))
        cache = gguf_cache_folder(target)
        converted = (cache / "config.json").is_file() and any(cache.glob("*.safetensors"))
        info.update(resolves_to=str(cache), ready=converted,
                    note=("converted to safetensors (cached)" if converted else
                          "converted to safetensors on first use (a one-time wait, tens of seconds for a small "
                          "model), then cached"))
    else:
        info.update(_describe_folder(target))
        info["resolves_to"] = str(target)
    if kind == "bundled":
        info["name"] = src.split(":", 1)[1]
        info["bundled_task"] = BUNDLED[info["name"]][2]
    _fit_task(info, task)
    return info


def _blank(source: str, kind: str, where: str) -> dict:
    return {"source": source, "kind": kind, "path": where, "resolves_to": None, "ready": kind != "hub",
            "note": "", "format": None, "name": Path(where).name if kind != "hub" else where,
            "architecture": None, "model_type": None, "parameters": None, "parameters_exact": False,
            "dtype": None, "size_bytes": None, "layers": None, "hidden_size": None, "vocab_size": None,
            "max_positions": None, "has_chat_template": None, "suits": None, "tasks": [], "task": "",
            "warnings": []}


def _with_hint(error: ModelError, src: str) -> ModelError:
    """resolve_source's line, plus what the folder holds instead when that helps."""
    path = Path(src).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            return ModelError(f"{error}; it holds a LoRA adapter, not a base model")
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return ModelError(f"{error}; it holds {ggufs[0].name}: pick that .gguf file instead")
    return error


# -- folders --------------------------------------------------------------------------------------


def _describe_folder(folder: Path) -> dict:
    config = _read_json(folder / "config.json", "config.json")
    if not isinstance(config, dict):
        raise ModelError(f"model.source: {folder / 'config.json'}: expected a JSON object (a model config)")
    inner = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

    def pick(keys):
        for d in (config, inner):
            for k in keys:
                if isinstance(d.get(k), int) and not isinstance(d.get(k), bool):
                    return d[k]
        return None

    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    out = {"format": None, "architecture": archs[0] if archs else None,
           "model_type": config.get("model_type") if isinstance(config.get("model_type"), str) else None,
           "layers": pick(_LAYER_KEYS), "hidden_size": pick(_HIDDEN_KEYS), "vocab_size": pick(("vocab_size",)),
           "max_positions": pick(_POSITION_KEYS), "is_encoder_decoder": bool(config.get("is_encoder_decoder")),
           "warnings": []}
    shards = safetensors_files(folder)
    if shards:
        params, sizes, dtypes = 0, 0, {}
        for f in shards:
            header = safetensors_header(f)
            for name, meta in header.items():
                if name == "__metadata__" or not isinstance(meta, dict):
                    continue
                n = math.prod(int(d) for d in meta.get("shape", []))
                params += n
                dtypes[meta.get("dtype", "?")] = dtypes.get(meta.get("dtype", "?"), 0) + n
            sizes += f.stat().st_size
        out.update(format="safetensors", parameters=params, parameters_exact=True, size_bytes=sizes,
                   dtype=max(dtypes, key=dtypes.get) if dtypes else None)
    else:
        bins = sorted(folder.glob("*.bin"))
        bins = [b for b in bins if b.name != "training_args.bin"]
        if not bins:
            raise ModelError(f"model.source: {folder}: no weights in the folder (expected *.safetensors "
                             "beside config.json)")
        raise ModelError(pickled_weights(str(folder), bins[0].name))   # only safetensors are read
    out["has_chat_template"] = _folder_chat_template(folder)
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        out["warnings"].append(f"{folder}: no tokenizer files (tokenizer.json, tokenizer_config.json, vocab.txt, "
                               "...): training cannot load a tokenizer")
    return out


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"model.source: {path}: {what} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ModelError(f"model.source: {path}: {what} is not UTF-8 text (expected JSON)") from None
    except OSError as e:
        raise ModelError(f"model.source: {path}: cannot read {what} ({e.strerror})") from None


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = _read_json(index, "the safetensors index")
        names = sorted(set((data.get("weight_map") or {}).values())) if isinstance(data, dict) else []
        missing = [n for n in names if not (folder / n).exists()]   # a pipe or folder: safetensors_header says so
        if missing:
            raise ModelError(f"model.source: {folder}: shard {missing[0]} named in model.safetensors.index.json "
                             f"is missing ({len(missing)} of {len(names)} shards missing)")
        if names:
            return [folder / n for n in names]
    return [f for f in sorted(folder.glob("*.safetensors")) if not f.name.startswith("adapter_model")]


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file: 8 bytes of little-endian length, then the JSON.
    The file is validated by safetensors first (a truncated copy fails here, not at training)."""
    check_safetensors(path, ModelError, "model.source")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 1 or n > size - 8 or n > 100_000_000:
            raise ModelError(f"model.source: {path}: not a valid safetensors file (bad header length; "
                             "the file may be truncated or corrupt)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ModelError(f"model.source: {path}: not a valid safetensors file (its header is not a JSON object)")
    return header


def _folder_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    if (folder / "additional_chat_templates").is_dir() and any((folder / "additional_chat_templates").iterdir()):
        return True
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        try:
            data = json.loads(tc.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return False
        return isinstance(data, dict) and bool(data.get("chat_template"))
    return False


# -- GGUF -----------------------------------------------------------------------------------------


def _describe_gguf(path: Path) -> dict:
    meta, lengths, tensors = read_gguf_header(path)
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def num(key):
        v = meta.get(f"{arch}.{key}")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    vocab = num("vocab_size") or lengths.get("tokenizer.ggml.tokens")
    file_type = meta.get("general.file_type")
    name = meta.get("general.name")
    return {"format": "gguf", "architecture": arch, "model_type": arch,
            "name": name if isinstance(name, str) else path.stem,
            "parameters": sum(math.prod(shape) for _, shape, _ in tensors), "parameters_exact": True,
            "dtype": GGUF_FILE_TYPES.get(file_type, f"file type {file_type}") if file_type is not None else None,
            "size_bytes": path.stat().st_size, "layers": num("block_count"), "hidden_size": num("embedding_length"),
            "vocab_size": vocab, "max_positions": num("context_length"),
            "has_chat_template": bool(meta.get("tokenizer.chat_template")),
            "gguf_encoder": arch in GGUF_ENCODER_ARCHS, "warnings": []}


# -- the hub cache --------------------------------------------------------------------------------


def _hub_cache_folder(repo_id: str) -> Path | None:
    """The cached snapshot of a hub model (config.json inside), or None. No network."""
    try:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of transformers
        return None
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = [s for s in (repo / "snapshots").glob("*") if (s / "config.json").is_file()]
    return max(snaps, key=lambda s: s.stat().st_mtime) if snaps else None


# -- tasks ----------------------------------------------------------------------------------------


def _fit_task(info: dict, task: str) -> None:
    """Fill suits / tasks / task and add a warning when the chosen task does not fit."""
    info["task"] = task
    arch, model_type = info.get("architecture") or "", info.get("model_type") or ""
    encoder_decoder = info.pop("is_encoder_decoder", False)
    gguf_encoder = info.pop("gguf_encoder", False)
    bundled_task = info.pop("bundled_task", None)
    warnings = info["warnings"]
    if info["format"] == "gguf":
        if gguf_encoder:
            info.update(suits="sequence-classification", tasks=[])
            warnings.append(f"GGUF architecture '{arch}' is an encoder: the studio converts .gguf files as causal "
                            "LMs, which fails for it; use its Hugging Face folder instead")
        else:
            info.update(suits="causal-lm", tasks=["causal-lm", "sequence-classification"])
    elif encoder_decoder:
        info.update(suits=None, tasks=[])
        warnings.append(f"{arch or model_type} is an encoder-decoder (seq2seq) model; the studio trains "
                        "decoder-only causal LMs and encoder classifiers")
    elif model_type in ENCODER_TYPES or arch.endswith(("ForMaskedLM", "ForPreTraining")):
        info.update(suits="sequence-classification", tasks=["sequence-classification"])
    elif arch.endswith(("ForCausalLM", "LMHeadModel")):
        info.update(suits="causal-lm", tasks=["causal-lm", "sequence-classification"])
    elif arch.endswith("ForSequenceClassification"):
        info.update(suits="sequence-classification", tasks=["sequence-classification"])
    elif info["kind"] == "hub" and info["format"] is None:
        info.update(suits=None, tasks=list(TASKS))  # not downloaded: nothing to read yet
    else:
        info.update(suits=bundled_task, tasks=[bundled_task] if bundled_task else [])
        if not bundled_task:
            warnings.append(f"cannot tell from config.json what task {arch or model_type or 'this model'} suits")
    if bundled_task and info["suits"] is None:
        info["suits"] = bundled_task
    if task not in TASKS:
        warnings.append(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
    elif info["tasks"] and task not in info["tasks"]:
        what = arch or model_type or "this model"
        if task == "causal-lm" and info["suits"] == "sequence-classification":
            warnings.append(f"{what} is an encoder: it cannot generate text, so it cannot be trained as a "
                            "causal-lm; choose task sequence-classification or a causal LM "
                            "(e.g. bundled:smollm2-135m-instruct)")
        else:
            warnings.append(f"{what} does not suit task '{task}' (it suits {', '.join(info['tasks']) or 'none'})")
