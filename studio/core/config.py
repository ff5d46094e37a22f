"""RunConfig: one TOML file describes one run.

The window edits it, the CLI takes it (`lora-studio train CONFIG.toml --set train.max_steps=50`),
the run folder keeps the resolved copy so a run can be repeated as is. Sections are model, data,
variant, train and telemetry; each key is a described dataclass field (see options.py), so bounds and help text live
next to the default. Variant options live in `[variant]` beside `name` and are checked against the
chosen variant's own options dataclass (see variants/).
"""

from __future__ import annotations

import codecs
import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .options import coerce, option, shown
from .resources import resource_dir


@dataclass
class ModelSection:
    source: str = option("bundled:smollm2-135m-instruct",
                         "A local HF folder, a .gguf file, a hub id, or bundled:smollm2-135m-instruct / bundled:minilm-l6")
    task: str = option("causal-lm", "What the model learns to do",
                       choices=("causal-lm", "sequence-classification"))
    trust_remote_code: bool = option(False, "Run Python code shipped with a hub model (only if you trust it)")
    # how the frozen base is held (storage.py); the adapter and its optimizer state stay fp32
    dtype: str = option("auto", "Storage of the frozen base: auto is bf16 on a GPU with bf16 and on a CPU "
                                "with bf16 matrix units (AMX, AVX512-BF16), fp32 elsewhere",
                        choices=("auto", "fp32", "bf16", "fp16"))
    quantize: str = option("none", "Hold the frozen base's linear layers in 4 bits (NF4, QLoRA) or 8 bits "
                                   "(bitsandbytes): about 1/7 or 1/4 of fp32's memory",
                           choices=("none", "4bit", "8bit"))


@dataclass
class DataSection:
    path: str = option("resources/datasets/chat_sample.jsonl", "Training data: .jsonl, .json, .csv, .parquet or .txt")
    format: str = option("auto", "How rows are read; auto looks at the columns",
                         choices=("auto", "text", "prompt-completion", "alpaca", "messages", "sharegpt",
                                  "classification"))
    eval_path: str = option("", "A separate evaluation file (overrides eval_fraction)")
    eval_fraction: float = option(0.1, "Share of rows held out for evaluation", min=0.0, max=0.9)
    max_seq_len: int = option(512, "Longer examples are truncated", min=8, max=131072)
    text_column: str = option("", "Classification: the text column (auto: text, sentence, ...)")
    label_column: str = option("", "Classification: the label column (auto: label, labels, ...)")
    pack: bool = option(True, "Plain text: concatenate and cut into max_seq_len blocks")
    padding_free: bool = option(True, "Chat and instruction data: a batch's examples share rows with no padding, "
                                      "each attending only to itself (used when the model supports it)")
    eval_max: int = option(1000, "Evaluate at most this many of the held-out examples (0: all of them)",
                           min=0, max=10**9)
    num_proc: int = option(0, "Processes that tokenize the data (0: one per core for a large file)", min=0, max=256)


