"""The pytest plugin of Ocula's HIL rigs (entry point `pytest11: ocula_hil`).

Options (group "ocula hil"): --board-port PORT, --bundle FILE, --fixture-port PORT, --hil-report
DIR, --hil-inventory FILE, --hil-retries N, --hil-soak-minutes M, --hil-rate HZ, --hil-key FILE,
--hil-sim-rail work|cpu.
Fixtures: `board` (a `hil.targets.BoardUnderTest`, connected, flashed with --bundle once per
session; skipped with a message naming the option when no board was given), `link` (its
request client), `fixture_mcu` (the rig fixture), `power` (a `PowerRig`), `objectives`
(targets from the board profile). A board's PORT is any kind in the registry (`hil.ports`);
tests reach its power and reset through protocols (`board.power`, `board.reset`), which go
through the fixture's pins when a fixture is given, and never ask what kind of board it is.
Markers: `boards(*names)` limits a test to boards whose profile or inventory tags match;
`objective(name)` names the profile objective a test measures.

With pytest-xdist and --hil-inventory each worker takes one free board from the inventory
and holds its lock for the session. A failed test is triaged from its exception (flash, link,
power, boot, assertion) and its evidence attached to the report; with --hil-retries N only
infrastructure failures (link, power) are run again, up to N times.

State lives in pytest's stash (a test's board and report entry in `item.stash`, an
inventory's fixture port in `config.stash`), never in attributes or module globals.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.report import Objective, TestRecord

GROUP = "ocula hil"
INFRA = ("link", "power")
BOARD = pytest.StashKey[Any]()  # item.stash: the BoardUnderTest a test used
RECORD = pytest.StashKey[TestRecord]()  # item.stash: the test's report entry
FIXTURE_PORT = pytest.StashKey[str]()  # config.stash: the leased board's fixture


def fixture_port(config: pytest.Config) -> str | None:
    """--fixture-port, or the fixture of the board taken from the inventory."""
    given: str | None = config.getoption("--fixture-port")
    return given or config.stash.get(FIXTURE_PORT, None)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup(GROUP, "Ocula hardware-in-the-loop")
    g.addoption(
        "--board-port",
        metavar="PORT",
        help="board under test: /dev/tty..., sim://NAME, rfc2217://H:P, labgrid://PLACE",
    )
    g.addoption("--bundle", metavar="FILE", help="flash this bundle once before the tests")
    g.addoption(
        "--fixture-port", metavar="PORT", help="serial port of the rig fixture (power, reset)"
    )
    g.addoption("--hil-report", metavar="DIR", help="write index.html, report.json, junit.xml here")
    g.addoption("--hil-inventory", metavar="FILE", help="take a free board from this inventory")
    g.addoption(
        "--hil-retries",
        type=int,
        default=0,
        metavar="N",
        help="rerun link/power failures up to N times",
    )
    g.addoption("--hil-soak-minutes", type=float, default=0.2, metavar="M", help="soak length")
    g.addoption("--hil-rate", type=int, default=2000, metavar="HZ", help="power sample rate")
    g.addoption(
        "--hil-sim-rail",
        choices=("work", "cpu"),
        default="work",
        help="a sim board's rail: a fixed cost per reply (work, repeatable) or its CPU time",
    )
    g.addoption("--hil-key", metavar="FILE", help="private key for bundles the suites build")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "boards(*names): only for boards with these profiles/tags")
    config.addinivalue_line("markers", "objective(name): the profile objective the test measures")
    out = config.getoption("--hil-report")
    if out and not getattr(config.option, "xmlpath", None):
        Path(out).mkdir(parents=True, exist_ok=True)
        config.option.xmlpath = str(Path(out) / "junit.xml")
    config.pluginmanager.register(_Reporter(config), "ocula-hil-reporter")


# -- objectives ------------------------------------------------------------------------------
def profile_objectives(profile: Any) -> dict[str, tuple[float, str, str]]:
    """Targets a board profile implies: name -> (target, unit, "max"|"min")."""
    p = profile
    out = {
        "power.average_w": (p.power.average_budget_w, "W", "max"),
        "power.burst_w": (p.power.burst_budget_w, "W", "max"),
        "rss_mb": (float(p.budget.max_rss_mb), "MiB", "max"),
        "energy.repeatability_pct": (2.0, "%", "max"),
    }
    if p.display.refresh_hz > 0:
        out["display.frame_ms"] = (1000.0 / p.display.refresh_hz, "ms", "max")
    if p.camera.fps > 0:
        out["camera.frame_ms"] = (1000.0 / p.camera.fps, "ms", "max")
    if p.audio.rate > 0:
        out["audio.dropped_samples"] = (0.0, "samples", "max")  # audio is never dropped
    o = p.objectives  # p90 of each app's event -> display latency
    out["caption_s"] = (o.caption_s, "s", "max")
    out["translation_s"] = (o.translation_s, "s", "max")
    out["answer_s"] = (o.answer_s, "s", "max")
    return out


class Objectives:
    """Records measurements against the profile's targets; a miss fails the test."""

    def __init__(self, profile: Any, record: TestRecord) -> None:
        self.targets = profile_objectives(profile)
        self.record_ = record

    def check(self, name: str, measured: float, target: float | None = None) -> None:
        if name not in self.targets and target is None:
            raise KeyError(f"unknown objective {name!r}; known: {sorted(self.targets)}")
        tgt, unit, kind = self.targets.get(name, (target, "", "max"))
        obj = Objective(name, float(target if target is not None else tgt), measured, unit, kind)
        self.record_.objectives.append(obj)
        assert obj.met, (
            f"objective {name} missed: measured {measured:.4g} {unit}, "
            f"target {'<=' if kind == 'max' else '>='} {obj.target:g} {unit}"
        )


