"""The adapter gallery: a folder per adapter under `studio_home()/gallery`.

Each entry folder holds the PEFT files (`adapter_config.json`, `adapter_model.safetensors`), the
tokenizer the run trained with (chat template included), `studio.json` (base model and its
fingerprint, variant, options, final metrics, loss history, source run, name, notes, created) and,
for entries that came from a run, `telemetry.json` (the run's last spectrum, importance, ranks and
decomposition events, so the gallery can show them after the run folder is gone).

The folder name IS the entry's name: letters, digits, '.', '_', '-' and spaces, never a path.
Every write goes through a temporary folder or file and a rename (paths.atomic_dir /
write_text_atomic), so a crash never leaves half an entry: a process killed at any point leaves
the gallery as it was (or, past the final rename, with the whole new entry). What a killed writer
leaves behind is hidden (a dot name, never listed) and swept by the next listing or write, once
the process that made it is gone (paths.sweep_stale). A full disk raises DiskFullError and
leaves the gallery unchanged. Only safetensors are read.
No torch here: listing the gallery must stay instant (export.py does the tensor work).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import InputError
from .variants import REGISTRY, infer_variant, peft_types
from .safeload import adapter_base_mismatch, check_safetensors
from .paths import (DiskFullError, atomic_dir, rename_noreplace, studio_home, sweep_stale, temp_path,
                    write_text_atomic)

META = "studio.json"
TELEMETRY = "telemetry.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# the last event of each of these kinds is kept with the entry (the gallery's detail charts)
TELEMETRY_KINDS = ("spectra", "importance", "ranks", "decomposition")
LOSS_POINTS = 200          # the loss history is kept downsampled to at most this many points
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,79}$")
TASK_TYPES = {"CAUSAL_LM": "causal-lm", "SEQ_CLS": "sequence-classification"}
UNCHANGED = "the gallery is unchanged; free some space and try again"


class GalleryError(InputError):
    pass


def infer_task_type(config: dict) -> str:
    """peft's task_type; peft leaves it empty unless asked, and then a saved head means a classifier."""
    task_type = config.get("task_type")
    if task_type is None:
        heads = " ".join(config.get("modules_to_save") or [])
        task_type = "SEQ_CLS" if "classifier" in heads or "score" in heads else "CAUSAL_LM"
    return str(task_type)


def check_name(name: str) -> str:
    """The name itself if it is a safe folder name; otherwise one line saying what is expected."""
    text = str(name)
    if "/" in text or "\\" in text or ".." in text or text in (".", ""):
        raise GalleryError(f"name {text!r}: expected a plain name, not a path (no '/', '\\' or '..')")
    if not _NAME.match(text) or text.endswith((" ", ".")):
        raise GalleryError(f"name {text!r}: expected 1-80 letters, digits, '.', '_', '-' or spaces, "
                           "starting with a letter or digit")
    return text


def slug(text: str) -> str:
    """A safe name made from any text (a run folder's name, a file name)."""
    out = re.sub(r"[^A-Za-z0-9._ -]+", "-", str(text)).strip(" .-_")
    out = re.sub(r"\.{2,}", ".", out)[:80].rstrip(" .")
    return out or "adapter"


def _downsample(values: list[float], points: int = LOSS_POINTS) -> list[float]:
    if len(values) <= points:
        return list(values)
    step = len(values) / points
    return [values[min(len(values) - 1, int(i * step))] for i in range(points - 1)] + [values[-1]]


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise GalleryError(f"{path}: not readable JSON ({type(e).__name__})") from None
    return value if isinstance(value, dict) else {}


