"""The dependency rule (design.md section 2) is enforced by import-linter, and the check bites."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(cwd), "PATH": str(BIN)},
        timeout=300,
    )


@pytest.fixture
def tree_copy(tmp_path):
    for pkg in ("runtime", "export", "board", "hil", "ocula"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_contract_holds_on_this_tree(tree_copy):
    r = _lint_imports(tree_copy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout


@pytest.mark.parametrize("forbidden", ["torch", "board.profiles", "transformers", "optimum"])
def test_contract_fails_when_runtime_imports_host_code(tree_copy, forbidden):
    (tree_copy / "runtime" / "sneaky.py").write_text(f"import {forbidden}\n")
    r = _lint_imports(tree_copy)
    assert r.returncode != 0
    assert "runtime.sneaky -> " + forbidden.split(".")[0] in r.stdout, r.stdout


def test_runtime_imports_without_host_packages():
    """The device's view: import every runtime module with host-only packages made unimportable."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch','transformers','optimum','onnx','serial',"
        "'cryptography','matplotlib','PIL','export','board','hil','ocula'}:\n"
        "            raise ImportError('host-only: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pkgutil, importlib, runtime\n"
        "for m in pkgutil.walk_packages(runtime.__path__, 'runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
