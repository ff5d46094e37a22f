"""Data formats: which format rows are in, and how a record of each becomes input ids and labels.

Formats (`[data] format`, "auto" looks at the columns of the first file):

  text               "text"; causal LM on everything; `pack` concatenates and cuts max_seq_len blocks
  prompt-completion  "prompt", "completion"; loss on the completion (+ eos) only
  alpaca             "instruction", optional "input", "output"; the Stanford Alpaca prompt, loss on the output
  messages           "messages": [{role, content}], roles system/user/assistant/tool, rendered with the
                     tokenizer's chat template (ChatML-style fallback when it has none); loss on the
                     assistant turns only (their content and the end-of-turn marker)
  sharegpt           "conversations": [{from, value}], from human/user, gpt/assistant, system, tool
  classification     a text column and a label column (sequence classification)

`choose_format` is the format stage of data preparation (data.py): it settles the format, the
classification columns and classes, and whether plain text is packed. `RowFormatter` turns one
record into (input ids, labels); anything wrong with a record raises DataError naming the file,
the row and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .jsonrows import type_name as _type_name
from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover
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


# -- formats ------------------------------------------------------------------------------------

_EXPECTED = ("'text' (text), 'prompt'+'completion' (prompt-completion), 'instruction'+'output' (alpaca), "
             "'messages' (messages), 'conversations' (sharegpt)")


def detect_format(dataset, task: str, where: str = "data") -> str:
    """The format a dataset is in, from its column names (and first row for conversation columns)."""
    columns = list(dataset.column_names)
    if task == "sequence-classification":
        classification_columns(columns, "", "", where)
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


def classification_columns(columns: list[str], text_column: str, label_column: str, where: str) -> tuple[str, str]:
    """(text column, label column): the ones named in the config, else the first usual name found."""
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
    text_col, label_col = classification_columns(list(rows.column_names), section.text_column,
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


NEEDED_COLUMNS = {"text": ["text"], "prompt-completion": ["prompt", "completion"], "alpaca": ["instruction", "output"],
                  "messages": ["messages"], "sharegpt": ["conversations"]}


def check_columns(rows, where: str, fmt: str) -> None:
    """DataError unless the rows have the columns the format reads."""
    missing = [c for c in NEEDED_COLUMNS.get(fmt, []) if c not in rows.column_names]
    if missing:
        raise DataError(f"{where}: format {fmt} needs column(s) {', '.join(map(repr, missing))}; "
                        f"found {', '.join(map(repr, rows.column_names))}")


@dataclass(frozen=True)
class DataFormat:
    """What the format stage settles for a data section: the format, and for classification the
    columns and the classes."""

    name: str                    # one of FORMATS
    task: str                    # one of TASKS
    max_len: int                 # data.max_seq_len
    packing: bool                # plain text, concatenated and cut into max_len blocks
    label_names: list[str] = field(default_factory=list)   # classification: class index -> name
    labels: tuple | None = None  # classification: (text column, label column, {name: class index})

    @property
    def causal(self) -> bool:
        return self.task == "causal-lm"

    @property
    def truncates(self) -> bool:
        """Examples are cut to max_len as they are tokenized (packed text is cut into blocks
        instead; classification is cut by the tokenizer)."""
        return self.causal and not self.packing

    def formatter(self, tokenizer, where: str) -> "RowFormatter":
        """The RowFormatter for one file of this data."""
        return RowFormatter(where, tokenizer, self.task, self.name, self.max_len)

    def check_eval_columns(self, rows, where: str) -> None:
        """An evaluation file's classification columns, by the names the training file uses."""
        if self.labels is not None:
            classification_columns(list(rows.column_names), self.labels[0], self.labels[1], where)


def choose_format(section: "DataSection", rows, task: str, where: str, notes: list[str] | None = None) -> DataFormat:
    """The format stage: the format rows are read in, and for classification the columns and the
    classes (a line for `notes` when class numbers are renumbered)."""
    fmt = settle_format(section, rows, task, where)
    labels, label_names = None, []
    if task != "causal-lm":
        text_col, label_col, label_names = classification_labels(section, rows, notes)
        labels = (text_col, label_col, {name: i for i, name in enumerate(label_names)})
    return DataFormat(name=fmt, task=task, max_len=int(section.max_seq_len),
                      packing=task == "causal-lm" and fmt == "text" and bool(section.pack),
                      label_names=label_names, labels=labels)


# -- one record -> input ids and labels ----------------------------------------------------------


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


class RowFormatter:
    """The rules of one format for the records of one file: a record -> (input ids, labels), or a
    DataError naming the file, the row and the field. datatokenize.tokenize_batch calls it a batch
    of rows at a time; `messages` does a chat row on its own."""

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
        ids = self.encode(text, special=True) + self._eos()
        return ids, list(ids)

    def prompt_completion(self, prompt: str, completion: str):
        p = self.encode(prompt, special=True)
        c = self.encode(completion, special=False) + self._eos()
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
        ids = self.encode(text, special=True, truncate=True)
        return ids, label_index[key]

    def encode(self, text: str, special: bool, truncate: bool = False) -> list[int]:
        """The token ids of `text` (with the special tokens when `special`; cut to max_len when `truncate`)."""
        kwargs = {"truncation": True, "max_length": self.max_len} if truncate else {}
        return list(self.tok(text, add_special_tokens=special, **kwargs)["input_ids"])

    def _eos(self) -> list[int]:
        eos = self.tok.eos_token_id
        return [eos] if eos is not None else []
