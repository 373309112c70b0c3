"""The device install: `runtime/` beside the aarch64 wheels, less what the device never loads.

What pip installs (`site`) is measured as it is; the device tests then run on a lean copy that
leaves out the wheels' test suites, their host tools (onnxruntime's transformers/quantization
tooling, numpy's f2py and distutils, console scripts, type stubs) and onnxruntime's C-API library
`libonnxruntime.so`, which the Python module does not link (it carries its own copy of the
runtime). Whatever is left out here is proved unneeded by the device subset that runs without it.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from typing import Any

# Paths relative to the wheels' folder, as fnmatch patterns.
LEAVE_OUT = (
    "bin",
    "*/tests",
    "*/tests/*",
    "onnxruntime/capi/libonnxruntime.so*",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "onnxruntime/datasets",
    "numpy/f2py",
    "numpy/distutils",
    "*.pyi",
)


def left_out(relpath: str) -> bool:
    return any(fnmatch.fnmatch(relpath, pattern) for pattern in LEAVE_OUT)


def stage(runtime: Path, site: Path, dest: Path) -> None:
    """`dest/runtime` (without bytecode) and `dest/site` (the wheels, lean)."""
    shutil.copytree(runtime, dest / "runtime", ignore=shutil.ignore_patterns("__pycache__"))

    def ignore(folder: str, names: list[str]) -> list[str]:
        rel = Path(folder).relative_to(site)
        return [n for n in names if left_out(str(rel / n).removeprefix("./"))]

    shutil.copytree(site, dest / "site", ignore=ignore, symlinks=True)


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def mb(n: int) -> float:
    return round(n / 1e6, 1)


def measure(site: Path, lean: Path) -> dict[str, Any]:
    """Sizes in MB: the wheels as installed, the lean device install, and what dominates."""
    parts = {"runtime": tree_size(lean / "runtime")}
    for top in sorted((lean / "site").iterdir()):
        if top.is_dir() and not top.name.endswith(".dist-info"):
            parts[top.name] = tree_size(top)
    files = [p for p in (lean / "site").rglob("*") if p.is_file() and not p.is_symlink()]
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:5]
    return {
        "pip_wheels_mb": mb(tree_size(site)),
        "device_total_mb": mb(tree_size(lean)),
        "native_libraries_mb": mb(sum(p.stat().st_size for p in files if ".so" in p.name)),
        "bytecode_mb": mb(sum(p.stat().st_size for p in files if p.suffix == ".pyc")),
        "parts_mb": {k: mb(v) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
        "largest_files_mb": {
            str(p.relative_to(lean / "site")): mb(p.stat().st_size) for p in largest
        },
    }
