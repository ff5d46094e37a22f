"""A stock LoRA fine-tuning script: transformers Trainer + PEFT, written the way a person would
without LoRA Studio. It is the baseline that tests/bench/bench_speed.py times the studio against,
and it never imports studio (only torch, transformers, peft, datasets).

What it does, step by step:
  1. load_dataset("json") of a "messages" jsonl (one conversation per line);
  2. render each conversation with the tokenizer's chat template and tokenize it; labels are -100
     except on the assistant turns (their content and the end-of-turn marker, found by rendering
     the prefixes with apply_chat_template); truncate to max_seq_len; drop examples left with no
     label to learn from;
  3. AutoModelForCausalLM in float32, peft LoraConfig(target_modules="all-linear") + get_peft_model;
  4. DataCollatorForSeq2Seq(padding="longest") and a plain Trainer: AdamW with the Trainer's
     defaults (betas 0.9/0.999, eps 1e-8, weight decay 0), linear schedule, no warm-up, clipping
     at 1.0, no checkpoints, no evaluation. bf16 autocast on a GPU that supports it (else fp16).

The studio's defaults are the same: its LoRA variant leaves the optimizer to the Trainer
(variants/lora.py has no make_optimizer, so both get the Trainer's default AdamW,
adamw_torch_fused), and its training_arguments() sets the same schedule, clipping and weight
decay. The Trainer's sampler is seeded by `seed` alone (accelerate's seedable sampler), so the same
seed and the same examples in the same (file) order give the same batches in both; LoRA's random A
is drawn after set_seed(seed), as the studio does.

    .venv/bin/python tests/bench/stock_train.py MODEL_DIR resources/datasets/chat_sample.jsonl --steps 20
    .venv/bin/python tests/bench/stock_train.py --help

MODEL_DIR is a local Hugging Face folder (config.json, safetensors, tokenizer); the bundled
SmolLM2's converted folder is printed by
`python -c "from studio.core.models import resolve_source as r; print(r('bundled:smollm2-135m-instruct').path)"`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_key, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IGNORE = -100

# Only for a tokenizer that ships no chat template: plain ChatML, each turn closed by eos. The
# studio falls back to the same layout, so both arms see the same tokens on such a model.
CHATML = (
    "{%- set eot = eos_token if eos_token else '<|im_end|>' -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + eot + '\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:   # padding is masked out of attention and loss: any token will do
        tok.pad_token = tok.eos_token or tok.unk_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML
    return tok


def tokenize_conversation(messages: list[dict], tok, max_seq_len: int) -> dict:
    """input_ids and labels of one conversation: loss on the assistant turns only.

    An assistant turn's tokens run from the end of the rendered prefix (the conversation before
    it plus the assistant header) to the end of the conversation rendered up to and including it,
    without the newline the template puts after the end-of-turn marker (layout, not speech)."""
    def render(msgs, generation_prompt=False) -> str:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    full = render(messages)
    input_ids = tok(full, add_special_tokens=False)["input_ids"]
    labels = [IGNORE] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = n_tokens(render(messages[:i], generation_prompt=True))
        end = n_tokens(render(messages[: i + 1]).rstrip())
        labels[start:end] = input_ids[start:end]
    return {"input_ids": input_ids[:max_seq_len], "labels": labels[:max_seq_len]}


def load_chat_dataset(data_path: str, tok, max_seq_len: int, verbose: bool = True):
    """The tokenized training set (file order), and its totals for comparing with the studio's."""
    from datasets import load_dataset

    raw = load_dataset("json", data_files=str(data_path), split="train")
    data = raw.map(lambda row: tokenize_conversation(row["messages"], tok, max_seq_len),
                   remove_columns=raw.column_names)
    # position 0 is never predicted (the labels are shifted inside the model)
    data = data.filter(lambda row: any(t != IGNORE for t in row["labels"][1:]))
    stats = {"rows": len(raw), "examples": len(data), "dropped": len(raw) - len(data),
             "tokens": sum(len(ids) for ids in data["input_ids"]),
             "label_tokens": sum(sum(t != IGNORE for t in labels[1:]) for labels in data["labels"])}
    if verbose:
        print(f"stock data: {stats['examples']} examples ({stats['dropped']} dropped), {stats['tokens']} tokens, "
              f"{stats['label_tokens']} label tokens", flush=True)
    return data, stats


def build_trainer(model_dir: str, data_path: str, *, r: int = 16, alpha: float = 32, max_seq_len: int = 256,
                  batch_size: int = 4, lr: float = 2e-4, max_steps: int = 20, seed: int = 0, callbacks=(),
                  collator_wrapper=None, dropout: float = 0.0, lr_scheduler: str = "linear",
                  device: str = "auto", output_dir: str | None = None, verbose: bool = True,
                  bf16: bool | None = None):
    """A ready-to-train Trainer. `collator_wrapper(collator) -> collator` lets a benchmark count
    what each batch holds; `callbacks` are extra TrainerCallbacks. The dataset's totals are in
    `trainer.data_stats`. `bf16=True` autocasts to bf16 (also on a CPU) over the fp32 base; the
    default is bf16 on a GPU that has it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments,
                              set_seed)

    tok = load_tokenizer(model_dir)
    train_data, stats = load_chat_dataset(data_path, tok, max_seq_len, verbose)

    cuda = torch.cuda.is_available() and device != "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    set_seed(seed)   # LoRA's A is random: the same seed gives the same start in every run
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    bf16 = (cuda and torch.cuda.is_bf16_supported()) if bf16 is None else bf16
    args = TrainingArguments(
        output_dir=output_dir or tempfile.mkdtemp(prefix="stock-train-"),
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        max_steps=max_steps,
        lr_scheduler_type=lr_scheduler,
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=cuda and not bf16,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=IGNORE)
    if collator_wrapper is not None:
        collator = collator_wrapper(collator)
    trainer = Trainer(model=model, args=args, train_dataset=train_data, data_collator=collator,
                      processing_class=tok, callbacks=list(callbacks))
    trainer.data_stats = stats
    return trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Stock transformers Trainer + PEFT LoRA on a messages jsonl")
    parser.add_argument("model_dir", help="a local Hugging Face model folder")
    parser.add_argument("data", help="a jsonl file with a 'messages' column")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lr-scheduler", default="linear")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps (max_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--output-dir", default=None, help="where to save the adapter (default: not saved)")
    args = parser.parse_args(argv)

    import transformers

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="stock-train-") as tmp:
        trainer = build_trainer(args.model_dir, args.data, r=args.r, alpha=args.alpha, dropout=args.dropout,
                                max_seq_len=args.max_seq_len, batch_size=args.batch_size, lr=args.lr,
                                lr_scheduler=args.lr_scheduler, max_steps=args.steps, seed=args.seed,
                                device=args.device, output_dir=tmp)
        result = trainer.train()
        print(f"trained {result.global_step} steps, mean loss {result.training_loss:.4f}, "
              f"{result.metrics.get('train_runtime', 0):.1f} s")
        if args.output_dir:
            trainer.model.save_pretrained(args.output_dir)
            print(f"adapter saved to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
