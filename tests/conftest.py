"""Shared fixtures: offline, a private studio home, tiny random models, an event recorder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# first, as the CLI and the window do: it keeps bitsandbytes (which peft imports) off the hub
import studio.core  # noqa: E402,F401
from tiny_models import make_tiny_bert, make_tiny_llama  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "resources" / "datasets"


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory) -> Path:
    """One studio home for the whole session, so the SmolLM2 GGUF is converted only once."""
    home = tmp_path_factory.mktemp("studio-home")
    os.environ["LORA_STUDIO_HOME"] = str(home)
    return home


@pytest.fixture(autouse=True)
def _home(studio_home, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_HOME", str(studio_home))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), num_labels=3)


class Recorder:
    """A sink that keeps every event."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
