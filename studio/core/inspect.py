"""Plain-data answers for the window's set-up panels: what a model source is, and what a dataset
will look like to the model.

    info = describe_model("bundled:smollm2-135m-instruct")     # fast, torch-free, no conversion
    preview = preview_dataset(cfg.data, cfg.model.source, cfg.model.task,
                              progress=print, should_stop=lambda: False)   # loads a tokenizer: a worker thread

`describe_model` reads only headers: config.json, tokenizer_config.json, the JSON header of each
safetensors file, the key/value and tensor tables at the head of a .gguf file (parsed here: the
`gguf` package's GGUFReader builds a numpy view per vocabulary string, ~5 s for SmolLM2). It never
converts a GGUF, never downloads, never imports torch or transformers.

`preview_dataset` reads and formats the data with the very code training uses (data.py: the same
format detection, chat templates, loss masks, truncation, split and packing) and returns the
first rows as the model will see them, with the parts that carry loss marked. Tokenizers are
cached per resolved model, so a second preview (another file, another max_seq_len) is quick.
Everything returned is plain Python (str, int, float, bool, list, dict, tuple): safe to hand to
the GUI thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config import find_file
from .data import (IGNORE, TASKS, _classification_columns, _examples, _pack, _truncate, classification_labels,
                   settle_format)
from .datafiles import read_rows
from .errors import DataError, ModelError
from .models import BUNDLED, gguf_cache_folder, locate_source, pickled_weights
from .safeload import check_safetensors, check_weight_file

if TYPE_CHECKING:  # pragma: no cover
    from .config import DataSection


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
_GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
                    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
                    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
                    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
                    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0"}


class PreviewCancelled(Exception):
    """preview_dataset stopped because should_stop() said so. Not an error: nothing to show."""


# =================================================================================================
# describe_model
# =================================================================================================


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

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_header(path: str | Path) -> tuple[dict, dict, list[tuple[str, tuple[int, ...], int]]]:
    """(metadata, array lengths, tensors) from a .gguf file's head, without reading the weights.

    metadata: key -> value (long arrays, such as the vocabulary, are left out: see array lengths);
    tensors: (name, shape, ggml type). Raises ModelError if the file is not a readable GGUF.
    """
    path = Path(path)
    bad = f"model.source: {path}: not a valid GGUF file"
    check_weight_file(path, ModelError, "model.source", min_size=0)   # the GGUF checks below say "too short"
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise ModelError(f"{bad} (only {os.fstat(f.fileno()).st_size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse_gguf(buf, bad)
    except OSError as e:
        raise ModelError(f"model.source: {path}: cannot read ({e.strerror})") from None


def _parse_gguf(buf, bad: str):
    if buf[:4] != b"GGUF":
        raise ModelError(f"{bad} (it does not start with the GGUF marker)")
    order = "<"
    version = struct.unpack_from("<I", buf, 4)[0]
    if version > 0xFFFF:  # a big-endian file
        order, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        raise ModelError(f"{bad} (GGUF version {version}; expected 2 or 3)")
    u32, u64 = struct.Struct(order + "I").unpack_from, struct.Struct(order + "Q").unpack_from
    size = len(buf)

    def string(off):
        n = u64(buf, off)[0]
        if off + 8 + n > size:
            raise ModelError(f"{bad} (truncated: a string runs past the end of the file)")
        return bytes(buf[off + 8: off + 8 + n]).decode("utf-8", "replace"), off + 8 + n

    def value(kind, off, key):
        if kind in _GGUF_SCALARS:
            fmt = struct.Struct(order + _GGUF_SCALARS[kind])
            return fmt.unpack_from(buf, off)[0], off + fmt.size
        if kind == _GGUF_STRING:
            return string(off)
        if kind != _GGUF_ARRAY:
            raise ModelError(f"{bad} (unknown value type {kind} for key '{key}')")
        item, count = u32(buf, off)[0], u64(buf, off + 4)[0]
        off += 12
        if count <= 64:
            items = []
            for _ in range(count):
                v, off = value(item, off, key)
                items.append(v)
            lengths[key] = count  # after any inner arrays: the outer length wins
            return items, off
        lengths[key] = count
        if item in _GGUF_SCALARS:  # long numeric arrays (token types, scores): skip them
            off += count * struct.calcsize(_GGUF_SCALARS[item])
        elif item == _GGUF_STRING:  # the vocabulary and merges: walk the lengths only
            for _ in range(count):
                off += 8 + u64(buf, off)[0]
        else:
            for _ in range(count):
                _, off = value(item, off, key)
        if off > size:
            raise ModelError(f"{bad} (truncated inside '{key}')")
        return None, off

    lengths: dict[str, int] = {}
    try:
        n_tensors, n_kv = u64(buf, 8)[0], u64(buf, 16)[0]
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ModelError(f"{bad} (implausible header: {n_tensors} tensors, {n_kv} keys)")
        off, meta = 24, {}
        for _ in range(n_kv):
            key, off = string(off)
            kind = u32(buf, off)[0]
            v, off = value(kind, off + 4, key)
            if v is not None:
                meta[key] = v
        tensors = []
        for _ in range(n_tensors):
            name, off = string(off)
            dims = u32(buf, off)[0]
            if dims > 8:
                raise ModelError(f"{bad} (tensor '{name}' has {dims} dimensions)")
            shape = struct.unpack_from(order + "Q" * dims, buf, off + 4)
            kind = u32(buf, off + 4 + 8 * dims)[0]
            off += 4 + 8 * dims + 4 + 8
            tensors.append((name, tuple(int(d) for d in shape), int(kind)))
    except struct.error:
        raise ModelError(f"{bad} (truncated header)") from None
    return meta, lengths, tensors


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
            "dtype": _GGUF_FILE_TYPES.get(file_type, f"file type {file_type}") if file_type is not None else None,
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


# =================================================================================================
# preview_dataset
# =================================================================================================

_CACHE_SIZE = 3
_tokenizers: "OrderedDict[tuple, tuple[object, threading.Lock]]" = OrderedDict()
_cache_lock = threading.Lock()
_resolve_lock = threading.Lock()  # one GGUF conversion / download at a time


def clear_tokenizer_cache() -> None:
    with _cache_lock:
        _tokenizers.clear()


def _tokenizer(source: str, trust_remote_code: bool, say: Callable[[str], None]):
    """(resolved model, tokenizer, its lock): loaded once per resolved model, kept in a small LRU."""
    from .models import load_tokenizer, resolve_source

    with _resolve_lock:
        resolved = resolve_source(source, trust_remote_code, progress=say)
    key = (resolved.path, resolved.fingerprint, bool(trust_remote_code))
    with _cache_lock:
        if key in _tokenizers:
            _tokenizers.move_to_end(key)
            return (resolved, *_tokenizers[key])
    say("loading the tokenizer")
    tokenizer = load_tokenizer(resolved, trust_remote_code)
    with _cache_lock:
        entry = _tokenizers.setdefault(key, (tokenizer, threading.Lock()))
        _tokenizers.move_to_end(key)
        while len(_tokenizers) > _CACHE_SIZE:
            _tokenizers.popitem(last=False)
    return (resolved, *entry)


class _Watched:
    """The rows, as data._examples reads them, asking should_stop every few rows."""

    def __init__(self, rows, check: Callable[[], None], say: Callable[[str], None], what: str):
        self.rows, self.check, self.say, self.what = rows, check, say, what
        self.column_names = rows.column_names

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        n = len(self.rows)
        every = max(500, n // 10)
        for i, record in enumerate(self.rows):
            if i % 16 == 0:
                self.check()
            if i and i % every == 0:
                self.say(f"tokenizing {self.what}: {i} of {n} rows")
            yield record


def preview_dataset(data: "DataSection", model_source: str, task: str, rows: int = 5, config_source: str = "",
                    progress: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None,
                    *, seed: int = 0, trust_remote_code: bool = False) -> dict:
    """The dataset as training will see it: format, split sizes, the first rows rendered with their
    loss-carrying parts marked, token-length statistics. Loads the model's tokenizer (a GGUF is
    converted first: slow once), so call it from a worker thread.

    `progress(message)` hears each phase; `should_stop()` is asked between phases and every few rows
    while tokenizing, and True aborts with PreviewCancelled. Data errors raise the DataError lines
    training raises; model errors the ModelError lines. `seed` is train.seed (it picks the eval rows).

    Returns a dict:
      path, eval_path, format, task, model_path, columns, rows (rows in the file), eval_rows (rows in
      eval_path or None), train_examples, eval_examples (as training will have them), dropped (left
      with nothing to learn after truncation), packed, max_seq_len, truncated (examples longer than
      max_seq_len, cut), lengths {count, min, median, p95, max, mean} (tokens per row before truncation),
      total_tokens (all rows, before truncation), train_tokens (the training set as fed, per epoch),
      loss_tokens (tokens of the training set whose prediction is trained; None for classification),
      label_names, label_counts, chat_template ("model", "fallback-chatml" or None),
      examples [{row, text, segments [(text, trained)], tokens, truncated, cut_text, dropped, label}],
      warnings (list of lines).
    """
    import numpy as np

    say = progress or (lambda message: None)

    def check():
        if should_stop is not None and should_stop():
            raise PreviewCancelled("dataset preview cancelled")

    if task not in TASKS:
        raise DataError(f"data: unknown task '{task}' (expected one of {', '.join(TASKS)})")
    section = dataclasses.replace(data, path=find_file(data.path, config_source),
                                  eval_path=find_file(data.eval_path, config_source) if data.eval_path else "")
    where = Path(section.path).name
    check()
    say(f"reading {where}")
    table = read_rows(section.path)
    check()
    # the format, as prepare_data settles it
    fmt = settle_format(section, table, task, where)
    max_len = int(section.max_seq_len)
    causal = task == "causal-lm"
    packing = causal and fmt == "text" and bool(section.pack)
    labels, label_names = None, []
    if not causal:
        text_col, label_col, label_names = classification_labels(section, table)
        labels = (text_col, label_col, {name: i for i, name in enumerate(label_names)})
    eval_table = None
    if section.eval_path:
        say(f"reading {Path(section.eval_path).name}")
        eval_table = read_rows(section.eval_path)
        if not causal:
            _classification_columns(list(eval_table.column_names), labels[0], labels[1],
                                    Path(section.eval_path).name)
    check()

    say("resolving the model")
    src = model_source.strip()
    if src and not src.startswith("bundled:") and (src.startswith((".", "~", "/")) or Path(src).exists()):
        src = find_file(src, config_source)
    resolved, tok, tok_lock = _tokenizer(src, trust_remote_code, say)
    check()

    def tokenize(table_, where_):
        """Examples with their full lengths, and which survive truncation (as prepare_data keeps them)."""
        examples, helper = _examples(_Watched(table_, check, say, where_), where_, tok, task, fmt, max_len, labels)
        full = [len(ex["input_ids"]) for ex in examples]
        if causal and not packing:
            kept = [bool(_truncate([ex], max_len)[0]) for ex in examples]
            if not any(kept):
                raise DataError(f"{where_}: no example has any tokens to learn from within max_seq_len={max_len} "
                                f"(all {len(table_)} rows dropped; raise data.max_seq_len)")
        else:
            kept = [True] * len(examples)
        if not causal:  # classification is truncated by the tokenizer: measure the cut rows again
            for i, n in enumerate(full):
                if n >= max_len:
                    full[i] = len(helper._encode(table_[i][labels[0]], special=True))
        return examples, full, kept, helper

    with tok_lock:  # a fast tokenizer must not be used by two threads at once
        say(f"tokenizing {where}")
        examples, full, kept, helper = tokenize(table, where)
        eval_examples = None
        if eval_table is not None:
            eval_examples, _, eval_kept, _ = tokenize(eval_table, Path(section.eval_path).name)
        check()
        say("measuring")
        shown = [_render(tok, i, examples[i], full[i], kept[i], max_len, causal, packing, label_names,
                         table[i][labels[0]] if not causal else None)
                 for i in range(min(max(int(rows), 0), len(examples)))]

    # the split, as prepare_data makes it (the seeded split only picks which rows: sizes follow n)
    seen = [_seen(ex, max_len, causal, packing) for ex, k in zip(examples, kept) if k]
    warnings = []
    if eval_examples is not None:
        train_set = seen
        eval_set = [_seen(ex, max_len, causal, packing) for ex, k in zip(eval_examples, eval_kept) if k]
    elif section.eval_fraction > 0:
        n = len(seen)
        n_eval = max(1, math.floor(n * float(section.eval_fraction)))
        if n - n_eval >= 1:
            train_idx, eval_idx = _split_indices(n, n_eval, seed)
            train_set, eval_set = [seen[i] for i in train_idx], [seen[i] for i in eval_idx]
        else:
            train_set, eval_set = seen, []
            warnings.append(f"too few examples ({n}) to hold out {section.eval_fraction:g} for evaluation: "
                            "no evaluation set")
    else:
        train_set, eval_set = seen, []
    if packing:
        train_set = _pack(train_set, max_len)
        eval_set = _pack(eval_set, max_len) if eval_set else eval_set
    eval_max = int(getattr(section, "eval_max", 0) or 0)
    if eval_max and len(eval_set) > eval_max:   # prepare_data evaluates these only
        warnings.append(f"evaluating {eval_max:,} of the {len(eval_set):,} held-out examples (data.eval_max)")
        eval_set = eval_set[:eval_max]

    dropped = kept.count(False) + (eval_kept.count(False) if eval_examples is not None else 0)
    truncated = 0 if packing else sum(n > max_len for n in full)
    if truncated:
        warnings.append(f"{truncated} of {len(full)} rows are longer than max_seq_len={max_len} tokens "
                        "and will be cut")
    if dropped:
        warnings.append(f"{dropped} rows have nothing left to learn from within max_seq_len={max_len} "
                        "and will be dropped")
    template_used = {"tokenizer": "model", "fallback-chatml": "fallback-chatml"}.get(helper.template_used)
    if template_used == "fallback-chatml":
        warnings.append("the model has no chat template: conversations use the studio's ChatML layout "
                        "(saved with the adapter)")
    arr = np.asarray(full, dtype=np.float64)
    label_counts = {}
    if not causal:
        for ex in examples:
            name = label_names[ex["labels"]]
            label_counts[name] = label_counts.get(name, 0) + 1
    return {
        "path": section.path,
        "eval_path": section.eval_path,
        "format": fmt,
        "task": task,
        "model_path": resolved.path,
        "columns": list(table.column_names),
        "rows": len(table),
        "eval_rows": len(eval_table) if eval_table is not None else None,
        "train_examples": len(train_set),
        "eval_examples": len(eval_set),
        "dropped": dropped,
        "packed": packing,
        "max_seq_len": max_len,
        "truncated": truncated,
        "lengths": {"count": len(full), "min": int(arr.min()), "median": float(np.median(arr)),
                    "p95": float(np.percentile(arr, 95)), "max": int(arr.max()), "mean": float(arr.mean())},
        "total_tokens": int(sum(full)),
        "train_tokens": int(sum(len(ex["input_ids"]) for ex in train_set)),
        "loss_tokens": (int(sum(sum(t != IGNORE for t in ex["labels"][1:]) for ex in train_set))
                        if causal else None),
        "label_names": list(label_names),
        "label_counts": label_counts,
        "chat_template": template_used,
        "examples": shown,
        "warnings": warnings,
    }


def _seen(example: dict, max_len: int, causal: bool, packing: bool) -> dict:
    """An example as it enters training (truncated unless it is packed; classification is already cut)."""
    if not causal or packing:
        return example
    return {"input_ids": example["input_ids"][:max_len], "labels": example["labels"][:max_len]}


def _split_indices(n: int, n_eval: int, seed: int) -> tuple[list[int], list[int]]:
    """Which examples prepare_data's seeded train_test_split puts where (it depends on n and seed only)."""
    import datasets

    split = datasets.Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=n_eval, seed=seed)
    return list(split["train"]["i"]), list(split["test"]["i"])