@dataclass
class TrainSection:
    output_dir: str = option("runs", "Where run folders are created")
    epochs: float = option(3.0, "Passes over the training data", min=0.0, max=1e6)
    max_steps: int = option(0, "> 0 overrides epochs", min=0)
    batch_size: int = option(4, "Examples per micro-batch for the whole run (split evenly across processes)", min=1)
    grad_accum: int = option(1, "Micro-batches per optimizer step", min=1)
    learning_rate: float = option(2e-4, "Peak learning rate", min=0.0, max=1.0)
    # constant by default: at a fixed step budget a decay to zero halves the learning a run does,
    # and VeRA's vectors and AdaLoRA's singular values, which start at zero, feel it most
    # (issue 17, tests/bench/variant_quality.py); QLoRA's recipe is constant too
    lr_scheduler: str = option("constant", "Learning-rate schedule after warmup",
                               choices=("linear", "cosine", "constant", "constant_with_warmup",
                                        "cosine_with_restarts", "polynomial", "inverse_sqrt"))
    warmup_steps: int = option(0, "Optimizer steps of linear warmup", min=0)
    weight_decay: float = option(0.0, "AdamW weight decay", min=0.0, max=1.0)
    max_grad_norm: float = option(1.0, "Gradient clipping (0 = off)", min=0.0)
    gradient_checkpointing: bool = option(False, "Trade compute for memory on long sequences")
    label_logits_only: bool = option(True, "Compute the vocabulary-wide output layer only where a token has a "
                                           "label (prompts and padding skip it); the loss is the same")
    save_every: int = option(50, "Checkpoint every N optimizer steps (0 = none; a stop still saves one)", min=0)
    eval_every: int = option(50, "Evaluate every N optimizer steps (0 = never)", min=0)
    # numpy's seeds stop at 2**32 (a larger one fails when the run starts); the window's spin box at 2**31
    seed: int = option(0, "Random seed for init, shuffling and dropout", min=0, max=2**31 - 1)
    device: str = option("auto", "Where to train", choices=("auto", "cpu", "cuda", "mps"))
    precision: str = option("auto", "Number format for training", choices=("auto", "fp32", "bf16", "fp16"))
    gallery: bool = option(True, "Add the finished (or stopped) run's adapter to the gallery")


@dataclass
class TelemetrySection:
    every: int = option(10, "Spectra, importance, ranks, decomposition every N optimizer steps "
                            "(0: only once, at the end)", min=0)
    budget: float = option(1.0, "Most of the training time telemetry may take, in percent; a measurement "
                                "that would exceed it is postponed (0: no limit)", min=0.0, max=100.0)
    dense_every: int = option(0, "DoRA's exact full-rank spectrum every N steps and at the end (0: "
                                 "whenever it fits in the budget)", min=0)


SECTIONS = {"model": ModelSection, "data": DataSection, "train": TrainSection, "telemetry": TelemetrySection}


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    variant: dict[str, Any] = field(default_factory=lambda: {"name": "lora"})
    train: TrainSection = field(default_factory=TrainSection)
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)
    source_path: str = ""  # the TOML it came from, for error messages; not written out

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "RunConfig":
        cfg = cls(source_path=where)
        for key in raw:
            if key not in SECTIONS and key != "variant":
                raise ConfigError(f"{where}: unknown section [{_name(key)}] (expected one of "
                                  f"{', '.join(['model', 'data', 'variant', 'train', 'telemetry'])})")
        for name, section_cls in SECTIONS.items():
            values = raw.get(name, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: [{name}] must be a table of keys")
            setattr(cfg, name, _build_section(section_cls, values, f"{where}: {name}"))
        variant = raw.get("variant", {})
        if not isinstance(variant, dict):
            raise ConfigError(f"{where}: [variant] must be a table of keys")
        cfg.variant = {"name": "lora", **variant}
        cfg.variant = resolve_variant(cfg.variant, where)
        if cfg.train.max_steps == 0 and cfg.train.epochs <= 0:
            raise ConfigError(f"{where}: train.epochs: expected a number > 0 when train.max_steps is 0, "
                              f"got {cfg.train.epochs}")
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # UTF-32's marks start the same way
            raise ConfigError(f"{path}: UTF-16 text; expected UTF-8 (save the file as UTF-8)")
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark is fine; TOML itself is UTF-8
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text: invalid byte 0x{data[e.start]:02x} at byte offset {e.start} "
                              "(expected a TOML run config)") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {' '.join(str(e).split())}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
        return cls.from_dict(raw, str(path))

    # -- writing -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        out = {name: dataclasses.asdict(getattr(self, name)) for name in ("model", "data")}
        out["variant"] = dict(self.variant)
        out["train"] = dataclasses.asdict(self.train)
        out["telemetry"] = dataclasses.asdict(self.telemetry)
        return out

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def copy(self) -> "RunConfig":
        return RunConfig.from_dict(self.to_dict(), self.source_path)

    # -- overrides ---------------------------------------------------------------------------

    def with_overrides(self, assignments: list[str]) -> "RunConfig":
        """Apply `section.key=value` strings (the CLI's --set). Values are read as TOML values
        (numbers, true/false, quoted strings, lists) and fall back to a bare string."""
        raw = self.to_dict()
        parsed = []
        for item in assignments:
            if "=" not in item or "." not in item.split("=", 1)[0]:
                raise ConfigError(f"--set {shown(item, 100)}: expected section.key=value, e.g. train.max_steps=50")
            dotted, text = item.split("=", 1)
            section, key = (part.strip() for part in dotted.strip().split(".", 1))
            if section not in raw:
                raise ConfigError(f"--set {shown(item, 100)}: unknown section {shown(section)} "
                                  "(expected model, data, variant, train or telemetry)")
            parsed.append((section, key, _parse_value(text.strip())))
        if any(s == "variant" and k == "name" and v != raw["variant"].get("name") for s, k, v in parsed):
            # a new variant: keep the options the person changed, take the new variant's defaults
            raw["variant"] = keep_customised(raw["variant"])
        for (section, key, value), item in zip(parsed, assignments):
            raw[section][key] = value
            if section in SECTIONS:  # check each override on its own, so its error names the --set
                _build_section(SECTIONS[section], {key: value}, f"--set {shown(item.strip(), 100)}: {section}")
        try:
            return RunConfig.from_dict(raw, self.source_path or "--set")
        except ConfigError as e:
            for (section, key, _), item in zip(parsed, assignments):
                if f"{section}.{key}:" in str(e):
                    raise ConfigError(f"--set {shown(item.strip(), 100)}: {section}.{key}:"
                                      + str(e).split(f"{section}.{key}:", 1)[1]) from None
            raise

    # -- convenience -------------------------------------------------------------------------

    @property
    def variant_name(self) -> str:
        return self.variant["name"]

    def variant_options(self):
        """The chosen variant's options dataclass, filled in from [variant]."""
        from .variants import get_variant

        spec = get_variant(self.variant_name)
        values = {k: v for k, v in self.variant.items() if k != "name"}
        return spec.options_cls(**values)


