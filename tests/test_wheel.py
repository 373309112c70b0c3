"""The wheel a user installs carries what `ocula demo` reads: its data is package data, not a
file of the source tree (tests/data is not in a wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "export", "board", "hil", "ocula")
DEMO_FILES = ("ocula/data/demo/speech.json", "ocula/data/demo/sign_en.png")


def _wheel(tmp: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the sources (the build writes build/ and *.egg-info
    beside them), offline: no index, the venv's setuptools."""
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", ".ocula-cache", "*.pyc")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    proc = subprocess.run(
        [*pip, "--wheel-dir", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, (
        "pip wheel failed (it needs setuptools>=77 in this venv: pip install 'setuptools>=77'):\n"
        + proc.stdout[-2000:]
        + proc.stderr[-2000:]
    )
    (wheel,) = (tmp / "dist").glob("ocula-*.whl")
    return wheel


def test_the_demo_reads_its_data_from_the_installed_wheel(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert set(DEMO_FILES) <= names, sorted(n for n in names if n.startswith("ocula/"))
        assert not any(n.startswith("tests/") for n in names)
        site = tmp_path / "site"
        z.extractall(site)
    # The demo's loader (module level: the script and the sign) run from the unpacked wheel,
    # in a folder that is not the source tree, with the unpacked wheel first on the path.
    probe = (
        "import json, ocula.commands.demo as d; print(json.dumps({'file': d.__file__, "
        "'sentences': d.SCRIPT['sentences'], 'image': str(d.IMAGE), "
        "'image_ok': d.IMAGE.read_bytes()[:8] == bytes.fromhex('89504e470d0a1a0a')}))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(site)
    assert Path(got["image"]).is_relative_to(site) and got["image_ok"]
    script = json.loads((ROOT / "ocula" / "data" / "demo" / "speech.json").read_text())
    assert got["sentences"] == script["sentences"]
