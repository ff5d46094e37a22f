"""Test-side driver: `lora-studio` commands in real processes that SIGKILL themselves at an exact
moment (test code only; nothing here is part of the studio).

    python tests/core/kill_driver.py --kill 'SPEC' -- ARGV...
        run `studio.cli.main(ARGV)` in this process with the kill hook SPEC installed.
    python tests/core/kill_driver.py --serve
        a fork server: torch, transformers and peft are imported once, here; then every job
        (one JSON object per line on stdin) runs in a fresh child process forked from this one,
        and its outcome is answered as one JSON line on stdout:
          {"argv": [...], "env": {...}, "kill": SPEC or null, "log": "PATH"}
          -> {"pid": N, "signal": 9 or null, "code": exit status or null}
        The child's stdout and stderr go to `log`. The children are ordinary processes that die
        by a real SIGKILL: no finally block, no atexit, no flush runs in them.

SPEC (JSON): {"target": "module:Attr.path", "when": "before" | "after" | "torn", "nth": 1,
              "match": {...}, "text": "..."}
    target   the callable to wrap (a module function, or a class attribute: "pkg.mod:Class.method")
    when     before: killed as the nth matching call starts; after: as it returns;
             torn (EventLog.write only): half of the event's JSON line is appended to the log,
             ending inside a multi-byte character, then killed
    nth      which matching call (1 = the first)
    match    a call matches when one of its arguments is a dict holding these items
    text     ... and when this text is in the repr of its arguments
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _resolve(target: str):
    import importlib

    module_name, _, attr_path = target.partition(":")
    owner = importlib.import_module(module_name)
    parts = attr_path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    return owner, parts[-1]


def _matches(spec: dict, args, kwargs) -> bool:
    match = spec.get("match")
    if match:
        dicts = [a for a in list(args) + list(kwargs.values()) if isinstance(a, dict)]
        if not any(all(d.get(k) == v for k, v in match.items()) for d in dicts):
            return False
    text = spec.get("text")
    if text and text not in repr(args) + repr(kwargs):
        return False
    return True


def install(spec: dict | None) -> None:
    if not spec:
        return
    owner, name = _resolve(spec["target"])
    import inspect

    original = inspect.getattr_static(owner, name) if isinstance(owner, type) else getattr(owner, name)
    if isinstance(original, (staticmethod, classmethod)):
        raise SystemExit(f"kill_driver: {spec['target']} is a static/class method; wrap a plain function")
    when, nth = spec.get("when", "before"), int(spec.get("nth", 1))
    calls = {"n": 0}

    def hooked(*args, **kwargs):
        if _matches(spec, args, kwargs):
            calls["n"] += 1
            if calls["n"] == nth:
                if when == "before":
                    _die()
                if when == "torn":
                    log, event = args[0], args[1]
                    line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
                    with open(log.path, "ab") as f:   # half a line, ending inside a 2-byte character
                        f.write(line[: len(line) // 2] + "é".encode("utf-8")[:1])
                    _die()
                result = original(*args, **kwargs)
                _die()
                return result
        return original(*args, **kwargs)

    setattr(owner, name, hooked)


def run(argv: list[str], spec: dict | None) -> int:
    install(spec)
    from studio.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    return int(code or 0)


def _child(job: dict) -> None:
    code = 98
    try:
        os.environ.update({k: str(v) for k, v in (job.get("env") or {}).items()})
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        code = run([str(a) for a in job["argv"]], job.get("kill"))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 97
    except BaseException:
        traceback.print_exc()
        code = 99
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> int:
    # everything heavy once, before any fork (nothing computes here, so no thread pool exists yet)
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer  # noqa: F401

    import studio.cli  # noqa: F401
    import studio.core.export  # noqa: F401
    import studio.core.training  # noqa: F401

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(job)
        _, status = os.waitpid(pid, 0)
        reply = {"pid": pid,
                 "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                 "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
        print(json.dumps(reply), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve()
    if argv[:1] == ["--kill"] and "--" in argv:
        split = argv.index("--")
        return run(argv[split + 1:], json.loads(argv[1]) if argv[1] not in ("", "null") else None)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
