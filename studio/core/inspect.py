"""The dataset preview: what a dataset will look like to the model, for the window's data panel.

    preview = preview_dataset(cfg.data, cfg.model.source, cfg.model.task,
                              progress=print, should_stop=lambda: False)   # loads a tokenizer: a worker thread

`preview_dataset` runs the stages of training's data preparation (data.py), the same functions:
read (datafiles.read_rows), format (dataformats.choose_format), tokenize (datatokenize.tokenize_rows
and keep_examples: the same format detection, chat templates, loss masks and truncation), split
(datasplit.hold_out) and pack (datasplit.pack, cap_eval), in memory and without the cache. It then
tokenizes its first `rows` rows again, whole, and returns them as the model will see them, with
the parts that carry loss marked. Tokenizers are cached per resolved model, so a second preview
(another file, another max_seq_len) is quick. Everything returned is plain Python (str, int,
float, bool, list, dict, tuple): safe to hand to the GUI thread.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config import find_file
from .datafiles import read_rows
from .dataformats import IGNORE, TASKS, choose_format
from .datasplit import cap_eval, hold_out, pack, token_lengths
from .datatokenize import keep_examples, tokenize_rows
from .errors import Cancelled, DataError

if TYPE_CHECKING:  # pragma: no cover
    from .config import DataSection

WATCH_ROWS = 16  # rows tokenized between two should_stop questions


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



def _watch(n: int, what: str, check: Callable[[], None], say: Callable[[str], None]) -> Callable[[int], None]:
    """tokenize_rows' report: asks should_stop after every batch, and says how far it got."""
    every = max(500, n // 10)
    done = 0

    def report(k: int) -> None:
        nonlocal done
        before, done = done, done + k
        check()
        if done < n and done // every > before // every:
            say(f"tokenizing {what}: {done} of {n} rows")

    return report


def preview_dataset(data: "DataSection", model_source: str, task: str, rows: int = 5, config_source: str = "",
                    progress: Callable[[str], None] | None = None, should_stop: Callable[[], bool] | None = None,
                    *, seed: int = 0, trust_remote_code: bool = False) -> dict:
    """The dataset as training will see it: format, split sizes, the first rows rendered with their
    loss-carrying parts marked, token-length statistics. Loads the model's tokenizer (a GGUF is
    converted first: slow once), so call it from a worker thread.

    `progress(message)` hears each phase; `should_stop()` is asked between phases and every few rows
    while tokenizing, and True aborts with Cancelled (nothing to show). Data errors raise the DataError lines
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
            raise Cancelled("dataset preview cancelled")

    if task not in TASKS:
        raise DataError(f"data: unknown task '{task}' (expected one of {', '.join(TASKS)})")
    section = dataclasses.replace(data, path=find_file(data.path, config_source),
                                  eval_path=find_file(data.eval_path, config_source) if data.eval_path else "")
    where = Path(section.path).name
    check()
    # read
    say(f"reading {where}")
    table = read_rows(section.path)
    check()
    # format
    form = choose_format(section, table, task, where)
    max_len, causal, packing, label_names = form.max_len, form.causal, form.packing, form.label_names
    eval_table, eval_where = None, Path(section.eval_path).name if section.eval_path else ""
    if section.eval_path:
        say(f"reading {eval_where}")
        eval_table = read_rows(section.eval_path)
        form.check_eval_columns(eval_table, eval_where)
    check()

    say("resolving the model")
    src = model_source.strip()
    if src and not src.startswith("bundled:") and (src.startswith((".", "~", "/")) or Path(src).exists()):
        src = find_file(src, config_source)
    resolved, tok, tok_lock = _tokenizer(src, trust_remote_code, say)
    check()

    def tokenize(table_, where_):
        """The rows tokenized as training tokenizes them, asking should_stop as it goes, and those kept."""
        check()
        formatter = form.formatter(tok, where_)
        tokenized = tokenize_rows(table_, formatter, form.labels, truncate=form.truncates,
                                  report=_watch(len(table_), where_, check, say), batch_rows=WATCH_ROWS)
        return keep_examples(tokenized, where_, max_len), formatter

    with tok_lock:  # a fast tokenizer must not be used by two threads at once
        # tokenize
        say(f"tokenizing {where}")
        kept, formatter = tokenize(table, where)
        eval_kept = tokenize(eval_table, eval_where)[0] if eval_table is not None else None
        full = kept.lengths.tolist()
        if not causal:  # classification is truncated by the tokenizer: measure the cut rows again
            for i, n in enumerate(full):
                if n >= max_len:
                    full[i] = len(formatter.encode(table[i][form.labels[0]], special=True))
        check()
        say("measuring")
        count = min(max(int(rows), 0), len(table))
        first = (tokenize_rows(table.select(range(count)), formatter, form.labels, truncate=False)
                 if count else [])   # the first rows again, untruncated, to show what is cut
        shown = [_render(tok, i, first[i], full[i], bool(kept.kept[i]), max_len, causal, packing, label_names,
                         table[i][form.labels[0]] if not causal else None)
                 for i in range(count)]

    # split and pack, as prepare_data does
    warnings = []
    if eval_kept is not None:
        train_set, eval_set = kept.examples, eval_kept.examples
    else:
        train_set, eval_set = hold_out(kept.examples, section.eval_fraction, seed)
        if eval_set is None and section.eval_fraction > 0:
            warnings.append(f"too few examples ({len(train_set)}) to hold out {section.eval_fraction:g} for "
                            "evaluation: no evaluation set")
    if packing:
        train_set, eval_set = pack(train_set, eval_set, max_len, where)
    eval_max = int(getattr(section, "eval_max", 0) or 0)
    eval_set, held_out = cap_eval(eval_set, eval_max)
    if held_out:
        warnings.append(f"evaluating {eval_max:,} of the {held_out:,} held-out examples (data.eval_max)")

    dropped = kept.dropped + (eval_kept.dropped if eval_kept is not None else 0)
    truncated = 0 if packing else sum(n > max_len for n in full)
    if truncated:
        warnings.append(f"{truncated} of {len(full)} rows are longer than max_seq_len={max_len} tokens "
                        "and will be cut")
    if dropped:
        warnings.append(f"{dropped} rows have nothing left to learn from within max_seq_len={max_len} "
                        "and will be dropped")
    template_used = {"tokenizer": "model", "fallback-chatml": "fallback-chatml"}.get(formatter.template_used)
    if template_used == "fallback-chatml":
        warnings.append("the model has no chat template: conversations use the studio's ChatML layout "
                        "(saved with the adapter)")
    arr = np.asarray(full, dtype=np.float64)
    label_counts = {}
    if not causal:
        for label in kept.examples["labels"]:
            name = label_names[label]
            label_counts[name] = label_counts.get(name, 0) + 1
    return {
        "path": section.path,
        "eval_path": section.eval_path,
        "format": form.name,
        "task": task,
        "model_path": resolved.path,
        "columns": list(table.column_names),
        "rows": len(table),
        "eval_rows": len(eval_table) if eval_table is not None else None,
        "train_examples": len(train_set),
        "eval_examples": len(eval_set) if eval_set is not None else 0,
        "dropped": dropped,
        "packed": packing,
        "max_seq_len": max_len,
        "truncated": truncated,
        "lengths": {"count": len(full), "min": int(arr.min()), "median": float(np.median(arr)),
                    "p95": float(np.percentile(arr, 95)), "max": int(arr.max()), "mean": float(arr.mean())},
        "total_tokens": int(sum(full)),
        "train_tokens": int(token_lengths(train_set).sum()),
        "loss_tokens": (int(sum(sum(t != IGNORE for t in labels[1:]) for labels in train_set["labels"]))
                        if causal else None),
        "label_names": list(label_names),
        "label_counts": label_counts,
        "chat_template": template_used,
        "examples": shown,
        "warnings": warnings,
    }


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
