"""Where the studio keeps its own files (gallery, model cache), and atomic writes.

`LORA_STUDIO_HOME` overrides everything (tests, portable installs); otherwise the XDG data
directory on Linux (the same place QStandardPaths.AppDataLocation names), ~/Library/Application
Support on macOS and %APPDATA% on Windows. Qt is not imported here: the engine has no Qt.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path


def studio_home() -> Path:
    override = os.environ.get("LORA_STUDIO_HOME")
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "lora-studio"
    if sys.platform.startswith("win"):
        return Path(os.environ.get("APPDATA", Path.home())) / "lora-studio"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "lora-studio"


def cache_dir(*parts: str) -> Path:
    path = studio_home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(final: Path, durable: bool = True, replace: bool = True):
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename,
    on failure it is removed and `final` is left as it was. `durable` also fsyncs every file
    before the rename (power-loss safety); without it the rename is still all-or-nothing for
    the application and the person. `replace=False` raises FileExistsError instead of replacing
    a `final` that exists by the time of the rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        for f in tmp.rglob("*") if durable else ():  # on disk before the rename makes them visible
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not replace:
        # never over something that appeared meanwhile (another process adding the same name):
        # rename() onto an existing non-empty folder fails instead of replacing it
        try:
            if final.exists():
                raise FileExistsError(17, "exists", str(final))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