# -- session fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def hil_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hil")


@pytest.fixture(scope="session")
def _board_session(request: pytest.FixtureRequest, hil_workdir: Path) -> Iterator[Any]:
    config = request.config
    url, profile, lease = config.getoption("--board-port"), None, None
    inv = config.getoption("--hil-inventory")
    if inv:
        from hil import inventory

        worker = getattr(config, "workerinput", {}).get("workerid", "main")
        lease = inventory.acquire(Path(inv), worker=worker, wait=60)
        url, profile = lease.board.port, lease.board.profile
        if lease.board.fixture:
            config.stash[FIXTURE_PORT] = lease.board.fixture
    if not url:
        yield None
        return
    from hil.targets import BoardUnderTest

    but = BoardUnderTest(url, hil_workdir / "board", profile=profile)
    try:
        bundle = config.getoption("--bundle")
        if bundle:
            but.hello()
            result = but.flash(Path(bundle))
            if not result.ok:
                from hil.errors import FlashFailure

                raise FlashFailure(f"{url}: --bundle {bundle} did not boot: {result.reason}")
        yield but
    finally:
        but.close()
        if lease:
            lease.release()


@pytest.fixture
def board(_board_session: Any, request: pytest.FixtureRequest) -> Any:
    if _board_session is None:
        pytest.skip(
            "needs a board: pass --board-port PORT (sim://sim, /dev/ttyACM0) or --hil-inventory FILE"
        )
    mark = request.node.get_closest_marker("boards")
    if mark and not ({_board_session.profile.name} & set(mark.args)):
        pytest.skip(f"only for boards {list(mark.args)}; this is {_board_session.profile.name}")
    if fixture_port(request.config):
        request.getfixturevalue("_power_session")  # the board's power goes through the fixture
    request.node.stash[BOARD] = _board_session
    _board_session.console.event(f"test {request.node.nodeid}")
    _board_session.evidence = type(_board_session.evidence)()
    _board_session.evidence.files["serial log"] = str(_board_session.console.path)
    return _board_session


@pytest.fixture
def link(board: Any) -> Any:
    board.hello()
    return board.client


@pytest.fixture(scope="session")
def _power_session(
    request: pytest.FixtureRequest, _board_session: Any, hil_workdir: Path
) -> Iterator[Any]:
    from hil.targets import PowerRig

    port = fixture_port(request.config)
    if _board_session is None and not port:
        yield None
        return
    rig = PowerRig(
        _board_session,
        hil_workdir / "power",
        port,
        request.config.getoption("--hil-rate"),
        model=request.config.getoption("--hil-sim-rail"),
    )
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def power(_power_session: Any) -> Any:
    if _power_session is None:
        pytest.skip("needs a power rig: pass --fixture-port PORT, or --board-port sim://NAME")
    return _power_session


