"""Install forms: where resources are found (checkout, wheel, frozen app), and what the wheel holds.

    pytest tests/packaging                    # the resource rules, and one wheel build (~10 s)
    pytest -m "not packaging"                 # skips the wheel build

The installs themselves (pip, pipx, PyInstaller) are too slow for the suite: README's "Install"
and packaging/build_app.sh say how they were checked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from studio.core import resources
from studio.core.config import find_file

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ("chat_sample.jsonl", "alpaca_sample.jsonl", "chat_long_sample.jsonl", "classification_sample.csv",
           "text_sample.txt")


def _layout(base: Path, package_root: Path) -> Path:
    """A studio package at `package_root` (as installed) with its resources beside it."""
    (package_root / "studio" / "core").mkdir(parents=True)
    shipped = package_root / "studio" / "resources"
    shutil.copytree(ROOT / "resources" / "configs", shipped / "configs")
    shutil.copytree(ROOT / "resources" / "datasets", shipped / "datasets")
    return shipped


# -- resource_dir: the three install forms -------------------------------------------------------

def test_resources_come_from_the_checkout():
    assert resources.resource_dir() == ROOT / "resources"
    assert resources.default_config_path() == ROOT / "resources" / "configs" / "default.toml"
    assert resources.default_config_path().is_file()
    assert resources.resource_path("datasets", "chat_sample.jsonl").is_file()
    assert resources.icon_path("svg").is_file() and resources.icon_path("png").is_file()


def test_resources_come_from_the_installed_package(tmp_path, monkeypatch):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    shipped = _layout(tmp_path, site)
    (site / "resources").mkdir()   # some other distribution's stray top-level folder: not ours
    monkeypatch.setattr(resources, "__file__", str(site / "studio" / "core" / "resources.py"))
    assert resources.resource_dir() == shipped
    assert resources.default_config_path().is_file()


def test_resources_come_from_a_pyinstaller_bundle(tmp_path, monkeypatch):
    bundle = tmp_path / "dist" / "lora-studio" / "_internal"
    shipped = _layout(tmp_path, bundle)
    monkeypatch.setattr(resources, "__file__", str(bundle / "studio" / "core" / "resources.pyc"))
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    assert resources.resource_dir() == shipped
    # a frozen module whose __file__ is not under the bundle: sys._MEIPASS still finds them
    monkeypatch.setattr(resources, "__file__", str(tmp_path / "elsewhere" / "studio" / "core" / "resources.pyc"))
    assert resources.resource_dir() == shipped


def test_a_config_naming_resources_finds_the_installed_samples(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    shipped = _layout(tmp_path, site)
    monkeypatch.setattr(resources, "__file__", str(site / "studio" / "core" / "resources.py"))
    monkeypatch.chdir(tmp_path)   # neither the cwd nor the config's folder holds resources/...
    config = shipped / "configs" / "default.toml"
    found = find_file("resources/datasets/chat_sample.jsonl", str(config))
    assert found == str((shipped / "datasets" / "chat_sample.jsonl").resolve())
    assert find_file("resources/datasets/nothing.jsonl", str(config)) == "resources/datasets/nothing.jsonl"
    assert find_file("datasets/chat_sample.jsonl", str(config)) == "datasets/chat_sample.jsonl"


def test_a_broken_install_gives_missing_paths_not_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "__file__", str(tmp_path / "site" / "studio" / "core" / "resources.py"))
    assert resources.resource_dir() == tmp_path / "site" / "studio" / "resources"
    assert not resources.default_config_path().exists()


# -- the wheel ----------------------------------------------------------------------------------

@pytest.mark.packaging
def test_wheel_holds_the_code_the_resources_and_the_entry_point(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.importorskip("wheel", reason="setuptools < 70.1 builds wheels only with the wheel package")
    source = tmp_path / "src"   # a copy: building in the checkout would write build/ there
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("studio", "resources"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("lora_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    code = {p.relative_to(ROOT).as_posix() for p in (ROOT / "studio").rglob("*.py")}
    assert not code - names, f"not in the wheel (a package missing from pyproject's list?): {sorted(code - names)}"
    shipped = {"studio/resources/configs/default.toml", "studio/resources/icons/lora-studio.svg",
               "studio/resources/icons/lora-studio-128.png", "studio/resources/icons/lora-studio-256.png"}
    shipped |= {f"studio/resources/datasets/{name}" for name in SAMPLES}
    assert shipped <= names, sorted(shipped - names)
    assert not [n for n in names if "screenshots/" in n or "__pycache__" in n or n.endswith(".pyc")]

    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]" in text and "lora-studio = studio.cli:main" in text
