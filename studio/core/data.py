"""Dataset files -> formatted, tokenized batches.

    rows = read_rows("chat.jsonl")                       # a datasets.Dataset, or a one-line DataError
    prepared = prepare_data(cfg.data, tokenizer, "causal-lm", seed=0)
    trainer = Trainer(..., train_dataset=prepared.train, eval_dataset=prepared.eval,
                      data_collator=prepared.collator)

Formats (`[data] format`, "auto" looks at the columns of the first file):

  text               "text"; causal LM on everything; `pack` concatenates and cuts max_seq_len blocks
  prompt-completion  "prompt", "completion"; loss on the completion (+ eos) only
  alpaca             "instruction", optional "input", "output"; the Stanford Alpaca prompt, loss on the output
  messages           "messages": [{role, content}], roles system/user/assistant/tool, rendered with the
                     tokenizer's chat template (ChatML-style fallback when it has none); loss on the
                     assistant turns only (their content and the end-of-turn marker)
  sharegpt           "conversations": [{from, value}], from human/user, gpt/assistant, system, tool
  classification     a text column and a label column (sequence classification)

Every example is truncated to max_seq_len; examples left with no loss tokens are dropped. Anything
wrong with the input raises DataError with one line naming the file, the row and the field.
Rows are formatted and tokenized through `Dataset.map` in chunks (with `num_proc` worker processes
for large files), and an error still names its row; the prepared examples are cached by
datacache.py.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .datafiles import read_rows
from .errors import DataError
from .jsonrows import type_name as _type_name
from .options import shown as _shown

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from .config import DataSection

FORMATS = ("text", "prompt-completion", "alpaca", "messages", "sharegpt", "classification")
TASKS = ("causal-lm", "sequence-classification")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "observation": "tool"}
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "input")
LABEL_COLUMNS = ("label", "labels", "class", "category", "target")
IGNORE = -100  # label value the loss skips (PyTorch CrossEntropyLoss ignore_index)
MAX_CLASSES = 10_000  # class numbers 0..9999: a larger number is a typo or an id, not a class


# Stanford Alpaca's prompt, verbatim (github.com/tatsu-lab/stanford_alpaca, train.py).
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

# ChatML layout for tokenizers that ship no template. Each turn is closed by the tokenizer's own
# eos token (ChatML's <|im_end|> when it has none), so a model trained this way stops by itself
# at generation time. Use the same template (chat_template_for) when generating.
FALLBACK_CHAT_TEMPLATE = (
    "{%- set eot = eos_token if eos_token else '<|im_end|>' -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eot + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


@dataclass
class PreparedData:
    train: "datasets.Dataset"        # input_ids, labels (causal: list, -100 = no loss; classification: int)
    eval: "datasets.Dataset | None"
    collator: Callable               # list[dict] -> {input_ids, attention_mask, labels} torch tensors
    format: str                      # the detected or requested format
    num_labels: int = 0              # classification only
    label_names: list[str] = field(default_factory=list)  # classification only: index -> name
    chat_template_used: str = ""     # "tokenizer", "fallback-chatml", or "" for non-chat formats
    dropped: int = 0                 # rows left with no loss tokens after truncation, or with no text
    notes: list[str] = field(default_factory=list)  # one line each, for the person: rows dropped, no eval set


# -- formats ------------------------------------------------------------------------------------

_EXPECTED = ("'text' (text), 'prompt'+'completion' (prompt-completion), 'instruction'+'output' (alpaca), "
             "'messages' (messages), 'conversations' (sharegpt)")


def detect_format(dataset, task: str, where: str = "data") -> str:
    """The format a dataset is in, from its column names (and first row for conversation columns)."""
    columns = list(dataset.column_names)
    if task == "sequence-classification":
        _classification_columns(columns, "", "", where)
        return "classification"
    if task != "causal-lm":
        raise DataError(f"{where}: unknown task '{task}' (expected one of {', '.join(TASKS)})")
    if "messages" in columns:
        return "messages"
    if "conversations" in columns:
        return "sharegpt"
    if "instruction" in columns and "output" in columns:
        return "alpaca"
    if "prompt" in columns and "completion" in columns:
        return "prompt-completion"
    if "text" in columns:
        return "text"
    raise DataError(f"{where}: no known format: found columns {', '.join(map(repr, columns)) or '(none)'}; "
                    f"expected {_EXPECTED}")


def _classification_columns(columns: list[str], text_column: str, label_column: str, where: str):
    def pick(wanted: str, candidates: tuple[str, ...], what: str, key: str) -> str:
        if wanted:
            if wanted not in columns:
                raise DataError(f"{where}: no column {wanted!r} (data.{key}); found {', '.join(map(repr, columns))}")
            return wanted
        for name in candidates:
            if name in columns:
                return name
        raise DataError(f"{where}: no {what} column: found {', '.join(map(repr, columns)) or '(none)'}; expected one "
                        f"of {', '.join(map(repr, candidates))} (or set data.{key})")

    return (pick(text_column, TEXT_COLUMNS, "text", "text_column"),
            pick(label_column, LABEL_COLUMNS, "label", "label_column"))


def classification_labels(section: "DataSection", rows, notes: list[str] | None = None) -> tuple[str, str, list[str]]:
    """(text column, label column, label names) so the model can be built with num_labels first.

    String labels -> their sorted unique names. Integer labels -> the numbers that occur, in
    order, as classes 0, 1, ...: "0".."k" when they are 0..k; sparse numbers (0 and 9999) are
    mapped to contiguous classes, with a note saying how, never a head of 10,000 classes.
    """
    where = Path(section.path).name
    text_col, label_col = _classification_columns(list(rows.column_names), section.text_column,
                                                  section.label_column, where)
    values = rows[label_col]
    keys = [label_key(v, f"{where}: row {i}: ", label_col) for i, v in enumerate(values, 1)]
    if any(isinstance(v, str) for v in values):
        names = sorted(set(keys))
    else:
        present = sorted({int(k) for k in keys})
        names = [str(i) for i in present]
        if present != list(range(len(present))) and notes is not None:
            shown = ", ".join(f"{n}\u2192{i}" for i, n in enumerate(present[:8])) + (", ..." if len(present) > 8 else "")
            notes.append(f"{where}: {label_col!r} uses {len(present)} numbers that are not 0..{len(present) - 1}; "
                         f"they are classes 0..{len(present) - 1} in order ({shown}), saved with the adapter")
    if len(names) < 2:
        raise DataError(f"{where}: {label_col!r} has only one class ({names[0]!r}); expected at least 2")
    return text_col, label_col, names


def label_key(value, at: str, label_col: str) -> str:
    """A label as the name it is counted under: a class name stripped, a whole number as "3".
    Raises DataError starting with `at` ("file: row 4: ") for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{at}missing {label_col!r} (expected a class name or number)")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{at}{label_col!r} is {_type_name(value)}; expected a class name or number")
    if isinstance(value, float) and not value.is_integer():
        raise DataError(f"{at}{label_col!r} is {value}; expected a class name or a whole number")
    if value < 0:
        raise DataError(f"{at}{label_col!r} is {int(value)}; class numbers start at 0")
    if value >= MAX_CLASSES:
        raise DataError(f"{at}{label_col!r} is {value!r}; class numbers go from 0 to {MAX_CLASSES - 1} "
                        "(use class names for other ids)")
    return str(int(value))