def find_file(path: str, config_source: str = "") -> str:
    """Where a relative path in a config points: the current folder first, then the config
    file's folder, then the studio's own resources (`resources/datasets/...` is found in a
    checkout, an installed wheel and a frozen app alike). Returns an absolute path when found,
    the path unchanged otherwise (the loader then says it is missing)."""
    try:
        p = Path(path).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not have: the loader says it is missing
        return path
    if not path or p.is_absolute():
        return path
    candidates = [Path.cwd() / p]
    if config_source and Path(config_source).is_file():
        candidates.append(Path(config_source).resolve().parent / p)
    if len(p.parts) > 1 and p.parts[0] == "resources":
        candidates.append(resource_dir().joinpath(*p.parts[1:]))
    candidates.append(Path(__file__).resolve().parents[2] / p)   # a checkout's own files
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return path


def resolved_paths(cfg: "RunConfig") -> "RunConfig":
    """A copy with the data paths (and a local model path) made absolute, so the run folder's
    config.toml re-runs from anywhere."""
    out = cfg.copy()
    out.data.path = find_file(cfg.data.path, cfg.source_path)
    if cfg.data.eval_path:
        out.data.eval_path = find_file(cfg.data.eval_path, cfg.source_path)
    try:
        out.train.output_dir = str(Path(cfg.train.output_dir).expanduser().resolve())
    except RuntimeError as e:  # "~nobody/runs", or a symbolic link loop
        raise ConfigError(f"{cfg.source_path or 'config'}: train.output_dir: cannot use "
                          f"{shown(cfg.train.output_dir, 100)} ({e}); expected a folder path") from None
    src = cfg.model.source
    if not src.startswith("bundled:") and (src.startswith((".", "~", "/")) or Path(src).exists()):
        out.model.source = find_file(src, cfg.source_path)
    return out


def _parse_value(text: str) -> Any:
    try:
        doc = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
    return doc["v"] if len(doc) == 1 else text  # "1\nw = 2" is not one value


