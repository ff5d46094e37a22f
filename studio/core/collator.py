"""Batching: examples -> a batch of torch tensors for the Trainer.

`Collator` (padded or padding-free rows), `pack_rows` (which examples share a padding-free row,
first fit) and `add_label_positions` (label-only logits). Torch is imported inside the functions,
so importing this module stays cheap."""

from __future__ import annotations

import itertools
import math

from .dataformats import IGNORE


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


def pad_id(tokenizer) -> int:
    """The token id a padded batch fills with: the pad token, else eos, else 0."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0  # masked out by attention_mask and labels anyway