def chat_template_for(tokenizer) -> tuple[str | None, str]:
    """(template to pass to apply_chat_template, "tokenizer" or "fallback-chatml")."""
    if getattr(tokenizer, "chat_template", None):
        return None, "tokenizer"
    return FALLBACK_CHAT_TEMPLATE, "fallback-chatml"


# -- examples -------------------------------------------------------------------------------------


def chat_labels(ids, offsets, spans) -> tuple[list[int], list[int]]:
    """(input ids, labels): a token carries loss when its characters overlap an assistant span."""
    import numpy as np

    ids = list(ids)
    if not ids:
        return ids, []
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    inside = np.zeros(len(ids), dtype=bool)
    for s, e in spans:   # a few spans a row; the tokens are compared all at once
        inside |= (off[:, 0] < e) & (off[:, 1] > s)
    inside &= off[:, 1] > off[:, 0]
    return ids, np.where(inside, np.asarray(ids, dtype=np.int64), IGNORE).tolist()


class _Rows:
    """Turns rows of one file into examples; knows the file name for error messages."""

    def __init__(self, where: str, tokenizer, task: str, fmt: str, max_len: int):
        self.where, self.tok, self.task, self.fmt, self.max_len = where, tokenizer, task, fmt, max_len
        self.template, self.template_used = (chat_template_for(tokenizer) if fmt in ("messages", "sharegpt")
                                             else (None, ""))
        self.blank = 0  # rows whose text is empty: nothing to learn from

    def fail(self, row: int, message: str):
        raise DataError(f"{self.where}: row {row}: {message}")

    def field(self, record: dict, row: int, name: str, optional: bool = False) -> str:
        value = record.get(name)
        if value is None:
            if optional:
                return ""
            self.fail(row, f"missing '{name}' (format {self.fmt} needs it)")
        if not isinstance(value, str):
            self.fail(row, f"'{name}' is {_type_name(value)}; expected a string")
        return value

    # each returns (input_ids, labels) or raises
    def plain(self, record, row):
        """A row of the text, prompt-completion or alpaca format."""
        if self.fmt == "text":
            return self.text(record, row)
        if self.fmt == "prompt-completion":
            return self.prompt_completion(self.field(record, row, "prompt"), self.field(record, row, "completion"))
        return self.alpaca(record, row)

    def text(self, record, row):
        text = self.field(record, row, "text")
        if not text.strip():  # no example (bos + eos alone would teach the model to stop at once)
            self.blank += 1
            return [], []
        ids = self._encode(text, special=True) + self._eos()
        return ids, list(ids)

    def prompt_completion(self, prompt: str, completion: str):
        p = self._encode(prompt, special=True)
        c = self._encode(completion, special=False) + self._eos()
        return p + c, [IGNORE] * len(p) + c

    def alpaca(self, record, row):
        instruction = self.field(record, row, "instruction")
        extra = self.field(record, row, "input", optional=True)
        output = self.field(record, row, "output")
        prompt = (ALPACA_PROMPT_INPUT.format(instruction=instruction, input=extra) if extra.strip()
                  else ALPACA_PROMPT.format(instruction=instruction))
        return self.prompt_completion(prompt, output)

    def messages(self, record, row):
        self.check_turns(record, row)
        return self._chat(self.chat_messages(record, row), row)

    def check_turns(self, record, row) -> None:
        key = "conversations" if self.fmt == "sharegpt" else "messages"
        turns = record.get(key)
        if turns is None:
            self.fail(row, f"missing '{key}'")
        if not isinstance(turns, list) or not turns:
            self.fail(row, f"'{key}' is {_type_name(turns) if turns != [] else 'an empty list'}; "
                           f"expected a list of turns")

    def chat_messages(self, record, row) -> list[dict]:
        """The row's turns as {role, content}, checked (errors name the row and the turn)."""
        key = "conversations" if self.fmt == "sharegpt" else "messages"
        turns = record.get(key)
        msgs = [self._turn(t, row, key, i) for i, t in enumerate(turns)]
        if not any(m["role"] == "assistant" for m in msgs):
            self.fail(row, f"'{key}' has no assistant turn (nothing to learn from)")
        return msgs

    def _turn(self, turn, row: int, key: str, i: int) -> dict:
        at = f"{key}[{i}]"
        if not isinstance(turn, dict):
            self.fail(row, f"{at} is {_type_name(turn)}; expected an object")
        if self.fmt == "sharegpt" and "from" in turn:
            role_key, content_key = "from", "value"
        else:
            role_key, content_key = "role", "content"
        for k in (role_key, content_key):
            if turn.get(k) is None:
                self.fail(row, f"missing '{k}' in {at}")
        role, content = turn[role_key], turn[content_key]
        if not isinstance(role, str):
            self.fail(row, f"'{role_key}' in {at} is {_type_name(role)}; expected a string")
        if not isinstance(content, str):
            self.fail(row, f"'{content_key}' in {at} is {_type_name(content)}; expected a string")
        if role_key == "from":
            if role not in SHAREGPT_ROLES:
                self.fail(row, f"'from' {role!r} in {at} is not one of {', '.join(SHAREGPT_ROLES)}")
            role = SHAREGPT_ROLES[role]
        elif role not in ROLES:
            self.fail(row, f"role {role!r} in {at} is not one of {', '.join(ROLES)}")
        return {"role": role, "content": content}

    def _render(self, msgs, row, generation_prompt=False) -> str:
        try:
            return self.tok.apply_chat_template(msgs, chat_template=self.template, tokenize=False,
                                                add_generation_prompt=generation_prompt)
        except Exception as e:  # a template's raise_exception(), e.g. "roles must alternate"
            self.fail(row, f"the chat template rejected this conversation ({' '.join(str(e).split())[:200]})")

    def _prefix(self, msgs) -> str | None:
        """The conversation so far plus the assistant header, or None if the template won't render it."""
        try:
            return self.tok.apply_chat_template(msgs, chat_template=self.template, tokenize=False,
                                                add_generation_prompt=True)
        except Exception:  # e.g. a template that refuses an empty or system-only conversation
            return None

    def _chat(self, msgs, row):
        full, spans = self.chat_render(msgs, row)
        try:
            enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise DataError(f"{self.where}: chat formats need a fast tokenizer (with offset mappings)") from None
        return chat_labels(enc["input_ids"], enc["offset_mapping"], spans)

    def chat_render(self, msgs, row) -> tuple[str, list[tuple[int, int]]]:
        """The conversation rendered by the template, and the character spans of the assistant
        turns in it (what carries loss)."""
        full = self._render(msgs, row)
        spans, cursor = [], 0  # cursor: where the previous message's content ended in `full`
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                at = full.find(m["content"], cursor)  # a template may drop some (e.g. system): then -1
                cursor = at + len(m["content"]) if at >= 0 else cursor
                continue
            start_text = self._prefix(msgs[:i])
            # the conversation up to this turn; for the last message that is `full` itself
            end_text = full if i == len(msgs) - 1 else self._render(msgs[: i + 1], row)
            prefixes_fit = (start_text is not None and full.startswith(start_text)
                            and full.startswith(end_text) and len(end_text) > len(start_text))
            if prefixes_fit:
                start, end = len(start_text), len(end_text)
            else:  # the template renders prefixes differently (e.g. drops earlier reasoning): find the content
                start = full.find(m["content"], cursor)
                if start < 0:
                    self.fail(row, f"cannot find messages[{i}] content in the chat template's output")
                end = start + len(m["content"])
                eos = self.tok.eos_token
                if eos and full.startswith(eos, end):
                    end += len(eos)
            # the turn's trailing newline belongs to the layout, not to what the model must say
            while end > start and full[end - 1] in " \n\r\t" and full[start:end].strip():
                end -= 1
            spans.append((start, end))
            cursor = end
        return full, spans

    def classification(self, record, row, text_col, label_col, label_index):
        text = record.get(text_col)
        if text is None or (isinstance(text, str) and not text.strip()):
            self.fail(row, f"missing {text_col!r} (expected the text to classify)")
        if not isinstance(text, str):
            self.fail(row, f"{text_col!r} is {_type_name(text)}; expected a string")
        key = label_key(record.get(label_col), f"{self.where}: row {row}: ", label_col)
        if key not in label_index:
            shown = ", ".join(map(repr, list(label_index)[:20])) + (", ..." if len(label_index) > 20 else "")
            self.fail(row, f"{label_col!r} {key!r} is not one of the training labels ({shown})")
        ids = self._encode(text, special=True, truncate=True)
        return ids, label_index[key]

    def _encode(self, text: str, special: bool, truncate: bool = False) -> list[int]:
        kwargs = {"truncation": True, "max_length": self.max_len} if truncate else {}
        return list(self.tok(text, add_special_tokens=special, **kwargs)["input_ids"])

    def _eos(self) -> list[int]:
        eos = self.tok.eos_token_id
        return [eos] if eos is not None else []


