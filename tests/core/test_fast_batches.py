"""Padding-free batches and label-only logits (data.Collator, fastpath.probe): the same numbers as
padded batches with full logits, for each example, for the batch loss and for the gradients, and a
model that cannot keep packed examples apart is trained padded."""

from __future__ import annotations

import math
import random

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import DATASETS
from studio.core import collator as collator_mod
from studio.core.config import RunConfig
from studio.core.collator import Collator, pack_rows
from studio.core.data import prepare_data
from studio.core.dataformats import IGNORE
from studio.core.fastpath import probe, use_packed_attention
from studio.core.training import Session


@pytest.fixture(scope="module")
def model_and_examples(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    section = RunConfig().data
    section.path, section.eval_fraction, section.max_seq_len = str(DATASETS / "chat_long_sample.jsonl"), 0.0, 160
    prepared = prepare_data(section, tok, "causal-lm")
    examples = list(prepared.train)
    random.Random(0).shuffle(examples)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.eval()
    return model, examples[:7], tok.pad_token_id


def _per_example_losses(logits: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None) -> list:
    """Mean loss of each sequence in a batch, from full logits: rows of a padded batch, or the
    segments of packed rows (a segment starts where position_ids restart)."""
    losses = []
    for row in range(labels.shape[0]):
        starts = [0] if position_ids is None else (position_ids[row] == 0).nonzero().flatten().tolist()
        ends = starts[1:] + [labels.shape[1]]
        for s, e in zip(starts, ends):
            lab = labels[row, s:e]
            if (lab[1:] != IGNORE).any():
                losses.append(float(torch.nn.functional.cross_entropy(logits[row, s:e - 1], lab[1:],
                                                                      ignore_index=IGNORE)))
    return losses


@pytest.fixture(scope="module")
def segment_model(tiny_llama):
    """The tiny model on the studio's attention per example of a packed row."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert use_packed_attention(model) == "sdpa"
    return model.eval()


# attention priced high enough that a batch takes several rows (with padded tails), or free;
# the block-diagonal mask (transformers' masking) or attention run per example (fastpath)
@pytest.mark.parametrize("segments", [False, True], ids=["mask", "per-example"])
@pytest.mark.parametrize("attention_tokens", [10**9, 20], ids=["one-row", "several-rows"])
def test_packed_batch_gives_each_example_its_own_loss(model_and_examples, segment_model, attention_tokens,
                                                      segments, monkeypatch):
    model, examples, pad = model_and_examples
    model = segment_model if segments else model
    if segments and attention_tokens < 1000:   # per example, rows cost only their padding: force narrow rows
        monkeypatch.setattr(collator_mod, "pack_rows", lambda lengths, items, **kw: pack_rows(lengths, items, width=100))
    alone = []
    with torch.no_grad():
        for ex in examples:
            alone.append(float(model(**Collator(pad, True)([ex])).loss))
            batch = Collator(pad, True, padding_free=True, attention_tokens=attention_tokens, segments=segments)(examples)
        assert ("studio_segments" in batch) == segments
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    rows = collator_mod.pack_rows([len(e["input_ids"]) for e in examples], list(range(len(examples))),
                                  attention_tokens=math.inf if segments else attention_tokens)
    assert batch["input_ids"].shape[0] == len(rows) and (len(rows) == 1) == (attention_tokens > 1000)
    packed = _per_example_losses(logits, batch["labels"], batch["position_ids"])
    in_rows = [i for row in rows for i in row]   # the order examples sit in the rows
    assert len(packed) == len(examples)
    assert max(abs(packed[k] - alone[i]) for k, i in enumerate(in_rows)) < 1e-4


def _loss_and_grads(model, batch) -> tuple[float, dict]:
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_batch_loss_and_gradients_are_the_same_in_every_layout(tiny_llama, model_and_examples):
    from peft import LoraConfig, get_peft_model

    _, examples, pad = model_and_examples
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    transformers.set_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False))   # B != 0: gradients reach A too
    model.train()
    ref_loss, ref_grads = _loss_and_grads(model, Collator(pad, True)(examples))
    for padding_free in (False, True):
        for label_only in (False, True):
            loss, grads = _loss_and_grads(model, Collator(pad, True, padding_free, label_only)(examples))
            assert abs(loss - ref_loss) < 1e-5, (padding_free, label_only)
            for name, g in grads.items():
                assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-6), (padding_free, label_only, name)
    # and with attention run per example of each packed row
    assert use_packed_attention(base) == "sdpa"
    loss, grads = _loss_and_grads(model, Collator(pad, True, True, True, segments=True)(examples))
    assert abs(loss - ref_loss) < 1e-5
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-6), name


def test_label_logits_only_projects_just_the_labelled_positions(model_and_examples):
    model, examples, pad = model_and_examples
    rows = []
    handle = model.lm_head.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape))
    try:
        with torch.no_grad():
            batch = Collator(pad, True, padding_free=True, label_logits_only=True)(examples)
            model(**batch)
    finally:
        handle.remove()
    labelled = sum(sum(1 for t in ex["labels"][1:] if t != IGNORE) for ex in examples)
    tokens = sum(len(ex["input_ids"]) for ex in examples)
    assert batch["shift_labels"].numel() == labelled
    assert rows[0][:-1].numel() == labelled < tokens   # the prompts are not projected


def test_pack_rows_keeps_every_example_once_and_never_costs_more_than_padding():
    rng = random.Random(1)
    for trial in range(50):
        lengths = [rng.choice([rng.randint(1, 60), rng.randint(1, 900)]) for _ in range(rng.randint(1, 16))]
        n, longest = len(lengths), max(lengths)
        for attention in (50, 3456, 10**9):
            rows = pack_rows(lengths, list(range(n)), attention_tokens=attention)
            assert sorted(i for row in rows for i in row) == list(range(n))
            width = max(sum(lengths[i] for i in row) for row in rows)
            cost = len(rows) * width * (1 + width / attention)
            assert cost <= n * longest * (1 + longest / attention) + 1e-9   # padded to the longest
            if attention == 10**9:
                assert len(rows) * width == sum(lengths)   # attention free: no padding at all
    # the case that made rows of up to 512 tokens worse than padding: 4 x 188 slots padded
    rows = pack_rows([150, 170, 188, 98], list(range(4)), attention_tokens=3456)
    assert len(rows) * max(sum([150, 170, 188, 98][i] for i in row) for row in rows) <= 4 * 188
    assert pack_rows([5, 7], ["a", "b"], width=7) == [["b"], ["a"]]
    assert pack_rows([5, 7], ["a", "b"], width=12) == [["b", "a"]]


def test_probe_turns_off_what_the_model_cannot_compute_exactly(model_and_examples, monkeypatch):
    model, _, _ = model_and_examples
    assert probe(model, torch.device("cpu"))[:2] == (True, True)
    # a model whose masking ignores sequence restarts (packed examples see each other)
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    pf, ll, notes = probe(model, torch.device("cpu"))
    assert (pf, ll) == (False, True) and "padding-free batches are off" in notes[0]
    monkeypatch.undo()
    # a head that projects every position whatever it is asked
    import transformers.models.llama.modeling_llama as llama

    monkeypatch.setattr(llama, "slice_logits_to_keep", lambda hidden, keep: hidden)
    pf, ll, notes = probe(model, torch.device("cpu"))
    assert (pf, ll) == (True, False) and "label-only logits are off" in notes[0]
    assert model.training is False   # left in the mode it had


def _run(tiny_llama, out, recorder, **data):
    raw = {"model": {"source": tiny_llama},
           "data": {"path": str(DATASETS / "chat_long_sample.jsonl"), "eval_fraction": 0.1, "max_seq_len": 96,
                    "padding_free": data.pop("padding_free", True)},
           "variant": {"name": "lora", "r": 4},
           "train": {"output_dir": str(out), "max_steps": 5, "batch_size": 4, "learning_rate": 5e-3,
                     "save_every": 0, "eval_every": 5, "device": "cpu", "precision": "fp32", "gallery": False,
                     "label_logits_only": data.pop("label_logits_only", True)}}
    result = Session(RunConfig.from_dict(raw, "test")).run(sink=recorder)
    assert result.status == "completed", result.error
    started = recorder.of("run_started")[-1]
    losses = [e["loss"] for e in recorder.of("step")]
    evals = [e["eval_loss"] for e in recorder.of("eval")]
    started["progress"] = [e["message"] for e in recorder.of("progress")]
    started["notes"] = [m for m in started["progress"] if m.startswith("note:")]
    recorder.events.clear()
    return started, losses, evals


def test_a_padding_free_run_has_the_padded_runs_losses(tiny_llama, tmp_path, recorder, monkeypatch):
    started, fast_losses, fast_eval = _run(tiny_llama, tmp_path, recorder)
    assert started["padding_free"] is True and started["label_logits_only"] is True
    assert any("attention per example" in m for m in started["progress"])
    started, losses, evals = _run(tiny_llama, tmp_path, recorder, padding_free=False, label_logits_only=False)
    assert started["padding_free"] is False and started["label_logits_only"] is False
    assert len(losses) == len(fast_losses) == 5
    assert max(abs(a - b) for a, b in zip(losses, fast_losses)) < 1e-4
    assert abs(evals[0] - fast_eval[0]) < 1e-4
    # a model that would let packed examples see each other trains padded, and says so
    import transformers.masking_utils as masking

    import studio.core.fastpath as fastpath

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    monkeypatch.setattr(fastpath, "use_packed_attention", lambda model: None)   # not on sdpa
    started, losses, _ = _run(tiny_llama, tmp_path, recorder)
    assert started["padding_free"] is False and any("padding-free batches are off" in n for n in started["notes"])
    assert max(abs(a - b) for a, b in zip(losses, fast_losses)) < 1e-4
