"""Board inventory locks: exclusive per worker, reclaimed when a holder dies, clear refusals."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil import inventory
from hil.errors import InventoryError
from tests.hil_helpers import held_elsewhere

INV = """
[[board]]
name = "sim-a"
port = "sim://a"

[[board]]
name = "sim-b"
port = "sim://b"
profile = "sim"
tags = ["camera"]
"""


def _inv(tmp_path: Path, text: str = INV) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def test_two_workers_get_different_boards(tmp_path: Path) -> None:
    inv = _inv(tmp_path)
    with inventory.acquire(inv, "gw0") as a, inventory.acquire(inv, "gw1") as b:
        assert {a.board.name, b.board.name} == {"sim-a", "sim-b"}
        with pytest.raises(InventoryError, match=r"no free board.*sim-a: pid \d+.*gw0"):
            inventory.acquire(inv, "gw2")
    with inventory.acquire(inv, "gw3") as c:
        assert c.board.name == "sim-a"


def _one_board(tmp_path: Path) -> Path:
    return _inv(tmp_path, INV.split("[[board]]")[0] + "[[board]]" + INV.split("[[board]]")[1])


@contextlib.contextmanager
def _held_by_a_victim(inv: Path) -> Iterator[subprocess.Popen[str]]:
    """A worker process that holds the board of a one-board inventory (it holds it when this
    yields), until it is killed."""
    take = (
        "from pathlib import Path; from hil import inventory\n"
        f"lease = inventory.acquire(Path({str(inv)!r}), 'victim')\n"
        "print(lease.board.name, flush=True)"
    )
    with held_elsewhere(take) as (proc, said):
        assert said == "sim-a"
        yield proc


def test_lock_of_a_killed_worker_is_reclaimed(tmp_path: Path) -> None:
    inv = _one_board(tmp_path)
    with _held_by_a_victim(inv) as proc:
        with pytest.raises(InventoryError, match="victim"):
            inventory.acquire(inv, "gw1")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        start = time.monotonic()
        lease = inventory.acquire(inv, "gw1", wait=60, poll=0.1)
        assert lease.board.name == "sim-a"
        assert time.monotonic() - start < 60
        lease.release()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[board]]\nport = 'x'\n", "needs a name"),
        ("[[board]]\nname = 'a'\n", "needs a port"),
        ("[[board]]\nname = 'a'\nport = 'x'\nspeed = 3\n", "unknown keys"),
        ("[[board]]\nname = 'a'\nport = 'x'\n[[board]]\nname = 'a'\nport = 'y'\n", "repeat"),
        ("", "lists no boards"),
        ("[[board]\n", "not valid TOML"),
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels"),
        ("x = " + "9" * 5000 + "\n", "more than 100 digits"),
        ("x" + ".u" * 20_000 + " = 1\n", "a dotted key of more than 64 parts"),
    ],
)
def test_bad_inventory_files_are_refused(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InventoryError, match=match):
        inventory.acquire(_inv(tmp_path, text), "gw0")


def test_missing_inventory_and_unmatched_want(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not found"):
        inventory.acquire(tmp_path / "none.toml")
    with pytest.raises(InventoryError, match="no board matches 'gpu'"):
        inventory.acquire(_inv(tmp_path), want="gpu")
    with inventory.acquire(_inv(tmp_path), want="camera") as lease:
        assert lease.board.name == "sim-b"


def test_a_waiting_worker_wakes_when_the_holder_dies(tmp_path: Path) -> None:
    """The waiter's retry interval is a minute; it takes the board when the holder is killed,
    long before that (it waits on the holder's pidfd)."""
    import threading

    inv = _one_board(tmp_path)
    got: list[inventory.Lease] = []
    waiting = threading.Thread(
        target=lambda: got.append(inventory.acquire(inv, "gw1", wait=120, poll=60))
    )
    try:
        with _held_by_a_victim(inv) as proc:
            waiting.start()
            waiting.join(timeout=1.0)  # it has found the board held and waits
            assert waiting.is_alive() and not got
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            waiting.join(timeout=30)
            assert got and got[0].board.name == "sim-a", (
                "the waiter slept through the holder's death"
            )
    finally:
        if waiting.ident is not None:
            waiting.join()  # the holder is gone by now: the waiter takes the board or gives up
        for lease in got:
            lease.release()