@pytest.fixture
def fixture_mcu(power: Any) -> Any:
    return power.fixture


@pytest.fixture
def objectives(board: Any, request: pytest.FixtureRequest) -> Objectives:
    return Objectives(board.profile, _record(request.node))


@pytest.fixture
def hil_record(request: pytest.FixtureRequest) -> TestRecord:
    """The report entry of this test: add latencies, images, files to it."""
    return _record(request.node)


def _record(item: pytest.Item) -> TestRecord:
    return item.stash.setdefault(RECORD, TestRecord(item.nodeid))


# -- triage, retries, reports -----------------------------------------------------------------
def classify(excinfo: Any) -> tuple[str, str]:
    """(category, reason) of a failure, from the exception and its causes."""
    exc = excinfo.value if excinfo is not None else None
    reason = str(exc)[:2000] if exc else ""
    seen = exc
    while seen is not None:
        cat = getattr(seen, "category", None)
        if cat:
            return cat, reason
        name = type(seen).__name__
        if name in ("LinkLost", "SerialException", "SerialTimeoutException", "TimeoutError"):
            return "link", reason
        if name in ("BoardRefused", "BundleRejected"):
            return "flash", reason
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, AssertionError):
        return "assertion", reason
    return "error", reason


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    used = RECORD in item.stash or BOARD in item.stash
    if not used and not item.config.getoption("--hil-report"):
        return
    rec = _record(item)
    rec.seconds += report.duration
    if report.failed:
        rec.outcome = "failed"
        rec.category, rec.reason = classify(call.excinfo)
        report.user_properties.append(("hil_category", rec.category))
    elif report.skipped and report.when != "teardown":
        rec.outcome = "skipped"
        rec.reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    if report.when == "teardown" or (report.failed and report.when == "setup"):
        but = item.stash.get(BOARD, None)
        if but is not None:
            from hil.console import render

            rec.steps = list(but.evidence.steps)
            rec.chain = dict(but.evidence.chain)
            rec.images.update(but.evidence.images)
            rec.files.update(but.evidence.files)
            if rec.outcome == "failed":
                rec.console = render(but.console.path, limit=300)
        report.user_properties.append(("hil_record", json.dumps(_as_dict(rec), default=str)))


def _as_dict(rec: TestRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(rec)


def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    retries = item.config.getoption("--hil-retries")
    if not retries:
        return None
    from _pytest.runner import runtestprotocol

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for attempt in range(retries + 1):
        item.stash[RECORD] = TestRecord(item.nodeid, attempts=attempt + 1)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        failed = [r for r in reports if r.failed]
        cats = {dict(r.user_properties).get("hil_category") for r in failed}
        if not failed or not cats <= set(INFRA) or attempt == retries:
            break
    for r in reports:
        item.ihook.pytest_runtest_logreport(report=r)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


class _Reporter:
    """Collects the report entries (from this process or from xdist workers) and writes them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[dict[str, Any]] = []
        self.started = time.time()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if report.when == "teardown" and "hil_record" in props:
            self.records.append(json.loads(props["hil_record"]))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = self.config
        out = config.getoption("--hil-report")
        if not out or hasattr(config, "workerinput"):
            return
        from hil import report

        recs = []
        for d in self.records:
            objs = [Objective(**o) for o in d.pop("objectives", [])]
            d["steps"] = [tuple(s) for s in d.get("steps", [])]
            recs.append(TestRecord(**d, objectives=objs))
        meta = {
            "board": config.getoption("--board-port")
            or config.getoption("--hil-inventory")
            or "(none)",
            "bundle": config.getoption("--bundle") or "(none)",
            "fixture": fixture_port(config) or "(simulated or none)",
            "exit status": int(exitstatus),
            "seconds": round(time.time() - self.started, 1),
            "junit": getattr(config.option, "xmlpath", "") or "",
        }
        report.write(recs, Path(out), meta)
