"""Where the studio keeps its own files (gallery, model cache), and crash-safe writes.

`LORA_STUDIO_HOME` overrides everything (tests, portable installs); otherwise the XDG data
directory on Linux (the same place QStandardPaths.AppDataLocation names), ~/Library/Application
Support on macOS and %APPDATA% on Windows. Qt is not imported here: the engine has no Qt.

Crash safety. Folders (adapters, gallery entries, exports) are written into a hidden temporary
sibling `.NAME.PID.XXXXXXXX.partial` and made visible by one rename (atomic_dir): a process
killed at any point leaves either the old folder or the new one, never half of one. Replacing
an existing folder swaps the two in one step where the OS can (Linux renameat2 RENAME_EXCHANGE).
What a killed writer leaves behind is hidden (a dot name) and swept later (sweep_stale) — only
once the process that made it is gone, so a write under way in another process is never touched.

A full disk is reported as DiskFullError: one sentence naming what was being written, and the
temporary files of the failed write are removed, so nothing that was saved before is lost.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import StudioError, cause_chain

# temporary names: .NAME.PID.RANDOM.partial (tempfile's random part has no dots)
_SUFFIX = r"(?P<suffix>\.partial|\.new|\.deleting|\.old|\.tmp)"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<rand>[a-z0-9_]+)" + _SUFFIX + "$")
LIVE_PID_AGE_S = 86400.0     # ... and one whose pid lives (perhaps reused) when this old
LOW_SPACE_BYTES = 1 << 20    # below this, a write error that names no cause is taken as a full disk
# how torch.save reports a write the disk refused (its stream loses the errno)
_WRITE_TEXT = ("inline_container", "pytorchstreamwriter", "iostream", "write")
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "storagefull",
              "not enough space on the disk")


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


# -- a full disk ---------------------------------------------------------------------------------

class DiskFullError(StudioError, OSError):
    """No space left while writing `path`; nothing saved before is lost. Exit code 1 (not bad
    input). Also an OSError (ENOSPC), for callers that handle file-system errors as such."""

    exit_code = 1

    def __init__(self, path, hint: str = "free some space and try again"):
        self.path = Path(path)
        self.hint = hint
        self.message = f"no space left on device while writing {path}: {hint}"
        super().__init__(self.message)
        self.errno, self.strerror, self.filename = errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (DiskFullError, (str(self.path), self.hint))

    def with_hint(self, hint: str, path=None) -> "DiskFullError":
        return DiskFullError(self.path if path is None else path, hint)


def _chain(exc: BaseException) -> list[BaseException]:
    # `raise ... from None` says the context is not the cause: do not look through it
    return cause_chain(exc, suppressed=False)


def free_bytes(path) -> int | None:
    """Bytes free to this user on the filesystem holding `path` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free


def is_disk_full(exc: BaseException, where=None) -> bool:
    """Whether `exc` (or what caused it) is a full disk: ENOSPC/EDQUOT, a library's message saying
    so (safetensors), or — for libraries that lose the cause (torch.save says only "unexpected
    pos") — a write error while the filesystem of `where` has (almost) nothing left."""
    for e in _chain(exc):
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        text = str(e).lower()
        if any(t in text for t in _FULL_TEXT):
            return True
    text = str(exc).lower()
    if isinstance(exc, OSError):   # one that names another cause (EEXIST, EACCES, ...) is that
        looks_like_io = exc.errno in (None, errno.EIO)
    else:
        looks_like_io = type(exc).__name__ == "SafetensorError" or (
            isinstance(exc, RuntimeError) and any(t in text for t in _WRITE_TEXT))
    if where is not None and looks_like_io:
        free = free_bytes(where)
        return free is not None and free < LOW_SPACE_BYTES
    return False


def disk_full_error(exc: BaseException, path, hint: str | None = None, where=None) -> DiskFullError | None:
    """A DiskFullError for `path` if `exc` is a full disk (checked on `where`, default `path`), else None."""
    if isinstance(exc, DiskFullError):
        return exc if hint is None else exc.with_hint(hint)
    if not isinstance(exc, Exception) or not is_disk_full(exc, path if where is None else where):
        return None
    return DiskFullError(path, hint) if hint else DiskFullError(path)


# -- temporary names and the sweep -----------------------------------------------------------------

