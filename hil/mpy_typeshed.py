"""Builds a typeshed folder for checking the fixture firmware against MicroPython's RP2040 API.

mypy looks up `time`, `select`, `sys`... in its own CPython typeshed first, so stubs installed
in the venv (`micropython-rp2-rpi-pico-stubs`, which puts `machine.pyi`, `time.pyi`... at the
top of site-packages) are not enough on their own. This copies `micropython-stdlib-stubs`'
`stdlib/` plus the RP2040 stubs into one typeshed layout and lists the extra modules in its
VERSIONS file, so `mypy --custom-typeshed-dir DIR` checks the firmware as the Pico runs it.

    python -m hil.mpy_typeshed .cache/mpy-typeshed
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

STUBS = "micropython-rp2-rpi-pico-stubs"


def build(dest: Path) -> Path:
    try:
        dist = metadata.distribution(STUBS)
    except metadata.PackageNotFoundError as e:
        msg = f"mpy_typeshed: error: {STUBS} is not installed (pip install {STUBS})"
        raise SystemExit(msg) from e
    site = Path(str(dist.locate_file("")))
    if dest.exists():
        shutil.rmtree(dest)
    stdlib = dest / "stdlib"
    shutil.copytree(site / "stdlib", stdlib)
    for f in dist.files or []:
        if f.suffix == ".pyi":
            target = stdlib / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(site / f, target)
    shutil.copytree(site / "_mpy_shed", stdlib / "_mpy_shed", dirs_exist_ok=True)
    import mypy

    ext = Path(mypy.__file__).parent / "typeshed" / "stubs" / "mypy-extensions"
    shutil.copytree(ext, dest / "stubs" / "mypy-extensions")
    versions = stdlib / "VERSIONS"
    listed = {
        line.split(":")[0].strip()
        for line in versions.read_text().splitlines()
        if ":" in line and not line.startswith("#")
    }
    present = {p.stem for p in stdlib.glob("*.pyi")} | {
        p.name for p in stdlib.iterdir() if p.is_dir() and not p.name.startswith("__")
    }
    with versions.open("a") as f:
        for name in sorted(present - listed):
            f.write(f"{name}: 3.0-\n")
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/mpy-typeshed")))
