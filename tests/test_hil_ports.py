"""One port registry: every command takes every kind of PORT, and power goes through a fixture.

`ocula flash`, `run`, `profile` and `hil` run against the same board reached as `sim://NAME`
(the registry starts it) and as `labgrid://PLACE` (a sim board on a pty, served by a labgrid
place on loopback; the registry acquires the place). A sim board's power cycled through the
simulated fixture (the firmware drives the power pin, wired to the board) and through a
labgrid place's power switch (labgrid-client drives it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from board import profiles
from hil import fixture_sim
from hil.errors import PortError
from hil.ports import KINDS, check_port
from hil.sim import SimBoard
from hil.suites import bundles
from hil.targets import BoardUnderTest, PowerRig
from tests.conftest import run_ocula
from tests.hil_helpers import PowerSwitch, labgrid_place

PROFILE = "rpi5"  # what a board behind a labgrid place is taken for when no inventory says


@pytest.fixture(params=["sim", "labgrid"])
def board_port(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(PORT, the `ocula profile` options its power rig needs) for the same kind of board."""
    boards = tmp_path / "boards"
    if request.param == "sim":
        yield f"sim://kinds?profile={PROFILE}&dir={boards}", []
        return
    with (
        SimBoard("placed", profile=PROFILE, base=boards) as board,
        labgrid_place(tmp_path / "lab", board.port) as (url, _),
        fixture_sim.SimFixture(tmp_path / "fx") as fixture,  # a rig fixture on its own line
    ):
        fixture.rail(2.0)
        yield url, ["--fixture-port", fixture.port or "", "--rate", "500"]


def test_every_command_takes_every_port_kind(
    board_port: tuple[str, list[str]], tmp_path: Path
) -> None:
    port, rig = board_port
    assert check_port(port) is KINDS[port.split("://")[0]]
    bundle = bundles.build(profiles.find(PROFILE), tmp_path / "probe.bundle")

    r = run_ocula("flash", str(bundle), "--port", port, "--json", timeout=300)
    assert r.code == 0, r.err
    flashed = json.loads(r.out)
    assert flashed["ok"] and flashed["booted"] == "a" and flashed["board"] == PROFILE

    # the board answers: the probe bundle carries no model the app needs
    r = run_ocula("run", "look", "--port", port, "--duration", "1", timeout=180)
    assert r.code == 1 and "did not run look" in r.err and "Traceback" not in r.err, r.err

    out = tmp_path / "profile"
    r = run_ocula(
        "profile", "--port", port, "--app", "requests", "--out", str(out), "--seconds", "1",
        *rig, timeout=300,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert f"requests on {PROFILE}:" in r.out
    assert json.loads((out / "power.json").read_text())["board"] == PROFILE

    report = tmp_path / "hil"
    r = run_ocula(
        "hil", "--port", port, "--report", str(report), "--",
        "-k", "test_hello or test_info_and_stats", "-q", timeout=300,
    )  # fmt: skip
    assert r.code == 0, r.out + r.err
    tests = json.loads((report / "report.json").read_text())["tests"]
    assert sorted(t["outcome"] for t in tests) == ["passed", "passed"]


def test_power_cycle_through_a_fixture(tmp_path: Path) -> None:
    """The fixture firmware (MicroPython's unix port) drives the power pin; the sim board's
    power is wired through it, so a power cycle is the pin going 0 then 1 and a fresh boot."""
    board = BoardUnderTest("sim://cycled", tmp_path / "board", PROFILE)
    try:
        first = board.hello(deadline=30)
        own_power = board.power
        rig = PowerRig(board, tmp_path / "rig")
        try:
            assert board.power is not own_power  # the fixture's pin switches the board now
            board.power_cycle()
            assert rig.sim_fixture.pin_log[-2:] == [("power", 0), ("power", 1)]
            again = board.hello(deadline=30)
            assert again["boot_id"] != first["boot_id"]
            board.reset.reset()  # the fixture's reset line: a boot again
            assert rig.sim_fixture.pin_log[-2:] == [("reset", 1), ("reset", 0)]
            assert board.hello(deadline=30)["boot_id"] != again["boot_id"]
        finally:
            rig.close()
        assert board.power is own_power
    finally:
        board.close()


def test_power_cycle_through_a_labgrid_place(tmp_path: Path) -> None:
    """A place with a power switch brings a PowerProtocol: labgrid-client drives the switch
    (labgrid's own simplerest driver) in front of a sim board."""
    with (
        SimBoard("switched", profile=PROFILE, base=tmp_path / "boards") as sim,
        PowerSwitch(sim) as switch,
        labgrid_place(tmp_path / "lab", sim.port, power_url=switch.url) as (url, _),
    ):
        board = BoardUnderTest(url, tmp_path / "board")
        try:
            first = board.hello(deadline=30)
            board.power_cycle()
            assert switch.log == ["0", "1"]
            assert board.hello(deadline=30)["boot_id"] != first["boot_id"]
        finally:
            board.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("qemu://", "a qemu board's name is 1 to 64"),
        ("qemu://a/b", "a qemu board's name is 1 to 64"),
        ("qemu://ci?cpu=max", "unknown option(s) ['cpu']"),
        ("qemu://ci?image", "cannot read the options"),
        ("qemu://ci?image=/nonexistent/ci.img", "no such file; build one with `ocula image"),
    ],
)
def test_a_qemu_port_is_checked_before_anything_starts(url: str, message: str) -> None:
    with pytest.raises(PortError) as caught:
        check_port(url)
    assert message in str(caught.value)


def test_a_qemu_board_without_a_disk_or_an_image_says_how_to_make_one(tmp_path: Path) -> None:
    r = run_ocula("flash", str(tmp_path / "x.bundle"), "--port", f"qemu://fresh?dir={tmp_path}")
    assert r.code != 0 and "Traceback" not in r.err
    r = run_ocula("run", "look", "--port", f"qemu://fresh?dir={tmp_path}", "--duration", "1")
    assert r.code == 1 and "Traceback" not in r.err, r.err
    assert "qemu://fresh has no disk yet" in r.err and "ocula image --board qemu" in r.err
    assert not (tmp_path / "fresh" / "disk.img").exists()
