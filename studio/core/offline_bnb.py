"""bitsandbytes without the hub.

When its CPU backend is imported, bitsandbytes 0.50 asks the `kernels` package for a 4-bit
kernel from the Hugging Face hub ("kernels-community/quantization-bitsandbytes"), and logs a
warning when that fails; online it would download and run code from the hub. Nothing may be
fetched, and no hub or trust message may reach the person: while bitsandbytes or one of its
modules is being imported (the CPU backend is imported lazily), `kernels` reads as absent (bitsandbytes then uses its own compiled CPU kernels, the
fallback it is written to take), and its backend's logger is quiet. Afterwards `kernels` is
importable as before (transformers checks it).

peft imports bitsandbytes as soon as it is installed, so the guard must be in place before
anything imports peft: `install()` runs when studio.core is imported. It imports nothing heavy;
it only watches for the name. Written by hand: neither bitsandbytes nor kernels has a switch
for this (HF_HUB_OFFLINE still prints the trust and fallback messages).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys

_QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops", "bitsandbytes.backends.cpu", "bitsandbytes.cextension",
                  "kernels")


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):   # get_resource_reader, is_package, ...: the real loader's
        return getattr(self.inner, name)

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        had = "kernels" in sys.modules
        saved = sys.modules.get("kernels")
        sys.modules["kernels"] = None          # `from kernels import get_kernel` raises ImportError
        levels = {}
        for name in _QUIET_LOGGERS:
            logger = logging.getLogger(name)
            levels[name] = logger.level
            logger.setLevel(logging.ERROR)
        try:
            self.inner.exec_module(module)
        finally:
            if had:
                sys.modules["kernels"] = saved
            else:
                sys.modules.pop("kernels", None)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "bitsandbytes" and not fullname.startswith("bitsandbytes."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    if any(isinstance(f, _Finder) for f in sys.meta_path) or "bitsandbytes" in sys.modules:
        return
    sys.meta_path.insert(0, _Finder())