def _name(key: Any) -> str:
    """A key as a message shows it: bare when it looks like one, quoted when it holds anything odd
    (TOML's quoted keys can hold newlines, which would break the one-line message)."""
    return key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key) else shown(key)


def _build_section(section_cls: type, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(section_cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}.{_name(key)}: unknown key (expected one of {', '.join(sorted(known))})")
        try:
            kwargs[key] = coerce(section_cls, key, value)
        except ValueError as e:
            raise ConfigError(f"{where}.{key}: {e}") from None
    return section_cls(**kwargs)


def keep_customised(variant: dict) -> dict:
    """When the variant changes: keep the common options (r, alpha, dropout, target_modules) that
    differ from the old variant's defaults; the rest take the new variant's defaults (so switching
    default.toml's LoRA to VeRA gives VeRA's r = 256, not LoRA's 16)."""
    from .variants import REGISTRY
    from .variants.base import CommonOptions

    common = {f.name for f in dataclasses.fields(CommonOptions)}
    old = REGISTRY.get(variant.get("name"))
    defaults = dataclasses.asdict(old.options_cls()) if old else {}
    return {k: v for k, v in variant.items()
            if k == "name" or (k in common and (k not in defaults or defaults[k] != v))}


def legacy_options(config: RunConfig, saved: Path) -> RunConfig:
    """The config of a run being resumed from its folder. A config.toml written before a variant
    option existed lacks it, and today's default would change how the run trains on (VeRA's
    lr_ratio, AdaLoRA's lambda_lr_ratio: another learning rate, and optimizer state that no
    longer fits): such an option takes its `legacy` value, the behaviour the run started with."""
    from .variants import get_variant

    try:
        doc = tomllib.loads(Path(saved).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return config    # reading the config itself reports what is wrong with it
    raw, model, data = doc.get("variant", {}), doc.get("model", {}), doc.get("data", {})
    if not isinstance(raw, dict) or not isinstance(model, dict) or not isinstance(data, dict):
        return config
    missing = {f.name: f.metadata["legacy"] for f in dataclasses.fields(get_variant(config.variant_name).options_cls)
               if "legacy" in f.metadata and f.name not in raw}
    # before model.dtype existed the base was held in fp32 (and a CPU computed in fp32)
    old_storage = "dtype" not in model
    # before data.eval_max existed every held-out example was evaluated
    old_eval = "eval_max" not in data
    if not missing and not old_storage and not old_eval:
        return config
    out = config.copy()
    out.variant = {**config.variant, **missing}
    if old_storage:
        out.model.dtype = "fp32"
    if old_eval:
        out.data.eval_max = 0
    return out


def resolve_variant(values: dict, where: str = "config") -> dict:
    """Check [variant] against the registry and the variant's options; return it complete
    (every option present, defaults filled in) so the run folder's copy is fully resolved."""
    from .variants import get_variant, variant_names

    name = values.get("name")
    if not isinstance(name, str) or name not in variant_names():
        raise ConfigError(f"{where}: variant.name: expected one of {', '.join(variant_names())}, got {shown(name)}")
    spec = get_variant(name)
    opts_cls = spec.options_cls
    known = {f.name: f for f in dataclasses.fields(opts_cls)}
    out: dict[str, Any] = {"name": name}
    for key, value in values.items():
        if key == "name":
            continue
        if key not in known:
            raise ConfigError(f"{where}: variant.{_name(key)}: not an option of {name} "
                              f"(its options: {', '.join(sorted(known))})")
        if key == "target_modules" and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}: variant.target_modules: expected module names, got {shown(value)}")
            value = ",".join(value)
        try:
            out[key] = coerce(opts_cls, key, value)
        except ValueError as e:
            raise ConfigError(f"{where}: variant.{key}: {e}") from None
    defaults = opts_cls()
    for fname in known:
        out.setdefault(fname, getattr(defaults, fname))
    try:
        opts_cls(**{k: v for k, v in out.items() if k != "name"}).check()
    except ValueError as e:
        raise ConfigError(f"{where}: variant.{e}") from None
    return out
