"""The engine job process (studio.core.jobserver) through its client (studio.core.engineclient):
the window's torch jobs run there and come back as the in-process functions give them, with the
same errors, cancellation, a death reported as one sentence, and no process left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import DATASETS, ROOT
from studio.core import export
from studio.core.config import DataSection, RunConfig
from studio.core.engineclient import EngineClient, EngineDied, rebuild_error
from studio.core.errors import Cancelled, DataError, ModelError, StudioError
from studio.core.gallery import Gallery, GalleryError
from studio.core.inspect import preview_dataset
from studio.core.paths import DiskFullError
from studio.core.playground import Playground
from studio.core.training import Session

TEXTS = ["The capital of France is Paris.", "Convert 3 kilometres to metres, please!"]
CHAT = str(DATASETS / "chat_sample.jsonl")


def _gone(pid: int, within: float) -> bool:
    """The process has ended (or is a zombie nobody reaped) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return True
        if "\nState:\tZ" in state:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def adapter(tiny_llama, tmp_path_factory, studio_home):
    """A LoRA adapter on the tiny Llama, trained by a real Session into the gallery: its entry name."""
    os.environ["LORA_STUDIO_HOME"] = str(studio_home)
    raw = {"model": {"source": tiny_llama},
           "data": {"path": CHAT, "eval_fraction": 0.0, "max_seq_len": 64},
           "variant": {"name": "lora", "r": 4, "alpha": 8},
           "train": {"output_dir": str(tmp_path_factory.mktemp("engine-runs")), "max_steps": 2, "batch_size": 4,
                     "learning_rate": 5e-3, "save_every": 0, "eval_every": 0, "device": "cpu", "precision": "fp32"}}
    session = Session(RunConfig.from_dict(raw, "test"))
    result = session.run()
    assert result.status == "completed", result.error
    return session.gallery_entry


@pytest.fixture(scope="module")
def client(studio_home):
    os.environ["LORA_STUDIO_HOME"] = str(studio_home)
    engine = EngineClient()
    assert engine.start(wait=True, timeout=120)
    yield engine
    pid = engine.pid
    engine.close()
    assert pid is None or _gone(pid, 5)


def test_the_preview_is_the_in_process_preview(client, tiny_llama):
    section = DataSection(path=CHAT, max_seq_len=48)
    seen = []
    got = client.call("preview_dataset", {"data": dataclasses.asdict(section), "model_source": tiny_llama,
                                          "task": "causal-lm", "rows": 3},
                      progress=lambda message, fraction: seen.append(message))
    expected = preview_dataset(section, tiny_llama, "causal-lm", rows=3)
    assert got == json.loads(json.dumps(expected))   # the same, its (text, trained) pairs as lists
    assert got["examples"] and "".join(t for t, _ in got["examples"][0]["segments"]) == got["examples"][0]["text"]
    assert "reading chat_sample.jsonl" in seen


def test_errors_keep_their_class_message_and_field(client, tiny_llama, tmp_path):
    missing = DataSection(path=str(tmp_path / "nothing.jsonl"))
    with pytest.raises(DataError) as in_process:
        preview_dataset(missing, tiny_llama, "causal-lm")
    with pytest.raises(DataError) as through:
        client.call("preview_dataset", {"data": dataclasses.asdict(missing), "model_source": tiny_llama,
                                        "task": "causal-lm"})
    assert type(through.value) is DataError and str(through.value) == str(in_process.value)
    assert through.value.field == in_process.value.field

    (tmp_path / "bad-model").mkdir()
    (tmp_path / "bad-model" / "config.json").write_text("{not json")
    with pytest.raises(ModelError) as bad:
        client.call("preview_dataset", {"data": {"path": CHAT}, "model_source": str(tmp_path / "bad-model"),
                                        "task": "causal-lm"})
    assert type(bad.value) is ModelError and bad.value.field == "model.source"
    assert str(bad.value).startswith("model.source: ")

    with pytest.raises(GalleryError, match="no adapter named"):
        client.call("energy_curve", {"entry": "not there", "gallery": str(Gallery().root)})
    with pytest.raises(StudioError, match="TypeError: .*unexpected keyword"):
        client.call("energy_curve", {"entry": "x", "colour": "red"})


def test_errors_are_rebuilt_as_their_own_classes():
    made = rebuild_error({"message": "data.path: no such file", "class": "DataError", "field": "data.path"})
    assert type(made) is DataError and made.field == "data.path" and made.reason == "no such file"
    full = DiskFullError("/x/y", "free some space")
    made = rebuild_error({"message": str(full), "class": "DiskFullError", "field": None, "path": "/x/y",
                          "hint": "free some space"})
    assert type(made) is DiskFullError and str(made) == str(full) and isinstance(made, OSError)
    made = rebuild_error({"message": "RuntimeError: boom", "class": "RuntimeError", "field": None})
    assert type(made) is StudioError and str(made) == "RuntimeError: boom"


