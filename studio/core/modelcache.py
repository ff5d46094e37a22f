"""The models a person already has: the local Hugging Face cache and folders they added.

    list_models()                       every model found, as plain dicts (sorted by name)
    scan_models()                       the same and the one-line notes on what was skipped
    filter_models(models, "llama 1b")   those whose name, source, kind, revision or type match
    added_folders() / add_folder(path) / remove_folder(path)   the folders the person added

Each entry (a dict, the same in the window, `lora-studio models --json` and here):

    name           "HuggingFaceTB/SmolLM2-135M" (a cached repo), a folder's or a file's name
    kind           "hub-cache", "folder" or "gguf"
    source         what to put into `model.source` to train on it (see below)
    size_bytes     on disk (a cached revision's files; a folder's own files; the .gguf file)
    revision       short commit hash of a cached revision ("" elsewhere)
    commit, refs   the full commit hash and the refs naming it (["main"]) — cached models only
    hub_id         the repo id of a cached model (None elsewhere)
    path           the folder or file itself
    modified       last modification time (seconds since the epoch) or None
    model_type, architecture   from config.json when it is small and readable (else None)
    where          the cache folder or the added folder it was found in
    note           why it may not train as it is ("" when nothing is known against it)

Which `source` a cached hub model gets: its snapshot folder
(`.../hub/models--org--name/snapshots/<commit>`), not the hub id. `resolve_source` treats a hub id
as something to download: `snapshot_download` asks the hub for the newest commit first, so online
it may fetch a newer revision (gigabytes) than the one listed, and with the network down but
HF_HUB_OFFLINE unset it waits for the connection to fail before it falls back to the cache; a
revision that no ref names (downloaded by commit or tag) is not found offline at all. The
snapshot folder is a plain local model folder (config.json, symlinks to the blobs): it trains
offline at once, exactly the revision shown, and is described in the window without a download.
The hub id stays in the entry (`hub_id`) for a config meant for another machine.

Nothing here raises on a corrupt cache or an unreadable folder: that part is skipped with a one-line
note. huggingface_hub is imported only when the cache is scanned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ModelError, first_line
from .paths import studio_home, write_text_atomic

FOLDERS_FILE = "model_folders.json"
CONFIG_READ_LIMIT = 1_000_000    # a config.json larger than this is not read for its model type
MAX_SUBFOLDERS = 2000            # an added folder with more entries is scanned this far only
KINDS = ("hub-cache", "folder", "gguf")


# -- where the hub cache is ----------------------------------------------------------------------

def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at
    import): HF_HUB_CACHE, the legacy HUGGINGFACE_HUB_CACHE, HF_HOME/hub, or
    $XDG_CACHE_HOME/huggingface/hub (~/.cache/huggingface/hub)."""
    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return expand(os.environ[name])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return expand(home) / "hub"


# -- the added folders ---------------------------------------------------------------------------

def _folders_file() -> Path:
    return studio_home() / FOLDERS_FILE