@dataclass
class Entry:
    """One adapter in the gallery, as plain data (no tensors)."""

    name: str
    path: Path
    meta: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)     # adapter_config.json

    @property
    def variant(self) -> str:
        return str(self.meta.get("variant") or infer_variant(self.config) or "lora")

    @property
    def task(self) -> str:
        """From the record; for a bare PEFT folder, from its adapter_config.json."""
        return str(self.meta.get("task") or TASK_TYPES.get(infer_task_type(self.config), "causal-lm"))

    @property
    def base_model(self) -> str:
        return str(self.meta.get("base_model") or self.config.get("base_model_name_or_path") or "")

    @property
    def base_fingerprint(self) -> str | None:
        return self.meta.get("base_fingerprint")

    @property
    def rank(self) -> int | None:
        """The adapter's rank as saved (AdaLoRA: its final average budget target_r; a Delta-LoRA
        export is rank 2r; with a rank_pattern, the largest rank)."""
        cfg = self.config
        if cfg.get("peft_type") == "ADALORA":
            return int(cfg.get("target_r") or cfg.get("init_r") or 0) or None
        r = cfg.get("r")
        if r is None:
            return None
        pattern = cfg.get("rank_pattern") or {}
        return int(max([r, *pattern.values()]))

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    @property
    def created(self) -> str:
        return str(self.meta.get("created") or "")

    @property
    def notes(self) -> str:
        return str(self.meta.get("notes") or "")

    @property
    def loss_history(self) -> list[float]:
        return [float(x) for x in self.meta.get("loss_history") or []]

    @property
    def final_loss(self) -> float | None:
        metrics = self.meta.get("metrics") or {}
        for key in ("loss", "train_loss"):
            if isinstance(metrics.get(key), (int, float)):
                return float(metrics[key])
        history = self.loss_history
        return history[-1] if history else None

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.meta.get("labels") or []]

    @property
    def source_run(self) -> str | None:
        return self.meta.get("run")

    def telemetry(self) -> dict:
        """{kind: the last event of that kind} from the entry's run ({} if none was kept)."""
        return _read_json(self.path / TELEMETRY)

    def summary(self) -> dict:
        """The entry as one plain dict (CLI --json, the window's cards)."""
        return {"name": self.name, "variant": self.variant, "rank": self.rank, "task": self.task,
                "base_model": self.base_model, "base_fingerprint": self.base_fingerprint,
                "size_bytes": self.size_bytes, "final_loss": self.final_loss, "created": self.created,
                "notes": self.notes, "source_run": self.source_run, "path": str(self.path),
                "options": self.meta.get("options") or {}, "metrics": self.meta.get("metrics") or {},
                "derived_from": self.meta.get("derived_from")}


