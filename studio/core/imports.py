"""The heavy libraries imported once, on one thread, before a job needs them.

Two threads that import torch / transformers / datasets at the same time can see each other's
half-imported modules. The case seen in the window: the data check (datasets) hashes its reader's
arguments, and datasets' hasher asks `transformers.PreTrainedTokenizerBase` as soon as "transformers"
is in sys.modules, which happens at the start of the run thread's import of transformers, seconds
before that import ends: "module 'transformers' has no attribute 'PreTrainedTokenizerBase'" became a
data error. Python's per-module import locks do not cover a module that is already in sys.modules.

    heavy_imports()            # every worker thread, before its job: imports once, others wait
    is_import_race(error)      # an error that came from such a half-imported module (retry it)
"""

from __future__ import annotations

import re
import sys
import threading

_LOCK = threading.Lock()
_done = False

# the libraries and the lazily loaded names the studio and datasets reach for from several threads
_MODULES = ("torch", "transformers", "datasets", "peft", "accelerate", "safetensors.torch")
_NAMES = ("PreTrainedTokenizerBase", "PreTrainedModel", "AutoTokenizer", "AutoConfig", "AutoModelForCausalLM",
          "AutoModelForSequenceClassification", "Trainer", "TrainingArguments", "TrainerCallback")
_RACE = re.compile(r"partially initialized module|module '(?:torch|transformers|datasets|peft|accelerate)"
                   r"[\w.]*' has no attribute|cannot import name '\w+' from partially")


def heavy_imports() -> None:
    """Import the heavy libraries fully, once per process; a second thread waits for the first."""
    global _done
    if _done:
        return
    with _LOCK:
        if _done:
            return
        import importlib

        for name in _MODULES:
            importlib.import_module(name)
        transformers = sys.modules["transformers"]
        for name in _NAMES:
            getattr(transformers, name)
        _done = True


def is_import_race(error: BaseException) -> bool:
    """True when `error`, or what it was raised from, came from a half-imported heavy library."""
    from .errors import cause_chain

    return any(_RACE.search(str(e)) for e in cause_chain(error))
