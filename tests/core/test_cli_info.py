"""`lora-studio info`: versions, and where the resources and the bundled models are found."""

from __future__ import annotations

import json
from pathlib import Path

from studio.cli import main
from studio.core.models import BUNDLED

ROOT = Path(__file__).resolve().parents[2]   # (not conftest.ROOT: tests/ui/conftest.py can shadow it)


def test_info_json_names_resources_models_and_libraries(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] and info["python"] and info["frozen"] is False
    assert info["resources"] == str(ROOT / "resources")
    assert info["default_config"] == str(ROOT / "resources" / "configs" / "default.toml")
    assert info["default_config_found"] and info["icon_found"]
    assert set(info["bundled_models"]) == set(BUNDLED)
    for model in info["bundled_models"].values():   # a path that exists, or None when not installed
        assert model["path"] is None or model["path"].startswith("/")
    assert info["libraries"]["torch"] and info["libraries"]["transformers"]
    assert info["devices"][0] == "cpu"


def test_info_text_is_a_few_lines(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LoRA Studio ")
    assert f"default config  {ROOT / 'resources' / 'configs' / 'default.toml'}\n" in out
    assert "bundled:smollm2-135m-instruct" in out and "torch " in out
