"""Boot and hello: the board answers, says who it is, and comes back after a power cycle."""

from __future__ import annotations

import pytest

from hil import console
from hil.errors import BootHang


def test_hello(board):
    hello = board.hello()
    assert hello["board"] == board.profile.name
    assert hello["protocol"] >= 1 and hello["slot"]


def test_info_and_stats(board):
    board.hello()
    info = board.call("info")
    assert info["board"] == board.profile.name and info["booted"]
    stats = board.call("stats")
    assert stats["uptime_s"] >= 0 and stats["open_files"] != 0


def test_power_cycle_boots_and_the_console_keeps_every_byte(board):
    first = board.hello()
    rx_before = console.stream(board.console.path, console.RX)
    with board.step("power cycle"):
        board.power_cycle()
    again = board.hello(deadline=30)
    assert again["boot_id"] != first["boot_id"] or again["slot"] == first["slot"]
    rx_after = console.stream(board.console.path, console.RX)
    assert rx_after.startswith(rx_before) and len(rx_after) > len(rx_before)


def test_a_board_that_does_not_boot_is_a_boot_hang(board):
    if board.power is None:
        pytest.skip("needs a board whose power this rig can hold off (sim://, or --fixture-port)")
    board.power.off()
    try:
        with pytest.raises(BootHang, match="no answer to hello within 2 s"):
            board.hello(deadline=2)
    finally:
        board.power.on()
    board.hello(deadline=30)
