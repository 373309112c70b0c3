"""A labgrid place on loopback: coordinator and exporter from labgrid's own venv, ser2net
serving a pty linked under /dev, the fixture reached through `labgrid://PLACE`."""

from __future__ import annotations

from pathlib import Path

from hil import fixture_sim
from hil.fixture_link import Fixture
from hil.labgrid_place import LabgridPlace, parse_show
from hil.transport import open_port
from tests.hil_helpers import labgrid_place


def test_parse_show_reads_acquired_resources() -> None:
    text = (
        "Place 'p':\n  acquired: vm/root\n"
        "Acquired resource 'RawSerialPort' (e/g/NetworkSerialPort/RawSerialPort):\n"
        "  {'acquired': 'p',\n   'avail': True,\n   'cls': 'NetworkSerialPort',\n"
        "   'params': {'extra': {'path': '/dev/x'}, 'host': '127.0.0.1', 'port': 4000}}\n"
    )
    (res,) = parse_show(text)
    assert res["cls"] == "NetworkSerialPort" and res["params"]["port"] == 4000


def test_fixture_through_a_labgrid_place(tmp_path: Path) -> None:
    with (
        fixture_sim.SimFixture(tmp_path) as sim,
        labgrid_place(tmp_path, sim.port or "") as (where, lg),
    ):
        place = LabgridPlace(where)
        name = place.place
        url = place.acquire()
        try:
            assert url.startswith("rfc2217://127.0.0.1:")
            with Fixture(open_port(url), url) as fx:
                assert fx.hello()["sensor"] == "ina226"
        finally:
            place.release()
        assert (
            "acquired: None" in lg("-p", name, "show").stdout
            or "acquired:" not in lg("-p", name, "show").stdout
        )
        # the same place as a PORT of its own: the registry acquires it on open, releases on close
        with Fixture(open_port(where), where) as fx:
            assert fx.hello()["sensor"] == "ina226"
            shown = lg("-p", name, "show").stdout
            assert "acquired:" in shown and "acquired: None" not in shown
        assert "acquired: None" in lg("-p", name, "show").stdout or (
            "acquired:" not in lg("-p", name, "show").stdout
        )