def added_folders() -> list[str]:
    """The folders the person added (absolute paths, in the order added). A missing or damaged
    list reads as empty."""
    try:
        data = json.loads(_folders_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    folders = data.get("folders") if isinstance(data, dict) else None
    if not isinstance(folders, list):
        return []
    return [f for f in dict.fromkeys(folders) if isinstance(f, str) and f]


def _save_folders(folders: list[str]) -> None:
    write_text_atomic(_folders_file(), json.dumps({"folders": folders}, indent=1) + "\n",
                      hint="free some space, then add the folder again")


def _normalise(path) -> str:
    return str(Path(os.path.expanduser(str(path))).absolute())


def add_folder(path) -> str:
    """Remember a folder to look for models in; returns it as stored (absolute). Raises ModelError
    (one line) when it is not an existing folder. Adding it twice keeps one."""
    if not str(path).strip():
        raise ModelError("expected a folder to add, got ''")
    folder = _normalise(path)
    if not Path(folder).exists():
        raise ModelError(f"{folder}: no such folder")
    if not Path(folder).is_dir():
        raise ModelError(f"{folder}: not a folder (add the folder that holds it)")
    folders = added_folders()
    if folder not in folders:
        _save_folders(folders + [folder])
    return folder


def remove_folder(path) -> str:
    """Forget an added folder (which may no longer exist); returns it as it was stored. Raises
    ModelError when it was not added."""
    folders = added_folders()
    wanted = _normalise(path)
    match = next((f for f in folders if f == wanted or f == str(path)), None)
    if match is None:
        listed = ", ".join(folders) if folders else "none"
        raise ModelError(f"{wanted}: not an added folder (added: {listed})")
    _save_folders([f for f in folders if f != match])
    return match


# -- scanning ------------------------------------------------------------------------------------

def _config_facts(config: Path) -> tuple[str | None, str | None]:
    """(model_type, first architecture) from a config.json, or Nones when it is large or unreadable."""
    try:
        if config.stat().st_size > CONFIG_READ_LIMIT:
            return None, None
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    model_type = data.get("model_type") if isinstance(data.get("model_type"), str) else None
    archs = data.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    return model_type, arch


def _weights_note(folder: Path) -> str:
    """Why a model folder would not train as it is, from its file names alone ("" if nothing)."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return "unreadable folder"
    if any(n.endswith(".safetensors") for n in names):
        return ""
    if any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in names):
        return "pickled weights only (LoRA Studio reads .safetensors)"
    return "no weight files"


def _entry(name: str, kind: str, source: str, path: Path, size: int | None, where: Path, **extra) -> dict:
    entry = {"name": name, "kind": kind, "source": source, "size_bytes": size, "revision": "",
             "commit": None, "refs": [], "hub_id": None, "path": str(path), "modified": None,
             "model_type": None, "architecture": None, "where": str(where), "note": ""}
    entry.update(extra)
    return entry


def _scan_hub(cache_dir: Path, notes: list[str]) -> list[dict]:
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        notes.append("the Hugging Face cache was not read: huggingface_hub is not installed")
        return []
    if not cache_dir.exists():
        notes.append(f"no Hugging Face cache at {cache_dir}")
        return []
    try:
        info = scan_cache_dir(cache_dir)
    except Exception as e:   # unreadable, a file instead of a folder, a library change: never a traceback
        notes.append(f"the Hugging Face cache at {cache_dir} could not be read ({_one_line(e)})")
        return []
    for warning in info.warnings:
        notes.append(f"skipped in the Hugging Face cache: {_one_line(warning)}")
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        try:
            # the revisions a ref names (main) first, then the newest
            revisions = sorted(repo.revisions, key=lambda r: (not r.refs, -(r.last_modified or 0)))
            for rev in revisions:
                snapshot = Path(rev.snapshot_path)
                config = snapshot / "config.json"
                if not config.is_file():
                    ggufs = sorted((f for f in rev.files if f.file_name.lower().endswith(".gguf")),
                                   key=lambda f: str(f.file_path))
                    for f in ggufs:   # a GGUF-only repo: each file is a source of its own
                        found.append(_entry(f"{repo.repo_id}/{f.file_name}", "gguf", str(f.file_path),
                                            Path(f.file_path), f.size_on_disk, cache_dir,
                                            revision=rev.commit_hash[:8], commit=rev.commit_hash,
                                            refs=sorted(rev.refs), hub_id=repo.repo_id,
                                            modified=f.blob_last_modified))
                    continue
                model_type, arch = _config_facts(config)
                # the snapshot folder, not the hub id: see the module's docstring
                found.append(_entry(repo.repo_id, "hub-cache", str(snapshot), snapshot, rev.size_on_disk,
                                    cache_dir, revision=rev.commit_hash[:8], commit=rev.commit_hash,
                                    refs=sorted(rev.refs), hub_id=repo.repo_id, modified=rev.last_modified,
                                    model_type=model_type, architecture=arch, note=_weights_note(snapshot)))
        except Exception as e:   # one odd repo must not hide the others
            notes.append(f"skipped in the Hugging Face cache: {repo.repo_id} ({_one_line(e)})")
    return found


def _folder_size(folder: Path) -> int | None:
    """The size of a model folder's own files (not its subfolders: checkpoints, caches)."""
    total = 0
    try:
        for p in folder.iterdir():
            try:
                if p.is_file():
                    total += p.stat().st_size
            except OSError:
                continue
    except OSError:
        return None
    return total


def _model_folder_entry(folder: Path, where: Path) -> dict:
    model_type, arch = _config_facts(folder / "config.json")
    try:
        modified = (folder / "config.json").stat().st_mtime
    except OSError:
        modified = None
    return _entry(folder.name, "folder", str(folder), folder, _folder_size(folder), where, modified=modified,
                  model_type=model_type, architecture=arch, note=_weights_note(folder))


def _gguf_entry(file: Path, where: Path) -> dict:
    try:
        st = file.stat()
        size, modified = st.st_size, st.st_mtime
    except OSError:
        size = modified = None
    return _entry(file.name, "gguf", str(file), file, size, where, modified=modified)


def _is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and path.is_file()


def _scan_folder(folder: Path, notes: list[str]) -> list[dict]:
    """The folder itself if it is a model folder; its direct subfolders that are; the .gguf files
    in it and in those subfolders."""
    if not folder.exists():
        notes.append(f"added folder {folder} no longer exists (lora-studio models --remove-folder forgets it)")
        return []
    if not folder.is_dir():
        notes.append(f"added folder {folder} is not a folder")
        return []
    found = []
    try:
        if (folder / "config.json").is_file():
            found.append(_model_folder_entry(folder, folder))
        children = sorted(p for _, p in zip(range(MAX_SUBFOLDERS), folder.iterdir())
                          if not p.name.startswith("."))
    except OSError as e:
        notes.append(f"added folder {folder} could not be read ({_one_line(e)})")
        return found
    for child in children:
        try:
            if _is_gguf(child):
                found.append(_gguf_entry(child, folder))
            elif child.is_dir():
                if (child / "config.json").is_file():
                    found.append(_model_folder_entry(child, folder))
                found.extend(_gguf_entry(f, folder) for f in sorted(child.iterdir()) if _is_gguf(f))
        except OSError as e:
            notes.append(f"skipped {child} ({_one_line(e)})")
    return found


def scan_models(extra_folders=None, cache_dir=None, hub: bool = True) -> tuple[list[dict], list[str]]:
    """(models, notes): the model repos in the Hugging Face cache (`cache_dir`, default
    hub_cache_dir()) and the models in `extra_folders` (default: the added folders), sorted by
    name; notes are one line each about what was skipped. Never raises for what it reads."""
    notes: list[str] = []
    models: list[dict] = []
    if hub:
        models.extend(_scan_hub(Path(cache_dir) if cache_dir is not None else hub_cache_dir(), notes))
    folders = added_folders() if extra_folders is None else [str(f) for f in extra_folders]
    seen: set[str] = {m["source"] for m in models}
    for folder in dict.fromkeys(folders):
        for entry in _scan_folder(Path(folder), notes):
            if entry["source"] not in seen:   # a folder inside another added folder: listed once
                seen.add(entry["source"])
                models.append(entry)
    models.sort(key=lambda m: (m["name"].lower(), KINDS.index(m["kind"]), m["source"]))
    return models, notes


def list_models(extra_folders=None, cache_dir=None) -> list[dict]:
    """The models found (see scan_models, which also says what was skipped)."""
    return scan_models(extra_folders, cache_dir)[0]


def matches(entry: dict, text: str) -> bool:
    """Whether every word of `text` occurs (ignoring case) in the entry's name, source, kind,
    revision, refs, model type or architecture."""
    words = text.lower().split()
    if not words:
        return True
    haystack = " ".join(str(v) for v in (entry.get("name"), entry.get("source"), entry.get("kind"),
                                         entry.get("revision"), " ".join(entry.get("refs") or []),
                                         entry.get("model_type"), entry.get("architecture"))
                        if v).lower()
    return all(w in haystack for w in words)


def filter_models(models: list[dict], text: str | None) -> list[dict]:
    return [m for m in models if matches(m, text or "")]


# -- display helpers -----------------------------------------------------------------------------

def human_size(n: int | float | None) -> str:
    """Bytes in the units a file manager shows (1000-based, 3 significant digits)."""
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def revision_text(entry: dict) -> str:
    """"a1b2c3d4 (main)" for a cached model, "" elsewhere."""
    revision = entry.get("revision") or ""
    refs = entry.get("refs") or []
    return f"{revision} ({', '.join(refs)})" if revision and refs else revision


_one_line = first_line   # the message alone (these errors say what they are)