class Gallery:
    """The adapter library on disk. Every method raises GalleryError with one readable line."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else studio_home() / "gallery"

    # -- reading -----------------------------------------------------------------------------

    def sweep(self) -> list[Path]:
        """Remove what killed writers left (hidden temporary folders of processes that are gone)."""
        return sweep_stale(self.root) if self.root.is_dir() else []

    def entries(self) -> list[Entry]:
        """Every complete entry, newest first (temporary and half-written folders are skipped)."""
        if not self.root.is_dir():
            return []
        self.sweep()
        out = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            if not all((folder / f).is_file() for f in ADAPTER_FILES):
                continue
            try:
                out.append(self._entry(folder))
            except GalleryError:
                continue
        return sorted(out, key=lambda e: (e.created, e.name), reverse=True)

    def _entry(self, folder: Path) -> Entry:
        meta = _read_json(folder / META)
        if meta:
            meta["name"] = folder.name   # the folder name is the name (a rename killed halfway)
        return Entry(folder.name, folder, meta, _read_json(folder / "adapter_config.json"))

    def get(self, name: str) -> Entry:
        folder = self.root / check_name(name)
        if not all((folder / f).is_file() for f in ADAPTER_FILES):
            raise GalleryError(f"gallery: no adapter named {name!r} (lora-studio gallery list shows them)")
        return self._entry(folder)

    def compatible(self, name: str) -> list[Entry]:
        """Other entries on the same base model and task: what `name` can be combined with."""
        entry = self.get(name)
        return [e for e in self.entries() if e.name != entry.name and same_base(e, entry)]

    def unique_name(self, stem: str) -> str:
        stem = slug(stem)
        if not (self.root / stem).exists():
            return stem
        for i in range(2, 10000):
            name = f"{stem[:74]}-{i}"
            if not (self.root / name).exists():
                return name
        raise GalleryError(f"gallery: no free name for {stem!r}")

    # -- writing -----------------------------------------------------------------------------

    def add_folder(self, source: str | Path, name: str, meta: dict, telemetry: dict | None = None) -> Entry:
        """Copy an adapter folder in as a new entry named `name` (atomically), with `meta`."""
        name = check_name(name)
        final = self.root / name
        if final.exists():
            raise GalleryError(f"gallery: an adapter named {name!r} already exists")
        source = Path(source)
        meta = dict(meta)
        meta["name"] = name
        meta.setdefault("created", datetime.now().isoformat(timespec="seconds"))
        meta.setdefault("notes", "")
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep()
        try:
            with atomic_dir(final, replace=False, hint=UNCHANGED) as tmp:
                for f in source.iterdir():
                    if f.is_file() and f.name not in (META, TELEMETRY) and f.suffix not in (".bin", ".pt", ".pth", ".pkl"):
                        shutil.copy2(f, tmp / f.name)
                (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
                if telemetry:
                    (tmp / TELEMETRY).write_text(json.dumps(telemetry), encoding="utf-8")
        except DiskFullError:
            raise
        except OSError as e:
            if final.exists():
                raise GalleryError(f"gallery: an adapter named {name!r} already exists") from None
            raise GalleryError(f"gallery: could not add {name!r} ({e.strerror or e})") from None
        return self.get(name)

    def add_run(self, run_dir: str | Path, name: str | None = None, status: str | None = None) -> Entry:
        """Add a finished (or stopped) run's adapter, with its loss history and last telemetry.
        `status` is the run's (a Session adds its adapter before the run_finished event is written)."""
        run_dir = Path(run_dir).resolve()
        adapter = run_dir / "adapter"
        if not all((adapter / f).is_file() for f in ADAPTER_FILES):
            raise GalleryError(f"{run_dir}: no saved adapter in this run folder")
        meta = _read_json(adapter / META)
        by_step, last, finished = {}, {}, None
        events = run_dir / "events.jsonl"
        if events.is_file():
            from .telemetry.events import read_events

            for event in read_events(events):
                kind = event.get("type")
                if kind == "step" and isinstance(event.get("loss"), (int, float)):
                    by_step[int(event.get("step", 0))] = float(event["loss"])
                elif kind in TELEMETRY_KINDS:
                    last[kind] = event
                elif kind == "run_finished":
                    finished = event.get("status")
                elif kind == "run_started":   # a resumed run replaces what came after its checkpoint
                    resumed = re.search(r"checkpoint-(\d+)$", str(event.get("resumed_from") or "").rstrip("/\\"))
                    if resumed:
                        by_step = {k: v for k, v in by_step.items() if k <= int(resumed.group(1))}
        losses = [by_step[k] for k in sorted(by_step)]
        meta["loss_history"] = _downsample(losses)
        meta["run"] = str(run_dir)
        if status or finished:
            meta["status"] = status or finished
        if losses and "loss" not in (meta.get("metrics") or {}):
            meta.setdefault("metrics", {})["final_train_loss"] = losses[-1]
        return self.add_folder(adapter, check_name(name) if name else self.unique_name(run_dir.name), meta, last)

    def import_folder(self, folder: str | Path, name: str | None = None, base_model: str | None = None) -> Entry:
        """Add an adapter folder made elsewhere with stock PEFT (safetensors only)."""
        folder = Path(folder).resolve()
        config_path = folder / "adapter_config.json"
        if not config_path.is_file():
            raise GalleryError(f"{folder}: not a PEFT adapter folder (no adapter_config.json)")
        if not (folder / "adapter_model.safetensors").is_file():
            if (folder / "adapter_model.bin").is_file():
                raise GalleryError(f"{folder}: adapter_model.bin is a pickle; only adapter_model.safetensors "
                                   "is read (convert it with safetensors first)")
            raise GalleryError(f"{folder}: no adapter_model.safetensors")
        check_adapter_files(folder)
        config = _read_json(config_path)
        peft_type = str(config.get("peft_type") or "")
        if peft_type not in peft_types():
            raise GalleryError(f"{config_path}: peft_type {peft_type!r} is not supported "
                               f"(expected one of {', '.join(peft_types())})")
        variant = infer_variant(config)
        task_type = infer_task_type(config)
        task = TASK_TYPES.get(task_type, None)
        if task is None:
            raise GalleryError(f"{config_path}: task_type {config.get('task_type')!r} is not supported "
                               "(expected CAUSAL_LM or SEQ_CLS)")
        source = base_model or config.get("base_model_name_or_path")
        if not source:
            raise GalleryError(f"{config_path}: base_model_name_or_path is empty; say which base model it "
                               "belongs to (--base)")
        meta = {"base_model": str(source), "task": task, "variant": variant, "imported_from": str(folder.resolve()),
                "options": {k: config[k] for k in ("r", "lora_alpha", "target_modules") if k in config},
                "metrics": {}}
        fp = _local_fingerprint(str(source))
        if fp is not None:
            meta["base_path"], meta["base_fingerprint"] = fp
            check_adapter_files(folder, fp[0])
        previous = _read_json(folder / META)   # an adapter exported by the studio keeps its record
        for key in ("labels", "base_fingerprint", "base_path", "metrics", "loss_history", "options"):
            if key in previous:
                meta[key] = previous[key]
        made_by = REGISTRY.get(previous.get("variant"))
        if made_by is not None and made_by.saved_as == variant:
            meta["variant"] = made_by.name   # lora-plus, lora-fa, delta-lora save as plain LoRA
        return self.add_folder(folder, check_name(name) if name else self.unique_name(folder.name), meta)

    def rename(self, name: str, new_name: str) -> Entry:
        entry = self.get(name)
        new_name = check_name(new_name)
        if new_name == entry.name:
            return entry
        target = self.root / new_name
        if target.exists():
            raise GalleryError(f"gallery: an adapter named {new_name!r} already exists")
        self.sweep()
        try:
            rename_noreplace(entry.path, target)   # one rename: the entry is under one name or the other
        except FileExistsError:
            raise GalleryError(f"gallery: an adapter named {new_name!r} already exists") from None
        except OSError as e:
            raise GalleryError(f"rename {entry.name}: {e.strerror or e} ({e.filename})") from None
        try:   # the record follows; until then (a crash, a full disk) the folder's name is the name
            sweep_stale(target, META)
            write_text_atomic(target / META, json.dumps(dict(entry.meta, name=new_name), indent=1))
        except OSError:
            pass
        return self.get(new_name)

    def annotate(self, name: str, notes: str) -> Entry:
        entry = self.get(name)
        sweep_stale(entry.path, META)   # what a killed earlier write of the record left
        try:
            write_text_atomic(entry.path / META, json.dumps(dict(entry.meta, notes=str(notes)), indent=1),
                              hint=f"the notes of {entry.name} are unchanged; free some space and try again")
        except DiskFullError:
            raise
        except OSError as e:
            raise GalleryError(f"notes of {entry.name}: not saved ({e.strerror or e})") from None
        return self.get(name)

    def delete(self, name: str) -> None:
        """Remove an entry: renamed aside first (so it vanishes at once, in one step that needs
        no space on a full disk), then deleted; a kill in between leaves a hidden folder that
        the next listing sweeps."""
        entry = self.get(name)
        self.sweep()
        trash = temp_path(self.root, entry.name, ".deleting", create=False)
        try:
            rename_noreplace(entry.path, trash)
        except OSError as e:
            raise GalleryError(f"delete {entry.name}: {e.strerror or e}") from None
        errors: list = []
        shutil.rmtree(trash, onerror=lambda *args: errors.append(args[2]))
        if errors:
            raise GalleryError(f"delete {entry.name}: removed from the gallery, but {trash} could not be "
                               f"deleted ({errors[0][1]}); remove it by hand")


