"""How the studio starts its own child processes (a run, the engine job process): the command
that runs one of its modules as a program, and the environment that makes the child import the
same `studio` as the parent.

Installed or in a checkout, the command is this Python with `-m module`. In the frozen program
(PyInstaller, packaging/lora_studio_app.py) there is no `-m`: the program itself is started with
`--studio-child module`, and runs that module as __main__.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FLAG = "--studio-child"


def command(module: str) -> list[str]:
    """argv that runs `module` (e.g. "studio.core.runchild") as a program."""
    if getattr(sys, "frozen", False):
        return [sys.executable, FLAG, module]
    return [sys.executable, "-m", module]


def environment() -> dict[str, str]:
    """This environment, with the folder holding this `studio` package first on PYTHONPATH, so the
    child runs the same code as the parent (a checkout, a copy). Not when that folder is a
    site-packages folder (an installed studio): the child finds it there, and site-packages ahead
    of the standard library could shadow it."""
    import site

    env = dict(os.environ)
    root = Path(__file__).resolve().parent.parent.parent
    sites = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in sites:
        env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `-m` would put the current folder first on the child's sys.path, ahead of the studio and
    # the standard library (a stray json.py or studio/ there would be imported); not with this
    env["PYTHONSAFEPATH"] = "1"
    return env


def run_frozen_child(argv: list[str]) -> bool:
    """In the frozen program: if argv asks for a child module, run it and return True."""
    if len(argv) >= 3 and argv[1] == FLAG:
        import runpy

        sys.argv = [argv[2], *argv[3:]]
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        return True
    return False
