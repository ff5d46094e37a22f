"""Which of the studio's faster batch layouts a loaded causal LM computes exactly.

    padding_free, label_logits, notes = probe(model, device)

Both are checked on the model itself, not on a list of architectures: a few tokens go through it
the plain way and the fast way, and a fast path is used only when both give the same numbers.

  padding-free   two short sequences laid end to end in one row with position_ids restarting at
                 0 (no attention_mask) must give the logits each gives alone: the model's masking
                 turns the restart into block-diagonal attention (transformers' masking_utils
                 does this for the models built on it; older or remote-code models may not).
  label logits   the loss from `logits_to_keep` (a boolean mask of labelled positions) with
                 `shift_labels` must equal the loss from full logits and `labels`: the model's
                 head slices before projecting (slice_logits_to_keep) and its loss takes shift_labels.

Packed rows of a model on transformers' sdpa attention are computed by `packed_sdpa_forward`, an
attention function registered with transformers' AttentionInterface: it runs sdpa once per
example in the row (causal, no mask) instead of once over the whole row with a block-diagonal
mask, so no time goes into the masked-out blocks (sdpa with a mask computes them all on CPU, and
cannot skip the causal half). transformers has flash-attention kernels for this on some GPUs and
nothing for sdpa, hence this function. The probe checks it like the rest.

The probe costs four forward passes over ten tokens (milliseconds for SmolLM2-135M on a CPU).
"""

from __future__ import annotations

from .collator import Collator, add_label_positions
from .dataformats import IGNORE

PACKED_ATTENTION = "studio_packed_sdpa"   # the attention implementation's registered name

TOLERANCE = 1e-3   # relative to the largest logit or the loss; a model that mixes sequences is off by O(1)


def probe(model, device, *, padding_free: bool = True, label_logits: bool = True,
          segments: bool = False) -> tuple[bool, bool, list[str]]:
    """(padding-free works, label-logits-only works, notes for the person) for `model`, which is
    left in the train/eval mode it had. `segments`: packed batches carry each row's example
    boundaries for packed_sdpa_forward (use_packed_attention)."""
    import torch

    notes: list[str] = []
    kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    was_training = model.training
    model.eval()
    try:
        vocab = int(model.get_input_embeddings().num_embeddings)
        gen = torch.Generator().manual_seed(0)
        a = torch.randint(0, min(vocab, 1000), (6,), generator=gen)
        b = torch.randint(0, min(vocab, 1000), (4,), generator=gen)
        with torch.no_grad():
            if padding_free:
                padding_free = _same_packed(model, a, b, device, segments)
                if not padding_free:
                    notes.append(f"padding-free batches are off: this model ({kind}) lets packed examples see each "
                                 "other, so each example is padded to the longest in its batch instead")
            if label_logits:
                label_logits = _same_label_loss(model, torch.cat([a, b]), device)
                if not label_logits:
                    notes.append(f"label-only logits are off: this model ({kind}) cannot compute its output "
                                 "layer on chosen positions, so it computes every position")
    finally:
        model.train(was_training)
    return padding_free, label_logits, notes


def _forward(model, **inputs):
    return model(**inputs, use_cache=False)


def _same_packed(model, a, b, device, segments: bool) -> bool:
    import torch

    try:
        alone = torch.cat([_forward(model, input_ids=x[None].to(device)).logits[0] for x in (a, b)])
        collate = Collator(0, True, padding_free=True, segments=segments)   # a (longer) first, then b
        batch = collate([{"input_ids": a.tolist(), "labels": a.tolist()}, {"input_ids": b.tolist(), "labels": b.tolist()}])
        batch.pop("labels")
        packed = model(**{k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}).logits[0]
    except Exception:   # a model whose forward takes no position_ids, or fails on them
        return False
    scale = float(alone.abs().max()) or 1.0
    return packed.shape == alone.shape and float((packed - alone).abs().max()) <= TOLERANCE * scale


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                        is_causal=None, **kwargs):
    """transformers' sdpa attention, once per example of a packed row when the batch names the
    examples (`studio_segments`: per row, (start, end) of each example and of a padded tail);
    otherwise plain sdpa. query is (batch, heads, tokens, head dim); the result (batch, tokens,
    heads, head dim), as sdpa_attention_forward gives it."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    segments = kwargs.pop("studio_segments", None)
    if query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16):
        # On CPU, torch's flash attention backward in bf16 runs ~3x slower than in fp32 (measured on
        # SmolLM2-135M, 120 calls a step: 329 ms against 105 ms), so attention computes in fp32 and
        # hands back the dtype it was given; it is also the more exact of the two
        dtype = query.dtype
        with torch.autocast("cpu", enabled=False):   # autocast would cast them back to bf16
            out, weights = packed_sdpa_forward(module, query.float(), key.float(), value.float(),
                                               attention_mask if attention_mask is None or attention_mask.dtype == torch.bool
                                               else attention_mask.float(), dropout=dropout, scaling=scaling,
                                               is_causal=is_causal, studio_segments=segments, **kwargs)
        return out.to(dtype), weights
    if segments is None or query.shape[2] != key.shape[2] or len(segments) != query.shape[0]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    rows = []
    for b, row in enumerate(segments):
        pieces = [sdpa_attention_forward(module, query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                         None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
                  for s, e in row]
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows, dim=0), None


def use_packed_attention(model) -> str | None:
    """Switch a model on sdpa attention to packed_sdpa_forward (which is sdpa for a batch without
    `studio_segments`); returns the implementation it had, or None when it is not sdpa (flash
    attention takes packed rows by itself; eager and others keep the block-diagonal mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current != "sdpa":
        return None
    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_forward)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    try:
        model.set_attn_implementation(PACKED_ATTENTION)
    except Exception:   # a model that does not take registered implementations
        return None
    return current


def _same_label_loss(model, ids, device) -> bool:
    import torch

    labels = ids.clone()
    labels[:3] = IGNORE                        # a prompt without labels
    batch = {"input_ids": ids[None], "labels": labels[None]}
    try:
        full = _forward(model, input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device)).loss
        add_label_positions(batch)
        fast = _forward(model, **{k: v.to(device) for k, v in batch.items()})
    except Exception:   # no logits_to_keep or shift_labels in this model's forward
        return False
    if full is None or fast.loss is None:
        return False
    kept = int(batch["logits_to_keep"].sum())
    if fast.logits.numel() != kept * fast.logits.shape[-1]:   # the mask was ignored: no saving
        return False
    return abs(float(fast.loss) - float(full)) <= TOLERANCE * max(abs(float(full)), 1.0) and torch.isfinite(fast.loss)