def _decoded(rows, where: str):
    """The rows of a Dataset as dicts. datasets cannot decode some nested field names it has
    stored (an empty object under a key "\\u0000" fails with a KeyError naming the key): that is
    a DataError naming the file, not a traceback."""
    it = iter(rows)
    while True:
        try:
            record = next(it)
        except StopIteration:
            return
        except KeyError as e:
            raise DataError(f"{where}: a field named {_shown(e.args[0] if e.args else '')} cannot be read back "
                            "(rename the field)") from None
        yield record


def _examples(rows, where: str, tokenizer, task: str, fmt: str, max_len: int, labels=None):
    """(list of {input_ids, labels}, helper) for one file, as Python lists: the dataset preview's
    path (inspect.py, which shows every row's lengths), and the reference the tests hold the
    batched pipeline (prepare_data) to."""
    helper = _Rows(where, tokenizer, task, fmt, max_len)
    needed = {"text": ["text"], "prompt-completion": ["prompt", "completion"], "alpaca": ["instruction", "output"],
              "messages": ["messages"], "sharegpt": ["conversations"]}.get(fmt, [])
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise DataError(f"{where}: format {fmt} needs column(s) {', '.join(map(repr, missing))}; "
                        f"found {', '.join(map(repr, rows.column_names))}")
    out = []
    for row, record in enumerate(_decoded(rows, where), 1):
        if fmt == "classification":
            text_col, label_col, index = labels
            ids, label = helper.classification(record, row, text_col, label_col, index)
            out.append({"input_ids": ids, "labels": label})
            continue
        ids, lab = helper.messages(record, row) if fmt in ("messages", "sharegpt") else helper.plain(record, row)
        out.append({"input_ids": ids, "labels": lab})
    return out, helper


