"""A causal LM run's batch layout: which of the faster layouts (padding-free rows, label-only
logits) the loaded model computes exactly, found by fastpath.probe, and the collator built for it.

    layout = for_run(cfg, base, data.collator, device, progress=print)   # None: padded batches only
    collator = layout.collator(data.collator)   # before any variant sees a batch
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from .collator import Collator


@dataclass(frozen=True)
class BatchLayout:
    padding_free: bool = False
    label_logits_only: bool = False
    segments: bool = False                 # packed rows name their examples (fastpath.packed_sdpa_forward)
    attention_tokens: int | None = None    # how rows of packed examples are priced (collator.pack_rows); None: default

    def collator(self, plain: Collator) -> Collator:
        """`plain` (the padded collator prepare_data made) laid out this way."""
        return Collator(plain.pad_token_id, plain.causal, padding_free=self.padding_free,
                        label_logits_only=self.label_logits_only,
                        attention_tokens=self.attention_tokens or plain.attention_tokens, segments=self.segments)

    def event_fields(self) -> dict:
        """What run_started tells about the layout."""
        return {"padding_free": self.padding_free, "label_logits_only": self.label_logits_only}

    def describe(self) -> str:
        layout = [("padding-free rows, attention per example" if self.segments else "padding-free rows")
                  if self.padding_free else "padded to the longest example"]
        if self.label_logits_only:
            layout.append("output layer on labelled positions only")
        return "batches: " + ", ".join(layout)


def pick(base, device, *, padding_free: bool, label_logits: bool, progress) -> BatchLayout:
    """The layout for a loaded causal LM: what was asked for, less what the model does not
    compute exactly (fastpath.probe; each thing turned off is a note to `progress`). A model on
    sdpa attention takes packed rows through packed_sdpa_forward; it is switched back when
    packed rows are off."""
    from .fastpath import probe, use_packed_attention

    previous = use_packed_attention(base) if padding_free else None
    segments = previous is not None
    if padding_free or label_logits:
        padding_free, label_logits, notes = probe(base, device, padding_free=padding_free,
                                                  label_logits=label_logits, segments=segments)
        for note in notes:
            progress(f"note: {note}")
    if previous is not None and not padding_free:
        base.set_attn_implementation(previous)
        segments = False
    hidden = getattr(base.config, "hidden_size", None)
    attention_tokens = 6 * hidden if isinstance(hidden, int) and hidden > 0 else None
    return BatchLayout(bool(padding_free), bool(label_logits), segments, attention_tokens)


def for_run(cfg: RunConfig, base, collator, device, progress) -> BatchLayout | None:
    """The layout a run config asks for (data.padding_free, train.label_logits_only), as far as
    the loaded model computes it exactly, told to `progress`; None for a model that is not a
    causal LM (its batches are padded)."""
    if cfg.model.task != "causal-lm" or not isinstance(collator, Collator):
        return None
    layout = pick(base, device, padding_free=bool(cfg.data.padding_free),
                  label_logits=bool(cfg.train.label_logits_only), progress=progress)
    progress(layout.describe())
    return layout