def _decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _render(tok, i, example, full_len, kept, max_len, causal, packing, label_names, raw_text) -> dict:
    ids = list(example["input_ids"])
    if not causal:
        text = _decode(tok, ids)
        cut = ""
        if full_len > len(ids) and raw_text is not None:  # where the tokenizer stopped reading the text
            try:
                enc = tok(raw_text, add_special_tokens=True, truncation=True, max_length=max_len,
                          return_offsets_mapping=True)
                end = max((b for _, b in enc["offset_mapping"]), default=0)
                cut = raw_text[end:]
            except (NotImplementedError, TypeError, ValueError):
                cut = ""
        return {"row": i + 1, "text": text, "segments": [(text, False)] if text else [], "tokens": full_len,
                "truncated": full_len > len(ids), "cut_text": cut, "dropped": False,
                "label": label_names[example["labels"]]}
    labels = list(example["labels"])
    if packing:
        visible_ids, visible_labels, cut = ids, labels, ""
    else:
        visible_ids, visible_labels = ids[:max_len], labels[:max_len]
        cut = _decode(tok, ids[max_len:]) if len(ids) > max_len else ""
    text = _decode(tok, visible_ids)
    return {"row": i + 1, "text": text,
            "segments": _segments(tok, visible_ids, [t != IGNORE for t in visible_labels], text),
            "tokens": full_len, "truncated": bool(cut), "cut_text": cut, "dropped": not kept, "label": None}


def _segments(tok, ids: list[int], trained: list[bool], text: str) -> list[tuple[str, bool]]:
    """The decoded text cut where the loss mask changes: [(text, trained), ...], joined == text.

    Cut points come from decoding each prefix, so a character whose bytes span two tokens stays whole.
    """
    runs, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or trained[k] != trained[start]:
            runs.append((start, k, trained[start]))
            start = k
    out, pos = [], 0
    for a, b, flag in runs:
        if b == len(ids):
            end = len(text)
        else:
            prefix = _decode(tok, ids[:b])
            if not text.startswith(prefix):
                # this tokenizer decodes differently in pieces: decode each run on its own instead
                return [(_decode(tok, ids[a:b]), flag) for a, b, flag in runs]
            end = max(len(prefix), pos)
        if end > pos:
            if out and out[-1][1] == flag:
                out[-1] = (out[-1][0] + text[pos:end], flag)
            else:
                out.append((text[pos:end], flag))
        pos = end
    return out
