"""Builds the rig fixture firmware and copies it to an RP2040 board with mpremote.

The firmware modules (`fixture.py`, `hw.py`) and the link codec (`runtime/link/framing.py`)
are precompiled with mpy-cross into .mpy bytecode (smaller, no compile step and no heap spike
on the board at boot); `main.py` stays source, since MicroPython boots it by that name. The copy
is one mpremote invocation (`connect PORT fs cp ... + reset`), so a failure leaves nothing half
done beyond the files already copied, and a second run replaces them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hil.errors import FixtureError
from hil.fixture_link import FIRMWARE_DIR

COMPILED = ("fixture.py", "hw.py")
SOURCE = ("main.py",)
MARCH = "armv6m"  # RP2040: Cortex-M0+


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        raise FixtureError(f"'{name}' is not installed; run '.venv/bin/pip install {name}'")
    return found


def build(out: Path) -> list[Path]:
    """Compiles the firmware into `out`; returns the files to copy, in copy order."""
    from hil.fixture_sim import framing_source

    out.mkdir(parents=True, exist_ok=True)
    sources = [FIRMWARE_DIR / n for n in COMPILED] + [framing_source()]
    files = []
    for src in sources:
        target = out / (src.stem + ".mpy")
        proc = subprocess.run(
            [_tool("mpy-cross"), f"-march={MARCH}", "-o", str(target), str(src)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise FixtureError(f"mpy-cross failed on {src}: {proc.stderr.strip()[:300]}")
        files.append(target)
    for name in SOURCE:
        shutil.copy(FIRMWARE_DIR / name, out / name)
        files.append(out / name)
    return files


def mpremote_command(port: str, files: list[Path]) -> list[str]:
    """The mpremote command line that copies `files` to the board's root and resets it."""
    cmd = [_tool("mpremote"), "connect", port]
    for f in files:
        cmd += ["fs", "cp", str(f), f":{f.name}", "+"]
    return [*cmd, "reset"]


def deploy(port: str, out: Path, timeout: float = 120) -> list[Path]:
    files = build(out)
    proc = subprocess.run(
        mpremote_command(port, files), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise FixtureError(
            f"{port}: mpremote could not copy the fixture firmware: "
            f"{(proc.stderr or proc.stdout).strip()[-300:]}; check that the board runs "
            "MicroPython (hold BOOTSEL and flash the RP2040 MicroPython .uf2 first)"
        )
    return files
