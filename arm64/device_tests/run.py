"""Run the device test subset on this interpreter (the arm64 root file system's python3.11).

    python3.11 run.py WORK [NAME_FILTER]

WORK holds what the x86_64 host prepared: `expect.json` (the host's results to match) and the
artifacts and fixtures it names. Each `test_*.py` module beside this file defines `test_*(ctx)`
functions; they run in file order, each prints one PASS or FAIL line, and the last line is
`N passed, M failed`. The exit status is 1 when anything failed. No pytest: it would only add
start-up time under emulation.
"""

from __future__ import annotations

import importlib
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class Context:
    work: Path  # prepared by the host, read-only for tests
    expect: dict[str, Any]  # the host's results
    tmp: Path  # a fresh empty folder per test
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """A measured figure worth seeing in the log, printed under the test's line."""
        self.notes.append(text)


def _import_failed(error: BaseException) -> Any:
    def test(ctx: Context) -> None:
        raise error

    return test


def tests(name_filter: str) -> list[tuple[str, Any]]:
    """(name, function) of every test; a module that does not import is one failing test."""
    found = []
    for path in sorted(HERE.glob("test_*.py")):
        try:
            module = importlib.import_module(path.stem)
        except Exception as e:
            if name_filter in path.stem:
                found.append((f"{path.stem}::<import>", _import_failed(e)))
            continue
        for name, func in vars(module).items():
            full = f"{path.stem}::{name}"
            if name.startswith("test_") and callable(func) and name_filter in full:
                found.append((full, func))
    return found


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[1])
    expect = json.loads((work / "expect.json").read_text())
    sys.path.insert(0, str(HERE))
    print(f"device: python {platform.python_version()} on {platform.machine()}", flush=True)
    passed = failed = 0
    for name, func in tests(argv[2] if len(argv) == 3 else ""):
        tmp = Path(tempfile.mkdtemp(prefix="ocula-device-"))
        start = time.perf_counter()
        ctx = Context(work, expect, tmp)
        try:
            func(ctx)
        except Exception:
            failed += 1
            took = time.perf_counter() - start
            print(f"FAIL {name} ({took:.1f}s)", flush=True)
            print("    " + traceback.format_exc().rstrip().replace("\n", "\n    "), flush=True)
        else:
            passed += 1
            print(f"PASS {name} ({time.perf_counter() - start:.1f}s)", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for text in ctx.notes:
            print(f"    note: {text}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