def test_export_adapter_matches_the_in_process_export(client, adapter, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gallery = Gallery()
    fractions = []
    out = client.call("export_adapter", {"entry": adapter, "gallery": str(gallery.root),
                                         "out_dir": str(tmp_path / "through")},
                      progress=lambda message, fraction: fractions.append(fraction))
    assert out == str((tmp_path / "through").resolve()) and fractions[-1] == 1.0
    here = export.export_adapter(gallery.get(adapter), tmp_path / "here", gallery=gallery)
    assert sorted(p.name for p in Path(out).iterdir()) == sorted(p.name for p in here.iterdir())

    tokenizer = AutoTokenizer.from_pretrained(out)
    enc = tokenizer(TEXTS, return_tensors="pt", padding=True)

    def logits(folder):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(folder)).eval()
        with torch.no_grad():
            return model(**enc).logits

    assert torch.equal(logits(out), logits(here))


def test_a_cancel_ends_the_call_as_cancelled_and_writes_nothing(client, adapter, tmp_path):
    asked = {"progress": 0}

    def progress(message, fraction):
        asked["progress"] += 1

    with pytest.raises(Cancelled):
        client.call("export_merged", {"entry": adapter, "gallery": str(Gallery().root),
                                      "out_dir": str(tmp_path / "merged")},
                    progress=progress, should_stop=lambda: asked["progress"] > 0)
    assert list(tmp_path.iterdir()) == []
    # the engine goes on serving
    assert client.call("energy_curve", {"entry": adapter})["max_rank"] == 4


def test_the_playground_streams_what_it_returns(client, adapter):
    handle = client.call("playground_load", {"entry": adapter, "gallery": str(Gallery().root)})
    pieces = []
    answers = client.call("playground_generate", {"handle": handle, "prompt": "What is the capital of France?",
                                                  "max_new_tokens": 12},
                          on_text=lambda which, piece: pieces.append((which, piece)))
    assert set(answers) == {"base", "adapted"}
    for which in ("base", "adapted"):
        assert "".join(p for w, p in pieces if w == which) == answers[which]
    here = Playground(Gallery().get(adapter)).load()
    assert answers == here.generate("What is the capital of France?", max_new_tokens=12)
    assert client.call("playground_close", {"handle": handle}) is None
    with pytest.raises(StudioError, match="no longer loaded"):
        client.call("playground_generate", {"handle": handle, "prompt": "hi"})


def test_a_killed_engine_fails_its_calls_in_one_sentence_and_the_next_starts_afresh(client, adapter, tmp_path):
    first = client.pid

    def kill_it(message, fraction):
        if client.pid == first:
            os.kill(first, signal.SIGKILL)

    with pytest.raises(EngineDied) as died:
        client.call("export_merged", {"entry": adapter, "out_dir": str(tmp_path / "merged")}, progress=kill_it)
    assert str(died.value) == ("the engine process stopped (killed by SIGKILL) while running export_merged; "
                               "nothing was changed")
    assert not (tmp_path / "merged").exists()
    curve = client.call("energy_curve", {"entry": adapter})
    assert client.pid not in (None, first) and curve["kept"][-1] == 1.0


def test_the_engine_exits_when_the_window_is_gone_and_the_window_never_imports_torch(adapter, tiny_llama, tmp_path):
    script = textwrap.dedent(f"""
        import sys, threading, time
        from studio.core.engineclient import engine
        client = engine()
        preview = client.call("preview_dataset", {{"data": {{"path": {CHAT!r}}}, "model_source": {tiny_llama!r},
                                                   "task": "causal-lm"}})
        assert preview["train_examples"] > 0
        handle = client.call("playground_load", {{"entry": {adapter!r}}})
        print("torch" in sys.modules, "transformers" in sys.modules, client.pid, flush=True)
        busy = threading.Thread(target=client.call, args=("playground_generate",
                                {{"handle": handle, "prompt": "tell me a long story", "max_new_tokens": 100000}}))
        busy.start()
        time.sleep(1000)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    window = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = window.stdout.readline().split()
        assert line[:2] == ["False", "False"], line
        server = int(line[2])
        time.sleep(0.5)                       # the generation is under way
        window.kill()                         # the window dies: the engine's stdin ends
        window.wait()
        assert _gone(server, 8), "the engine process outlived its window"
    finally:
        window.kill()
        window.wait()


def test_calls_from_several_threads_run_at_once(client, adapter, tiny_llama, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    jobs = [("energy_curve", {"entry": adapter}),
            ("preview_dataset", {"data": {"path": CHAT}, "model_source": tiny_llama, "task": "causal-lm"}),
            ("export_adapter", {"entry": adapter, "out_dir": str(tmp_path / "a")}),
            ("export_adapter", {"entry": adapter, "out_dir": str(tmp_path / "b")})]
    with ThreadPoolExecutor(len(jobs)) as pool:
        curve, preview, a, b = pool.map(lambda job: client.call(*job), jobs)
    assert curve["max_rank"] == 4 and preview["format"] == "messages"
    assert (Path(a) / "adapter_model.safetensors").is_file() and (Path(b) / "adapter_model.safetensors").is_file()
