"""The rig fixture firmware, run for real under MicroPython's unix port on a pty, driven by the
host client over pyserial: handshake, samples against the INA226 arithmetic, markers, pins,
gaps, refusals, and the mpy-cross build that `ocula fixture deploy` copies."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from hil import fixture_sim
from hil.errors import FixtureError
from hil.fixture_link import Fixture, firmware_version
from hil.transport import open_port
from tests.conftest import run_ocula


def _connect(sim: fixture_sim.SimFixture) -> Fixture:
    assert sim.port is not None
    return Fixture(open_port(sim.port), sim.port)


def _ina226_watts(watts: float, volts: float = 5.0) -> float:
    """Reference: what an INA226 with a 10 mOhm shunt and CAL=5120 reports for this load."""
    shunt = int((watts / volts) * 0.01 / 2.5e-6 + 0.5)  # 2.5 uV per LSB
    current = shunt * 5120 // 2048  # datasheet: Current = Shunt * CAL / 2048
    return round(volts / 1.25e-3) * 1.25e-3 * current * 100e-6


def test_hello_reports_version_and_sensor(tmp_path: Path) -> None:
    with fixture_sim.SimFixture(tmp_path) as sim, _connect(sim) as fx:
        info = fx.hello()
        assert info["version"] == firmware_version()
        assert info["sensor"] == "ina226"


def test_samples_follow_the_rail(tmp_path: Path) -> None:
    with (
        fixture_sim.SimFixture(tmp_path, clock_offset_us=5e8, drift_ppm=50) as sim,
        _connect(sim) as fx,
    ):
        fx.hello()
        sim.rail(1.5)
        fx.start(2000)
        fx.wait_samples(400)
        sim.rail(3.25, volts=4.8)
        fx.mark(1)
        fx.wait_markers(1)
        n = fx.wait_samples(400)
        fx.wait_samples(n + 400)
        stats = fx.stop()
        s = fx.samples()
    assert len(s) == stats["samples"]
    assert s.period_us == 500
    before = s.watts[:300]
    after = s.watts[-300:]
    assert np.allclose(before, _ina226_watts(1.5), rtol=0, atol=1e-9)
    assert np.allclose(after, _ina226_watts(3.25, 4.8), rtol=0, atol=1e-9)
    assert np.all(np.diff(s.t_us) > 0)  # unwrapped, on one clock


def test_overload_gaps_are_reported_not_filled(tmp_path: Path) -> None:
    with fixture_sim.SimFixture(tmp_path) as sim, _connect(sim) as fx:
        fx.hello()
        sim.rail(1.0)
        fx.start(500_000)  # far beyond what the loop sustains: it must skip, and say so
        fx.wait_samples(5000)
        stats = fx.stop()
        s = fx.samples()
    gaps = s.gaps()
    assert stats["overruns"] > 0
    assert len(gaps) == stats["overruns"]
    assert sum(g.missing for g in gaps) == int(s.seq[-1] + 1) - len(s)
    assert len(s) == stats["samples"]


def test_markers_and_pings_share_the_sample_clock(tmp_path: Path) -> None:
    sim = fixture_sim.SimFixture(tmp_path, clock_offset_us=123_456, drift_ppm=100)
    with sim, _connect(sim) as fx:
        fx.hello()
        fx.start(5000)
        fx.wait_samples(100)
        host = []
        for i in range(10):
            host.append(sim.edge())
            fx.wait_markers(i + 1)
        fx.mark(99)
        fx.wait_markers(11)
        pings = [fx.ping(i) for i in range(5)]
        fx.stop()
        marks = fx.markers()
        s = fx.samples()
    gpio = [m for m in marks if m.source == "gpio"]
    assert [m.source for m in marks].count("command") == 1 and marks[-1].ident == 99
    assert len(gpio) == 10
    assert s.t_us[0] <= gpio[0].t_us <= s.t_us[-1]
    # edges are stamped on the fixture clock: host gaps and fixture gaps agree (offset-free)
    d_host = np.diff(host)
    d_fix = np.diff([m.t_us for m in gpio])
    assert np.median(np.abs(d_fix - d_host * (1 + 100e-6))) < 2000
    assert all(t0 < t1 for t0, _, t1 in pings)


def test_power_and_reset_lines(tmp_path: Path) -> None:
    with fixture_sim.SimFixture(tmp_path) as sim, _connect(sim) as fx:
        fx.power(False)
        fx.power(True)
        fx.reset(5)
        assert sim.wait_pins(4) == [("power", 0), ("power", 1), ("reset", 1), ("reset", 0)]


def test_bad_commands_are_refused_with_reasons(tmp_path: Path) -> None:
    with fixture_sim.SimFixture(tmp_path) as sim, _connect(sim) as fx:
        with pytest.raises(FixtureError, match="bad argument for start: fast"):
            fx.command("start fast")
        with pytest.raises(FixtureError, match="rate 0 out of range"):
            fx.start(0)
        with pytest.raises(FixtureError, match="unknown command selfdestruct"):
            fx.command("selfdestruct")
        assert fx.hello()["sensor"] == "ina226"  # still serving


def test_missing_sensor_is_refused(tmp_path: Path) -> None:
    with fixture_sim.SimFixture(tmp_path, sensor="missing") as sim, _connect(sim) as fx:
        with pytest.raises(FixtureError, match="sensor=missing; check the INA226 wiring"):
            fx.hello()
        with pytest.raises(FixtureError, match="no sensor"):
            fx.start(100)


def test_other_firmware_version_is_refused(tmp_path: Path) -> None:
    fw = fixture_sim.stage_firmware(tmp_path / "old")
    text = (fw / "fixture.py").read_text()
    (fw / "fixture.py").write_text(
        text.replace(f'VERSION = "{firmware_version()}"', 'VERSION = "0.9"')
    )
    match = r"runs firmware 0\.9, this host needs .*ocula fixture deploy"
    with (
        fixture_sim.SimFixture(tmp_path, firmware_dir=fw) as sim,
        _connect(sim) as fx,
        pytest.raises(FixtureError, match=match),
    ):
        fx.hello()


def test_no_answer_is_a_link_failure(tmp_path: Path) -> None:
    import os
    import tty

    from hil.errors import LinkFailure

    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with (
            Fixture(open_port(os.ttyname(slave)), "silent") as fx,
            pytest.raises(LinkFailure, match=r"did not answer 'hello' within 0\.3 s"),
        ):
            fx.hello(timeout=0.3)
    finally:
        os.close(master)
        os.close(slave)


def test_deploy_dry_run_builds_mpy_that_runs(tmp_path: Path) -> None:
    build = tmp_path / "build"
    r = run_ocula("fixture", "deploy", "--port", "/dev/ttyACM7", "--dry-run", "--build", str(build))
    assert r.code == 0, r.err
    cmd = shlex.split(r.out.strip().splitlines()[-1])
    assert Path(cmd[0]).name == "mpremote" and cmd[1:3] == ["connect", "/dev/ttyACM7"]
    copies = [(cmd[i + 1], cmd[i + 2]) for i, a in enumerate(cmd) if a == "cp"]
    assert [dst for _, dst in copies] == [":fixture.mpy", ":hw.mpy", ":framing.mpy", ":main.py"]
    assert cmd[-1] == "reset"
    for src, _ in copies:
        assert Path(src).parent == build
        if src.endswith(".mpy"):
            assert Path(src).read_bytes()[:2] == b"M\x06"  # mpy v6 header
    # the compiled firmware is what runs: boot it with the simulated hardware module
    fw = tmp_path / "fw"
    fw.mkdir()
    for name in ("fixture.mpy", "framing.mpy"):
        shutil.copy(build / name, fw / name)
    for name in ("hw_sim.py", "sim_main.py"):
        shutil.copy(fixture_sim.FIRMWARE_DIR / name, fw / name)
    with fixture_sim.SimFixture(tmp_path, firmware_dir=fw) as sim, _connect(sim) as fx:
        assert fx.hello()["version"] == firmware_version()


def test_deploy_to_a_missing_port_says_so() -> None:
    r = run_ocula("fixture", "deploy", "--port", "/dev/ttyACM-none")
    assert r.code == 1
    assert "no such port" in r.err and "Traceback" not in r.err


def test_mpy_cross_rejects_broken_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    from hil import deploy

    proc = subprocess.run([deploy._tool("mpy-cross"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "SyntaxError" in proc.stderr


def test_timed_power_steps_and_edges_share_the_wiring_delay(tmp_path: Path) -> None:
    """A power step and a marker edge stamped at the same host moment reach the sensor and the
    marker pin together, 30 ms later (the sim rail's wiring delay): the first sample at the
    new power is the one at the edge, and nothing changed when the datagrams arrived."""
    with fixture_sim.SimFixture(tmp_path, delay_us=30_000) as sim, _connect(sim) as fx:
        fx.hello()
        sim.rail(1.0)
        fx.start(5000)  # strict: a sample is read within a period of its slot, or skipped
        fx.wait_samples(500)
        sent, tick0, _ = fx.ping()  # a fixture tick read before the host raises the line
        at = (time.monotonic_ns() / 1000, time.time_ns())
        sim.rail(3.0, since_ns=at[1])
        sim.edge(at)
        [mark] = fx.wait_markers(1)
        fx.wait_until(mark.t_us + 20_000)
        fx.stop()
        s = fx.samples()
    # The step sits at the edge within two periods at 5 kHz: every sample read before that window
    # is at the old power, every one after it at the new. A loaded host may skip samples near
    # the edge (strict slots), so the window's own samples are not required to exist.
    before, after = s.t_us < mark.t_us - 400, s.t_us > mark.t_us + 400
    assert before.sum() >= 400 and after.sum() >= 20
    assert np.all(s.watts[before] < 1.5) and np.all(s.watts[after] > 2.0)
    assert int(s.t_us[-1]) - mark.t_us >= 20_000  # the step held on
    # the edge is stamped the wiring delay after the host raised it, however late the host
    # or the fixture got to it: after the tick read before it by 30 ms, and by no more than
    # the 30 ms plus the host's own time between that read and raising the line
    assert 29_000 < mark.t_us - tick0 < 30_000 + (at[0] - sent * 1e6) + 1_000