def check_adapter_files(folder: Path, base_path: str | Path | None = None) -> None:
    """An adapter's weights must be a complete safetensors file and, when its base model folder is
    known, fit that base layer by layer (safeload.py: headers only, no tensors read)."""
    check_safetensors(Path(folder) / "adapter_model.safetensors", GalleryError)
    if base_path is not None:
        reason = adapter_base_mismatch(Path(folder), Path(base_path))
        if reason:
            raise GalleryError(f"{folder}: {reason}")


def same_base(a: Entry, b: Entry) -> bool:
    """Two entries fit the same model: same task, and the same base (by fingerprint when both
    have one, else by source name)."""
    if a.task != b.task:
        return False
    if a.base_fingerprint and b.base_fingerprint:
        return a.base_fingerprint == b.base_fingerprint
    return a.base_model == b.base_model


def _local_fingerprint(source: str) -> tuple[str, str] | None:
    """(folder, fingerprint) of a base model that is already on this machine, else None."""
    try:
        from .models import fingerprint, gguf_cache_folder, locate_source

        kind, where = locate_source(source)
        if kind == "hub":
            return None
        path = Path(where)
        if path.suffix.lower() == ".gguf":
            path = gguf_cache_folder(path)
            if not (path / "config.json").is_file():
                return None
        return str(path), fingerprint(path)
    except Exception:  # an unknown source is fine for an import: it is checked again on export
        return None