def _truncate(examples: list[dict], max_len: int) -> tuple[list[dict], int]:
    kept = []
    for ex in examples:
        ids, labels = ex["input_ids"][:max_len], ex["labels"][:max_len]
        if any(t != IGNORE for t in labels[1:]):  # position 0 is never predicted
            kept.append({"input_ids": ids, "labels": labels})
    return kept, len(examples) - len(kept)


def _pack(examples: list[dict], block: int) -> list[dict]:
    """Concatenate every example and cut max_seq_len blocks; the last, shorter block is kept."""
    stream = [t for ex in examples for t in ex["input_ids"]]
    blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    if len(blocks) > 1 and len(blocks[-1]) < 2:
        blocks.pop()
    return [{"input_ids": b, "labels": list(b)} for b in blocks]


# -- rows -> examples, a batch at a time (datasets.map) ------------------------------------------------

KEEP, BLANK, EMPTY = 0, 1, 2   # an example; a row with no text; nothing to learn within max_seq_len
CHARS_PER_TOKEN = 32           # the character bound: max_seq_len x this (a token is a few characters;
                               # text beyond the bound could never reach the first max_seq_len tokens)
CHUNK_ROWS = 20_000            # rows mapped between two progress reports (and two bounded buffers)
BATCH_ROWS = 200               # rows a tokenizer call gets


def _bound(record: dict, fmt: str, limit: int) -> tuple[dict, bool]:
    """The record with its text fields cut to `limit` characters in all, in reading order (a chat's
    turns one after another), and whether anything was cut. A row of hundreds of MB never reaches
    the template or the tokenizer whole; what is cut lies past max_seq_len tokens anyway."""
    if fmt in ("messages", "sharegpt"):
        key = "conversations" if fmt == "sharegpt" else "messages"
        turns = record.get(key)
        if not isinstance(turns, list):
            return record, False
        budget, cut, kept = limit, False, []
        for turn in turns:
            if isinstance(turn, dict):
                content_key = "value" if fmt == "sharegpt" and "from" in turn else "content"
                text = turn.get(content_key)
                if isinstance(text, str):
                    if budget <= 0:   # later turns could not be reached: an assistant turn cut to ""
                        cut = True
                        turn = {**turn, content_key: ""}
                    elif len(text) > budget:
                        cut = True
                        turn = {**turn, content_key: text[:budget]}
                    budget -= len(turn[content_key])
            kept.append(turn)
        return ({**record, key: kept}, True) if cut else (record, False)
    fields = {"text": ("text",), "prompt-completion": ("prompt", "completion"),
              "alpaca": ("instruction", "input", "output")}.get(fmt, ())
    budget, cut, out = limit, False, dict(record)
    for name in fields:
        text = record.get(name)
        if isinstance(text, str) and len(text) > max(budget, 0):
            out[name], cut = text[:max(budget, 0)], True
        if isinstance(out.get(name), str):
            budget -= len(out[name])
    return (out, True) if cut else (record, False)