def temp_path(parent: Path, name: str, suffix: str, folder: bool = True, create: bool = True) -> Path:
    """A new hidden temporary folder (or empty file) `.NAME.PID.XXXXXXXX{suffix}` in `parent`;
    with create=False only a free name for one (a rename target)."""
    prefix = f".{name}.{os.getpid()}."
    if not create:
        chars = "abcdefghijklmnopqrstuvwxyz0123456789_"
        for _ in range(100):
            path = Path(parent) / f"{prefix}{''.join(secrets.choice(chars) for _ in range(8))}{suffix}"
            if not os.path.lexists(path):
                return path
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))
    if folder:
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        path.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        return path
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    return Path(tmp)


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform.startswith("win"):   # os.kill(pid, 0) would terminate it there; trust age instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # EPERM: it exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def sweep_stale(parent, name: str | None = None, *, everything: bool = False) -> list[Path]:
    """Remove what killed writers left in `parent`: temporary folders and files named by
    temp_path (or the older pid-less names) whose process is gone — or any age, with
    `everything`, for a folder the caller holds exclusively (a run folder under its lock).
    A `.NAME.PID.X.old` (the old copy set aside by a replace killed halfway) is put back when
    NAME is missing. Only `name`'s leftovers when given. Returns what was removed or restored."""
    parent = Path(parent)
    done: list[Path] = []
    try:
        children = [p for p in parent.iterdir() if p.name.startswith(".")]
    except OSError:
        return done
    now = time.time()
    for path in children:
        m = _TEMP.match(path.name)
        if not m:
            continue
        target = m.group("name")
        if name is not None and target != name:
            continue
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue
        if not everything and pid_alive(int(m.group("pid"))) and age < LIVE_PID_AGE_S:
            continue
        suffix = m.group("suffix")
        if suffix == ".old" and path.is_dir() and not (parent / target).exists():
            try:
                os.rename(path, parent / target)   # the replace died between its two renames
                done.append(path)
                continue
            except OSError:
                pass
        _remove(path)
        done.append(path)
    return done


# -- renames -------------------------------------------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100
_renameat2 = None


def _renameat2_fn():
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
            except (OSError, AttributeError):
                pass
    return _renameat2


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2 with `flags`; False when this OS or filesystem cannot (the caller falls back)."""
    fn = _renameat2_fn()
    if not fn:
        return False
    import ctypes

    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def rename_noreplace(src, dst) -> None:
    """Rename `src` to `dst`, raising FileExistsError if `dst` exists (atomically where the OS can:
    plain rename() would silently replace an empty folder that appeared meanwhile)."""
    src, dst = Path(src), Path(dst)
    if not _rename2(src, dst, _RENAME_NOREPLACE):
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)


def _commit(tmp: Path, final: Path, replace: bool) -> None:
    """Make the complete folder `tmp` visible as `final`: the one step that publishes a write."""
    if not replace or not os.path.lexists(final):
        try:
            rename_noreplace(tmp, final)
            return
        except FileExistsError:
            if not replace:
                raise
    if _rename2(tmp, final, _RENAME_EXCHANGE):  # one atomic swap; `tmp` now holds the old folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # elsewhere: set the old one aside under a name the sweep restores if we die right here
    old = temp_path(final.parent, final.name, ".old", create=False)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)   # put the old one back in view: the write failed, nothing changed
        raise
    shutil.rmtree(old, ignore_errors=True)


def fsync_file(path: Path) -> None:
    """Flush a written file to disk. Windows refuses FlushFileBuffers on a read-only handle."""
    fd = os.open(path, os.O_RDWR if sys.platform.startswith("win") else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if sys.platform.startswith("win"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str, hint: str | None = None) -> None:
    """Write a file through a temporary sibling and rename it into place. A full disk raises
    DiskFullError (`hint`: what to do about it) and leaves the old file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = disk_full_error(e, path, hint, where=tmp)
        Path(tmp).unlink(missing_ok=True)
        if full is not None:
            raise full from e
        raise


@contextmanager
def atomic_dir(final: Path, durable: bool = True, replace: bool = True, hint: str | None = None):
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename,
    on failure it is removed and `final` is left as it was. `durable` also fsyncs every file
    before the rename (power-loss safety); without it the rename is still all-or-nothing for
    the application and the person. `replace=False` raises FileExistsError instead of replacing
    a `final` that exists by the time of the rename. A full disk raises DiskFullError naming
    `final` (with `hint`, what to do about it). A process killed inside leaves only a hidden
    temporary folder, which the next atomic_dir for the same `final` sweeps away."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final.parent, final.name)
    tmp = temp_path(final.parent, final.name, ".partial")
    try:
        yield tmp
        if durable:   # on disk before the rename makes them visible
            for f in tmp.rglob("*"):
                if f.is_file():
                    fsync_file(f)
        _commit(tmp, final, replace)
    except BaseException as e:
        full = disk_full_error(e, final, hint, where=tmp)   # judged before the partial files go
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from e
        raise
    if durable:
        _fsync_dir(final.parent)
