"""Link faults on a virtual cable between host and a sim board: throttled to a UART's rate,
noisy (bit errors, dropped bytes), and cut. Real boards get these faults from real cables;
injecting them needs a sim:// board."""

from __future__ import annotations

import pytest

from hil.errors import LinkFailure
from hil.suites import bundles


@pytest.fixture
def cabled(board, tmp_path):
    if board.sim is None:
        pytest.skip("injecting link faults needs a sim:// board (a virtual cable in the line)")
    from hil.cable import Cable
    from hil.targets import BoardUnderTest

    cable = Cable(baud=921600, seed=7)
    but = BoardUnderTest(
        f"sim://{board.sim.name}-cabled",
        tmp_path / "cabled",
        board.profile.name,
        timeout=5,
        cable=cable,
    )
    try:
        yield but, cable
    finally:
        but.close()
        cable.close()


def test_throttled_line_flashes(cabled, tmp_path, request):
    board, cable = cabled
    board.hello(deadline=30)
    key = request.config.getoption("--hil-key")
    path = bundles.build(
        board.profile, tmp_path / "good.bundle", key=key and __import__("pathlib").Path(key)
    )
    result = board.flash(path, reboot_timeout=60)
    assert result.ok, result.reason
    assert cable.stats()["a>b"]["bytes_out"] >= result.bytes_sent


def test_noisy_line_still_answers(cabled):
    board, cable = cabled
    board.hello(deadline=30)
    cable.configure(ber=1e-4, drop=1e-4)
    for _ in range(40):
        assert board.call("info")["board"] == board.profile.name
    cable.configure(ber=0.0, drop=0.0)


def test_cut_line_fails_with_a_reason_and_recovers(cabled):
    board, cable = cabled
    board.hello(deadline=30)
    cable.cut()
    with pytest.raises(LinkFailure, match=r"no reply within 5 s.*check the cable"):
        board.call("info")
    cable.restore()
    assert board.hello(deadline=30)["board"] == board.profile.name