def _tokenize_batch(batch: dict, indices: list[int], *, helper: "_Rows", fmt: str, labels, max_len: int,
                    limit: int, truncate: bool, start: int = 0, report=None) -> dict:
    """datasets.map's function: a batch of rows -> input_ids, labels, status (KEEP/BLANK/EMPTY) and
    whether the row was cut to the character bound. Errors name the row (its index + 1). Chat
    rows are rendered one by one and tokenized in one call for the batch (the tokenizer's own
    batching), as apply_chat_template does for a batch."""
    columns = list(batch)
    n = len(indices)
    encoded: list = [None] * n      # (ids, labels) per row, or None for a blank row
    cut_out = [False] * n
    chats: list[tuple[int, str, list]] = []
    for j, index in enumerate(indices):
        row = start + index + 1   # indices count within the chunk
        record = {c: batch[c][j] for c in columns}
        if fmt == "classification":
            text_col, label_col, index_of = labels
            text = record.get(text_col)
            if limit and isinstance(text, str) and len(text) > limit:
                record, cut_out[j] = {**record, text_col: text[:limit]}, True
            encoded[j] = helper.classification(record, row, text_col, label_col, index_of)
            continue
        if limit:
            record, cut_out[j] = _bound(record, fmt, limit)
        blank_before = helper.blank
        if fmt not in ("messages", "sharegpt"):
            ids, lab = helper.plain(record, row)
        else:
            helper.check_turns(record, row)
            full, spans = helper.chat_render(helper.chat_messages(record, row), row)
            chats.append((j, full, spans))
            continue
        encoded[j] = None if helper.blank != blank_before else (ids, lab)
    if chats:
        try:
            enc = helper.tok([full for _, full, _ in chats], add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:
            raise DataError(f"{helper.where}: chat formats need a fast tokenizer (with offset mappings)") from None
        for k, (j, _, spans) in enumerate(chats):
            encoded[j] = chat_labels(enc["input_ids"][k], enc["offset_mapping"][k], spans)
    ids_out, labels_out, status = [], [], []
    for item in encoded:
        if fmt == "classification":
            ids, label = item
            ids_out.append(ids)
            labels_out.append(label)
            status.append(KEEP)
            continue
        if item is None:
            state, ids, lab = BLANK, [], []
        else:
            ids, lab = item
            if truncate:
                ids, lab = ids[:max_len], lab[:max_len]
                state = KEEP if any(t != IGNORE for t in lab[1:]) else EMPTY   # position 0 is never predicted
            else:
                state = KEEP if ids else BLANK
        ids_out.append(ids if state == KEEP else [])
        labels_out.append(lab if state == KEEP else [])
        status.append(state)
    if report is not None:
        report(n)
    return {"input_ids": ids_out, "labels": labels_out, "status": status, "cut": cut_out}


class _Progress:
    """Progress of one stage as plain sentences, at most every `every` seconds:
    'tokenizing train.jsonl: 40,000 of 100,000 rows (1,520 rows/s, about 40 s left)'."""

    def __init__(self, say, what: str, total: int, every: float = 2.0):
        import time

        self.say, self.what, self.total, self.every = say, what, total, every
        self.done = 0
        self.started = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        import time

        self.done += n
        now = time.monotonic()
        if self.say is None or (now - self.last < self.every and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        eta = f", about {left:.0f} s left" if self.done < self.total else f", {now - self.started:.1f} s"
        self.say(f"{self.what}: {self.done:,} of {self.total:,} rows ({rate:,.0f} rows/s{eta})")


def _procs(section, n_rows: int) -> int:
    """Worker processes for tokenizing: data.num_proc, or (0) one per core for a large file
    (LORA_STUDIO_DATA_PROCS overrides: the benchmarks). A small file is quicker in one."""
    import os

    override = os.environ.get("LORA_STUDIO_DATA_PROCS", "").strip()
    wanted = int(override) if override.isdigit() else int(getattr(section, "num_proc", 0) or 0)
    if wanted <= 0:
        wanted = os.cpu_count() or 1 if n_rows >= 2 * CHUNK_ROWS else 1
    return max(1, min(wanted, os.cpu_count() or 1, max(1, n_rows // BATCH_ROWS)))


def _tokenized(rows, where: str, helper: "_Rows", fmt: str, labels, max_len: int, truncate: bool,
               work: Path, procs: int, say, limit: int):
    """All rows mapped to examples, chunk by chunk (a progress line between chunks, and within
    them when one process tokenizes), into Arrow files in `work`; concatenated without a copy."""
    import datasets

    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Value("int64") if fmt == "classification" else datasets.Sequence(datasets.Value("int32")),
        "status": datasets.Value("int8"),
        "cut": datasets.Value("bool"),
    })
    progress = _Progress(say, f"tokenizing {where}", len(rows))
    parts = []
    for n, start in enumerate(range(0, len(rows), CHUNK_ROWS)):
        chunk = rows.select(range(start, min(start + CHUNK_ROWS, len(rows))))
        kwargs = dict(helper=helper, fmt=fmt, labels=labels, max_len=max_len, limit=limit, truncate=truncate,
                      start=start, report=progress if procs == 1 else None)
        try:
            part = chunk.map(_tokenize_batch, batched=True, batch_size=BATCH_ROWS, with_indices=True,
                             fn_kwargs=kwargs, remove_columns=chunk.column_names, features=features,
                             num_proc=procs if procs > 1 else None,
                             cache_file_name=str(work / f"{where}-{n}.arrow"), load_from_cache_file=False,
                             # our own cache decides reuse; without a fingerprint datasets would try to
                             # pickle the function's arguments (the tokenizer, the progress callback)
                             new_fingerprint=_fingerprint(work.name, where, n))
        except KeyError as e:   # datasets cannot decode some nested field names it stored
            raise DataError(f"{where}: a field named {_shown(e.args[0] if e.args else '')} cannot be read back "
                            "(rename the field)") from None
        if procs > 1:
            progress(len(chunk))
        parts.append(part)
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _fingerprint(*parts) -> str:
    import xxhash

    return xxhash.xxh3_64_hexdigest("\0".join(map(str, parts)).encode("utf-8"))


def _pack_blocks(ds, block: int):
    """Every example's tokens end to end, cut into `block`-token rows (the last, shorter one kept,
    unless it has a single token): one int32 copy of the token stream, in Arrow."""
    import numpy as np
    import pyarrow as pa
    import datasets

    pieces = []
    for table in ds.with_format("arrow").iter(batch_size=50_000):
        column = table.column("input_ids").combine_chunks()
        pieces.append(np.asarray(column.flatten(), dtype=np.int32))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    offsets = np.arange(0, len(stream), block, dtype=np.int64)
    offsets = np.append(offsets, len(stream))
    if len(offsets) > 2 and offsets[-1] - offsets[-2] < 2:
        offsets = offsets[:-1]
        stream = stream[:offsets[-1]]
    values = pa.array(stream, type=pa.int32())
    ids = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32() if len(stream) < 2**31 else pa.int64()),
                                   values) if len(stream) < 2**31 else pa.LargeListArray.from_arrays(offsets, values)
    table = pa.table({"input_ids": ids, "labels": ids})
    return datasets.Dataset(table)


# -- batching -------------------------------------------------------------------------------------


# Rows of padding-free batches: attention over a row of S tokens costs about S / (6 * hidden size)
# of the per-token work of the linear layers (4*S*d multiply-adds against ~12*d*d per layer), so
# long rows are not free. Layouts are compared by slots * (1 + width / ATTENTION_TOKENS); the
# Session sets attention_tokens from the model's hidden size, this is SmolLM2-135M's.
ATTENTION_TOKENS = 6 * 576


class Collator:
    """Examples -> a batch of torch tensors (a class, so DataLoader workers can pickle it).

    Padded (the default for classification, and for models that cannot keep packed examples
    apart): each example is right-padded to the batch's longest, with an attention_mask.

    Padding-free (`padding_free`, causal LM): the batch's examples are laid end to end in rows,
    with position_ids restarting at 0 for each example and no attention_mask; transformers'
    masking reads the restarts as sequence boundaries and builds block-diagonal causal attention,
    so each example sees only itself and the loss is the padded batch's. Each row is flattened by
    transformers' DataCollatorWithFlattening; choosing the rows (pack_rows) and padding them to
    one width is ours: one row for a whole batch of long examples would make attention quadratic
    in the batch's total length on kernels that compute the full masked square (sdpa on CPU,
    eager), so a batch takes the cheapest of one row, a few rows, or one example per row.

    Label logits only (`label_logits_only`, causal LM): the batch also carries `logits_to_keep`, a
    boolean mask of the positions whose next token has a label, and `shift_labels`, those next
    tokens. transformers' causal-LM heads then project only those positions onto the vocabulary
    and compute the same loss from them (ForCausalLMLoss with shift_labels); the Trainer counts
    the loss tokens from `shift_labels`.
    """

    def __init__(self, pad_token_id: int, causal: bool, padding_free: bool = False,
                 label_logits_only: bool = False, attention_tokens: int = ATTENTION_TOKENS, segments: bool = False):
        self.pad_token_id = pad_token_id
        self.causal = causal
        self.padding_free = padding_free
        self.label_logits_only = label_logits_only
        self.attention_tokens = attention_tokens
        self.segments = segments   # packed rows also name their examples' spans (fastpath.packed_sdpa_forward)

    def __call__(self, features: list[dict]) -> dict:
        if self.causal and self.padding_free:
            batch = self._packed(features)
        else:
            batch = self._padded(features)
        if self.causal and self.label_logits_only:
            add_label_positions(batch)
        return batch

    def _padded(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            attention[i, :n] = 1
        if self.causal:
            labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
            for i, f in enumerate(features):
                labels[i, : len(f["labels"])] = torch.as_tensor(f["labels"], dtype=torch.long)
        else:
            labels = torch.as_tensor([int(f["labels"]) for f in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    def _packed(self, features: list[dict]) -> dict:
        import torch
        from transformers import DataCollatorWithFlattening

        flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
        # attention run per example costs the same in any row: then only padding counts
        grouped = pack_rows([len(f["input_ids"]) for f in features], features,
                            attention_tokens=math.inf if self.segments else self.attention_tokens)
        rows = [flatten([{"input_ids": list(f["input_ids"]), "labels": list(f["labels"])} for f in row])
                for row in grouped]
        width = max(r["input_ids"].shape[1] for r in rows)
        out = {"input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long),
               "labels": torch.full((len(rows), width), IGNORE, dtype=torch.long),
               # a padded tail is a sequence of its own (positions from 0): nothing attends to it
               "position_ids": torch.arange(width, dtype=torch.long).repeat(len(rows), 1)}
        for i, r in enumerate(rows):
            n = r["input_ids"].shape[1]
            for key in out:
                out[key][i, :n] = r[key][0]
            out["position_ids"][i, n:] = torch.arange(width - n)
        # with a key/value cache the masking skips its packed-sequence check (examples would see
        # each other), and training reads no cache anyway
        out["use_cache"] = False
        if self.segments:
            spans = []
            for row in grouped:
                ends = list(itertools.accumulate(len(f["input_ids"]) for f in row))
                row_spans = list(zip([0] + ends[:-1], ends))
                if ends[-1] < width:
                    row_spans.append((ends[-1], width))
                spans.append(tuple(row_spans))
            out["studio_segments"] = tuple(spans)
        return out


def pack_rows(lengths: list[int], items: list, width: int | None = None,
              attention_tokens: int | None = None) -> list[list]:
    """Items grouped into rows (first fit, longest first) for a padding-free batch: at most `width`
    tokens a row when it is given, else the row width among ceil(total / k), k = 1..n, whose
    layout costs least: rows * widest row * (1 + widest row / attention_tokens). Every width is
    at least the longest item, so the cost is never above padding each item to the longest.
    Written here because DataCollatorWithFlattening always makes one row."""
    longest, total = max(lengths), sum(lengths)
    if width is not None:
        return _first_fit(lengths, items, max(width, longest))
    attention = attention_tokens or ATTENTION_TOKENS
    if math.isinf(attention):   # attention free (run per example): one row, no padding, no search
        return [[items[i] for i in sorted(range(len(items)), key=lambda i: -lengths[i])]]
    best, best_cost = None, None
    for w in sorted({max(longest, -(-total // k)) for k in range(1, len(items) + 1)}):
        rows, used = _first_fit_rows(lengths, w)
        cost = len(rows) * used * (1 + used / attention)
        if best_cost is None or cost < best_cost:
            best, best_cost = rows, cost
    return [[items[i] for i in row] for row in best]


def _first_fit_rows(lengths: list[int], width: int) -> tuple[list[list[int]], int]:
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows, max(width - free for free in room)


def _first_fit(lengths: list[int], items: list, width: int) -> list[list]:
    rows, _ = _first_fit_rows(lengths, width)
    return [[items[i] for i in row] for row in rows]


def add_label_positions(batch: dict) -> dict:
    """Add `logits_to_keep` (positions whose next token has a label) and `shift_labels` (those
    tokens, flattened) to a causal-LM batch, in place."""
    import torch

    labels = batch["labels"]
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    keep = shifted != IGNORE
    batch["logits_to_keep"] = keep
    batch["shift_labels"] = shifted[keep]
    return batch


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0  # masked out by attention_mask and labels anyway


# -- the whole pipeline ---------------------------------------------------------------------------


def settle_format(section: "DataSection", rows, task: str, where: str) -> str:
    """The format rows are read in: the configured one, or detected from the columns ("auto").
    Classification columns may be named in the section; they are checked later."""
    fmt = section.format
    if fmt in ("", "auto"):
        fmt = "classification" if task == "sequence-classification" else detect_format(rows, task, where)
    elif fmt not in FORMATS:
        raise DataError(f"data.format '{fmt}' is not one of auto, {', '.join(FORMATS)}")
    if (fmt == "classification") != (task == "sequence-classification"):
        raise DataError(f"{where}: format '{fmt}' does not fit task '{task}' "
                        f"(classification data goes with sequence-classification, the others with causal-lm)")
    return fmt


def prepare_data(section: "DataSection", tokenizer, task: str, seed: int = 0, progress=None) -> PreparedData:
    """Read, check, format, tokenize, truncate, split (and pack) the data a run config names.

    A staged pipeline on `datasets`: the file is read into Arrow (memory-mapped), rows become
    examples a batch at a time (`Dataset.map`, in worker processes for a large file), examples
    with nothing to learn are left out, the evaluation rows are held out, and plain text is packed.
    No stage holds all examples as Python lists. The result is cached by the files' content, the
    tokenizer and the settings (datacache.py): a re-run with the same data loads it memory-mapped.
    `progress(sentence)` hears about each stage (rows/s, time left)."""
    import numpy as np

    from . import datacache

    if task not in TASKS:
        raise DataError(f"data: unknown task '{task}' (expected one of {', '.join(TASKS)})")
    say = progress
    where = Path(section.path).name
    max_len = int(section.max_seq_len)
    causal = task == "causal-lm"
    eval_max = int(getattr(section, "eval_max", 0) or 0)
    files = [section.path] + ([section.eval_path] if section.eval_path else [])
    key = None
    try:
        settings = {"task": task, "format": section.format, "max_seq_len": max_len, "pack": bool(section.pack),
                    "eval_path": bool(section.eval_path), "eval_fraction": float(section.eval_fraction),
                    "text_column": section.text_column, "label_column": section.label_column, "seed": seed,
                    "eval_max": eval_max, "names": [Path(f).name for f in files]}
        if all(Path(f).is_file() for f in files):
            key = datacache.cache_key(files, tokenizer, settings)
    except OSError:   # unreadable: read_rows below says why, in one line
        key = None
    if key is not None:
        hit = datacache.load(key)
        if hit is not None:
            train, evaluation, meta = hit
            if say:
                say(f"prepared data from the cache: {len(train):,} training examples"
                    + (f", {len(evaluation):,} for evaluation" if evaluation is not None else ""))
            return _prepared(train, evaluation, meta, tokenizer, causal)

    if say:
        say(f"reading {where}")
    rows = read_rows(section.path, "data.path")
    fmt = settle_format(section, rows, task, where)

    labels = None
    label_names: list[str] = []
    notes: list[str] = []
    if not causal:
        text_col, label_col, label_names = classification_labels(section, rows, notes)
        labels = (text_col, label_col, {name: i for i, name in enumerate(label_names)})

    packing = causal and fmt == "text" and bool(section.pack)
    limit = max_len * CHARS_PER_TOKEN
    work = datacache.work_folder(key or "nokey")
    template_used = ""
    read_files = [rows]
    try:
        def load(rows_, where_):
            helper = _Rows(where_, tokenizer, task, fmt, max_len)
            n = len(rows_)
            needed = {"text": ["text"], "prompt-completion": ["prompt", "completion"],
                      "alpaca": ["instruction", "output"], "messages": ["messages"],
                      "sharegpt": ["conversations"]}.get(fmt, [])
            missing = [c for c in needed if c not in rows_.column_names]
            if missing:
                raise DataError(f"{where_}: format {fmt} needs column(s) {', '.join(map(repr, missing))}; "
                                f"found {', '.join(map(repr, rows_.column_names))}")
            ds = _tokenized(rows_, where_, helper, fmt, labels, max_len, causal and not packing, work,
                            _procs(section, n), say, limit)
            table = ds.with_format("arrow")[:]   # whole columns from Arrow (no row-by-row formatting)
            status = table.column("status").to_numpy() if n else np.zeros(0, dtype=np.int8)
            cut = int(table.column("cut").to_numpy(zero_copy_only=False).sum()) if n else 0
            blank = int((status == BLANK).sum())
            dropped = int((status != KEEP).sum())
            if blank == n:
                raise DataError(f"{where_}: no row has any text to learn from (all {n} rows have an empty 'text')")
            if dropped == n:
                raise DataError(f"{where_}: no example has any tokens to learn from within max_seq_len={max_len} "
                                f"(all {n} rows dropped; raise data.max_seq_len)")
            if blank:
                notes.append(f"{where_}: {blank} of {n} rows have no text and were skipped")
            if dropped > blank:
                notes.append(f"{where_}: {dropped - blank} of {n} rows have nothing left to learn from "
                             f"within max_seq_len={max_len} and were dropped")
            if cut:
                notes.append(f"{where_}: {cut} of {n} rows are longer than {limit:,} characters "
                             f"(max_seq_len x {CHARS_PER_TOKEN}) and were cut to that before tokenizing")
            if dropped:
                ds = ds.select(np.flatnonzero(status == KEEP))
            return ds.remove_columns(["status", "cut"]), dropped, helper

        train, dropped, helper = load(rows, where)
        template_used = helper.template_used
        evaluation = None
        if section.eval_path:
            eval_where = Path(section.eval_path).name
            eval_rows = read_rows(section.eval_path, "data.eval_path")
            read_files.append(eval_rows)
            if not causal:  # the eval file may use the same auto-detected column names
                _classification_columns(list(eval_rows.column_names), labels[0], labels[1], eval_where)
            evaluation, eval_dropped, _ = load(eval_rows, eval_where)
            dropped += eval_dropped
        elif section.eval_fraction > 0:
            n = len(train)
            n_eval = max(1, math.floor(n * float(section.eval_fraction)))
            if n - n_eval >= 1:
                split = train.train_test_split(test_size=n_eval, seed=seed)
                train, evaluation = split["train"], split["test"]
            else:
                notes.append(f"{where}: too few examples ({n}) to hold out data.eval_fraction="
                             f"{float(section.eval_fraction):g} for evaluation; training without an evaluation set")

        if packing:
            if say:
                say(f"packing {where} into blocks of {max_len} tokens")
            train = _pack_blocks(train, max_len)
            evaluation = _pack_blocks(evaluation, max_len) if evaluation is not None else None
            if not any(n >= 2 for n in _lengths(train)):  # one token predicts nothing
                raise DataError(f"{where}: too little text to train on (no block of two tokens or more)")
        if evaluation is not None and eval_max and len(evaluation) > eval_max:
            notes.append(f"{where}: evaluating {eval_max:,} of the {len(evaluation):,} held-out examples "
                         f"(data.eval_max; 0 evaluates them all)")
            evaluation = evaluation.select(range(eval_max))
        meta = {"format": fmt, "label_names": label_names, "chat_template_used": template_used,
                "dropped": dropped, "notes": notes}
        if key is not None:
            if say:
                say(f"saving the prepared data ({len(train):,} training examples) to the cache")
            train, evaluation = datacache.save(key, train, evaluation, meta)
        else:
            train, evaluation = train.flatten_indices(keep_in_memory=True), (
                evaluation.flatten_indices(keep_in_memory=True) if evaluation is not None else None)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)   # mapped files stay readable until unmapped
        if key is not None:
            for ds in read_files:   # datasets' JSON->Arrow copy: the cache entry replaces it
                _remove_cache_files(ds)
    return _prepared(train, evaluation, meta, tokenizer, causal)


def _lengths(ds):
    import pyarrow.compute as pc

    return pc.list_value_length(ds.with_format("arrow")[:]["input_ids"]).to_numpy(zero_copy_only=False)


def _remove_cache_files(ds) -> None:
    """Delete what datasets wrote when it read a data file (its JSON/CSV -> Arrow copy): of no use
    once the prepared data is cached, and datasets keeps every version it ever wrote. The copy's
    folder goes whole (with its dataset_info.json), so a later read of the file converts it again
    rather than finding a split whose file is gone."""
    import os
    import shutil

    for entry in getattr(ds, "cache_files", None) or []:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not name:
            continue
        folder = Path(name).parent
        if (folder / "dataset_info.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            for lock in folder.parent.glob(f"*{folder.name}*.lock"):
                lock.unlink(missing_ok=True)
        elif os.path.isfile(name):
            Path(name).unlink(missing_ok=True)


def _prepared(train, evaluation, meta: dict, tokenizer, causal: bool) -> PreparedData:
    names = list(meta.get("label_names") or [])
    return PreparedData(
        train=train,
        eval=evaluation,
        collator=Collator(_pad_id(tokenizer), causal),
        format=meta["format"],
        num_labels=len(names),
        label_names=names,
        chat_template_used=meta.get("chat_template_used", ""),
        dropped=int(meta.get("dropped", 0)),
        notes=list(meta.get("notes") or []),
    )
