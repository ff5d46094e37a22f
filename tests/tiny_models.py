"""Tiny, random, offline models and tokenizers for the test-suite.

Nothing here downloads anything: the tokenizers are trained in a few milliseconds on the
built-in text below, the models are random-initialised from a small config. Use them wherever
a test needs "a model" and does not care what it knows:

    from tiny_models import make_tokenizer, make_tiny_llama, make_tiny_bert
    folder = make_tiny_llama(tmp_path / "llama")        # AutoModelForCausalLM.from_pretrained(folder)
    folder = make_tiny_bert(tmp_path / "bert")          # AutoModelForSequenceClassification...

The causal tokenizer is a byte-level BPE (any text round-trips, vocab ~512) with SmolLM2-like
special tokens: bos `<|endoftext|>` (added at the start by the tokenizer, as Llama does), eos
`<|im_end|>` (also ChatML's end-of-turn), pad `<pad>`, and a ChatML chat template.
"""

from __future__ import annotations

import functools
from pathlib import Path

BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<pad>", "<|im_start|>"

# Qwen / SmolLM2-style ChatML, without a default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Enough varied English, digits and punctuation for ~250 useful merges.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A small model learns what it is shown.
Convert 3 kilometres to metres: 3 km is 3000 m. What is 12 plus 7? 12 + 7 = 19.
The capital of France is Paris. The capital of Japan is Tokyo. The capital of Italy is Rome.
This product is great, I love it! Terrible, it broke after a day. It was okay, nothing special.
Below is an instruction that describes a task. Write a response that appropriately completes
the request. ### Instruction: ### Input: ### Response: system user assistant tool
Hello! How can I help you today? Please answer the question. Thank you very much.
def main(): return 0  # code, tabs\tand newlines\n are text too; {"role": "user", "content": "hi"}
"""


def _training_text() -> list[str]:
    words = _CORPUS.split()
    # Repeat with a deterministic shuffle so merge counts are stable but not degenerate.
    lines = _CORPUS.splitlines()
    extra = [" ".join(words[i::7]) for i in range(7)]
    return (lines + extra) * 20


@functools.lru_cache(maxsize=None)
def _bpe_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD, IM_START],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Prepend BOS like Llama does, so "add_special_tokens=True" is visible in tests.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    return tok.to_str()


def make_tokenizer(folder=None, *, vocab_size: int = 512, chat_template: str | None = CHATML_TEMPLATE):
    """A small byte-level BPE PreTrainedTokenizerFast; saved into `folder` when given.

    Pass `chat_template=None` for a tokenizer with no chat template (the data code's fallback).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_bpe_json(vocab_size)),
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        additional_special_tokens=[IM_START],
        model_max_length=2048,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(folder))
    return tokenizer


def make_tiny_llama(folder, *, layers: int = 2, hidden: int = 64, seed: int = 0, init_range: float = 0.02) -> str:
    """A random 2-layer Llama (+ its tokenizer) saved as safetensors in `folder`; returns the folder.
    `init_range`: the std of the random weights. At Llama's 0.02 the frozen output layer's rows
    are so short that no adapter can make a logit stand out (the final norm bounds the hidden
    state), so a model meant to memorise something needs a larger one (0.2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = make_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, initializer_range=init_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(folder), safe_serialization=True)
    return str(folder)


@functools.lru_cache(maxsize=None)
def _wordpiece_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_training_text(), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tok.to_str()


def make_tiny_bert(folder, *, layers: int = 2, hidden: int = 64, seed: int = 0, num_labels: int = 2) -> str:
    """A random small BERT (+ a WordPiece tokenizer) saved as safetensors in `folder`; returns the folder."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_wordpiece_json(512)),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=512,
    )
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    return str(folder)


# -- in-memory pieces for tests that drive a variant without files ---------------------------------

def tiny_llama_config(layers: int = 2, **overrides):
    """The tiny Llama shape the variant maths is measured on (hidden 64, all 7 projections adaptable)."""
    from transformers import LlamaConfig

    kwargs = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def random_token_dataset(n: int = 64, seed: int = 1, classes: int | None = None):
    """Rows of 6-13 random token ids; labels are the ids (causal) or `i % classes`."""
    import torch
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(1, 128, (int(torch.randint(6, 14, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]
    if classes:
        return Dataset.from_dict({"input_ids": rows, "labels": [i % classes for i in range(n)]})
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


def pad_collator(rows):
    """Right-pad with id 0, mask 0 and label -100 (an int label is left as is)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for r in rows:
        pad = width - len(r["input_ids"])
        out["input_ids"].append(list(r["input_ids"]) + [0] * pad)
        out["attention_mask"].append([1] * len(r["input_ids"]) + [0] * pad)
        label = r["labels"]
        out["labels"].append(label if isinstance(label, int) else list(label) + [-100] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}
