"""The steps that prepare a run before its folder exists: several processes started, the data
read, the base model loaded, the variant's adapters built on it. training.Session._prepare calls
them in order, with a stop check between them; each reports through `progress(message)`.

Several processes (distributed.py): `main_first(fn)` runs fn in the main process first (a GGUF
converted, the data tokenized and cached), then in the others, which find its results cached.
"""

from __future__ import annotations

import os

from . import distributed
from .config import RunConfig
from .variants import BuildContext, get_variant
from .variants.base import build_checked


def quiet_libraries() -> None:
    """The libraries' own progress bars and warnings off: the run's events are the report."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def start_processes(cfg: RunConfig, w: distributed.World, device, precision: str, progress):
    """Join the other processes of a launch (accelerate launch); returns this process's device."""
    import torch

    distributed.per_process_batch(cfg.train.batch_size, w)   # bad input: before anything is loaded
    distributed.check_variant(get_variant(cfg.variant_name), w)
    state = distributed.start(w, use_cpu=device.type == "cpu")
    if device.type == "cuda":
        device = state.device   # this process's own GPU (cuda:LOCAL_RANK)
        torch.cuda.set_device(device)
    # the run config decides the precision, whatever the launcher was told
    os.environ["ACCELERATE_MIXED_PRECISION"] = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")
    progress(f"{w.size} processes ({w.mode}), {distributed.per_process_batch(cfg.train.batch_size, w)} "
             f"of the {cfg.train.batch_size} examples of a step each")
    if w.sharded:
        progress("note: telemetry is off: the adapter weights are sharded across processes")
    return device


def find_base(cfg: RunConfig, w: distributed.World, progress, main_first):
    """The base model's resolved source: on several processes the main one converts a GGUF (or
    downloads) first; the others then find it cached."""
    from .models import resolve_source

    find = lambda: resolve_source(cfg.model.source, cfg.model.trust_remote_code, progress=progress)  # noqa: E731
    return main_first(find) if w.distributed else find()


def read_data(cfg: RunConfig, w: distributed.World, resolved, progress, main_first):
    """(the tokenizer, the prepared data); several processes: the main one prepares (and caches)
    the data, the others then load it. Its notes (rows skipped or dropped, no room for an eval
    split) are told."""
    from .data import prepare_data
    from .models import load_tokenizer

    tokenizer = load_tokenizer(resolved, cfg.model.trust_remote_code)
    progress("reading the dataset")
    prepare = lambda: prepare_data(cfg.data, tokenizer, cfg.model.task, seed=cfg.train.seed,  # noqa: E731
                                   progress=progress if w.is_main else None)
    data = main_first(prepare) if w.distributed else prepare()
    for note in data.notes:
        progress(f"note: {note}")
    return tokenizer, data


def keep_chat_template(cfg: RunConfig, tokenizer, data, progress) -> None:
    """A model without a chat template, trained on conversations laid out as ChatML: the template
    goes into the tokenizer, and so is saved with the adapter, so that generation formats
    prompts the way training did."""
    from .dataformats import FALLBACK_CHAT_TEMPLATE

    if data.chat_template_used == "fallback-chatml":
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        progress(f"warning: {cfg.model.source} has no chat template: the conversations are laid out "
                 "as ChatML, and that template is saved with the adapter")


def load_base(cfg: RunConfig, resolved, data, held, device, tokenizer, progress):
    """The base model, on its device, held as `held` (storage.Storage) says."""
    from .models import load_model

    progress(f"loading the base model ({held.describe()}" + (f": {held.why})" if held.why else ")"))
    # The adapter is fp32 whatever the base (master weights; peft upcasts it over a half
    # base), and bf16/fp16 compute is autocast on top. Delta-LoRA keeps the W it moves in
    # fp32 (its build upcasts the adapted layers: a bf16 W would round its updates away).
    base = load_model(resolved, cfg.model.task, label_names=data.label_names, storage=held, device=device,
                      trust_remote_code=cfg.model.trust_remote_code, pad_token_id=tokenizer.pad_token_id)
    if not held.quantized:   # a quantized model is placed while it loads (device_map)
        base.to(device)
    return base


def build_adapters(cfg: RunConfig, base, variant, opts, data, device, held, *, total_steps: int,
                   saved_state: dict, emit, should_stop):
    """(the variant's build context, the base with the variant's adapters). `saved_state`: the
    variant's JSON state of the run being resumed ({} for a new run)."""
    import transformers

    ctx = BuildContext(task=cfg.model.task, total_steps=total_steps, learning_rate=cfg.train.learning_rate,
                       weight_decay=cfg.train.weight_decay, seed=cfg.train.seed, device=device,
                       train_dataset=data.train, collator=data.collator, batch_size=cfg.train.batch_size,
                       emit=emit, should_stop=should_stop, saved_state=saved_state, state=dict(saved_state))
    transformers.set_seed(cfg.train.seed)
    model = build_checked(variant, base, opts, ctx)   # a target or rank the model refutes: ConfigError
    if not held.quantized:
        # peft puts each adapter on its layer's device already; bitsandbytes' 8-bit layers
        # lose their scales to a .to() after their first forward (the batch-layout probe)
        model.to(device)
    return ctx, model
