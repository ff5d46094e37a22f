"""The shape of `studio/` a newcomer can hold, checked from the source (issue 21's "done when"):
modules of one job and a readable size, no reaching into another module's private names, no
import cycle, and no reference to a file outside the repository."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import ROOT

STUDIO = ROOT / "studio"
MODULES = sorted(p for p in STUDIO.rglob("*.py") if "__pycache__" not in p.parts)
MAX_LINES = 500


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_is_short_and_its_docstring_names_its_job(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (split it by job)"
    doc = ast.get_docstring(_tree(path))
    if path.name == "__init__.py" and not doc:
        return      # a package's __init__ may be empty
    assert doc and len(doc.split()) >= 4, f"{path.relative_to(ROOT)}: its docstring should name its one job"


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            # module._name or obj._name on anything but self/cls (a library's own private
            # attributes, torch's and transformers', are listed below where they are unavoidable)
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                  and not (isinstance(node.value, ast.Call) and ast.unparse(node.value) == "super()")):
                text = ast.unparse(node)
                if not any(text.startswith(allowed) for allowed in LIBRARY_PRIVATES):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text}")
    assert not found, "\n".join(found)


# private names of the libraries themselves, each with the reason no public one does
LIBRARY_PRIVATES = (
    "torch.cpu._is_amx_tile_supported",      # no public test for AMX / AVX512-BF16 (storage.cpu_has_bf16)
    "torch.cpu._is_avx512_bf16_supported",
    "module._buffers",                       # freeing a module's buffers in place (storage.release)
)


def test_studio_has_no_import_cycle():
    modules = {_name(p): p for p in MODULES}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(name, node, path.name == "__init__.py")
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[name].add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
    graph = {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_reference_to_a_file_outside_the_repository():
    outside = re.compile(r"\.\./shared|DESIGN\.md|HOUSE_STYLE\.md|VARIANTS\.md")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in [*MODULES, *ROOT.glob("tests/**/*.py"), ROOT / "README.md",
                                                      STUDIO / "ARCHITECTURE.md"]
             if p != Path(__file__)
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not found, found
