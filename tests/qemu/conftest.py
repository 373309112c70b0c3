"""The full-system tests: an `ocula image` board under qemu-system-aarch64 (`make qemu-test`).

Not collected by `make test` (pyproject's norecursedirs): they need the image, which
`make qemu-test` builds or reuses and names in OCULA_QEMU_IMAGE. Figures (boot time, flash
throughput, first inference) go, one JSON object a line, to OCULA_QEMU_FIGURES when set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.qemu import QemuBoard


def image() -> Path:
    path = os.environ.get("OCULA_QEMU_IMAGE", "")
    if not path or not Path(path).is_file():
        pytest.fail(
            f"OCULA_QEMU_IMAGE={path!r} names no image: run `make qemu-test`, which builds it"
        )
    return Path(path)


def record(**figure: Any) -> None:
    out = os.environ.get("OCULA_QEMU_FIGURES")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"t": time.strftime("%H:%M:%S"), **figure}) + "\n")


@pytest.fixture(scope="session")
def qemu_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuBoard]:
    """A board started from the image (its own copy of the disk), up and answering; one for
    the session, as every boot under TCG costs tens of seconds."""
    board = QemuBoard("ci", image=image(), base=tmp_path_factory.mktemp("qemu"))
    board.start()
    record(figure="boot_to_agent_s", value=round(board.boot_s or 0, 1), load=os.getloadavg()[0])
    try:
        yield board
    finally:
        board.stop()
