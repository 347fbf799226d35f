"""The code shows its parts: core/ is one folder per part, the torch-free folders say so and import no
torch, the modules at core/'s top are thin commands, and no test module imports another."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"
PARTS = {"runs", "data", "engine", "app", "models", "training", "serving"}
TORCH_FREE = {"runs", "data", "engine", "app"}
COMMANDS = {"train", "predict", "export", "report", "promise", "calibrate", "cache_variant"}


def modules_of(part: str) -> list[str]:
    return sorted(f"core.{part}.{p.stem}" for p in (CORE / part).glob("*.py") if p.stem != "__init__")


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def test_core_is_one_folder_per_part():
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == PARTS
    for part in PARTS:
        first = docstring(CORE / part / "__init__.py").split(".")[0]
        assert first, f"core/{part}/__init__.py says what the part is"
        assert (first == "Torch-free") == (part in TORCH_FREE), f"core/{part}: {first!r}"


def test_top_level_modules_are_thin_commands():
    for path in CORE.glob("*.py"):
        if path.stem == "__init__":
            continue
        assert path.stem in COMMANDS, f"core/{path.name} belongs in a part's folder"
        text = path.read_text(encoding="utf-8")
        assert "__main__" in text and len(text.splitlines()) <= 12, f"core/{path.name} is a thin entry"


def test_torch_free_folders_import_no_torch():
    mods = [m for part in sorted(TORCH_FREE) for m in modules_of(part)]
    probe = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods) + \
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\nprint(len(bad))\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0", "a torch-free module imported torch"


@pytest.mark.parametrize("path", sorted((REPO / "tests").rglob("test_*.py")), ids=lambda p: p.name)
def test_no_test_module_imports_another(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        name = node.module if isinstance(node, ast.ImportFrom) else None
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [name or ""]
        for n in names:
            leaf = n.split(".")[-1]
            assert not (n.startswith("tests") and leaf.startswith("test_")), \
                f"{path.name} imports {n}: shared helpers live in tests/conftest.py or tests/helpers.py"


def test_the_run_root_is_the_checkouts_checkpoints_folder():
    from core.runs.folders import DEFAULT_ROOT, REPO_ROOT

    assert REPO_ROOT == REPO and DEFAULT_ROOT == REPO / "checkpoints"
