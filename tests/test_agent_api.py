"""The board API (runtime.agent.api): one table that the agent serves, the host's Board client
checks replies against, and the docs are generated from; over a real pty through the link."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from board.client import Board
from board.errors import BadReply, BoardRefused
from hil.sim import SimBoard
from runtime.agent import api
from runtime.agent.api import API, Api, registrar
from runtime.agent.errors import RequestError
from runtime.agent.serve import REBOOT, serve
from runtime.agent.service import HANDLERS, Agent, BootInfo
from runtime.agent.store import Store
from runtime.errors import UsageError
from runtime.link import messages as m
from runtime.link.endpoint import Endpoint
from runtime.profile import load_profile
from tests.conftest import ROOT

CID = "ab" * 32
TABLE = Api(
    [
        m.Op("hello", reply={"board": m.Str(16)}),
        m.Op(
            "put",
            {"id": m.Bytes32(), "offset": m.Int(0, 1 << 40), "tags": m.List(m.Str(8), 4)},
            blob=4096,
            optional=("tags",),
            reply={"stored": m.Int()},
        ),
    ]
)


def test_the_agent_serves_exactly_the_declared_ops() -> None:
    assert set(HANDLERS) == set(API.ops)
    API.check_handlers(HANDLERS)
    with pytest.raises(ValueError, match="does not declare"):
        registrar({})("nope")


def test_committed_protocol_docs_are_generated_from_the_table() -> None:
    committed = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert committed == API.markdown(), (
        "docs/protocol.md is stale: python -m runtime.agent.api --markdown --out docs/protocol.md"
    )
    out = subprocess.run(
        [sys.executable, "-m", "runtime.agent.api", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out == committed
    for op in API.ops:
        assert f"## `{op}`" in committed


def test_replies_are_held_to_their_declaration() -> None:
    TABLE.check_reply("put", {"ok": True, "_id": 3, "stored": 5})
    TABLE.check_reply("put", {"ok": False, "_id": 3, "error": "no", "kind": "RequestError"})
    for reply, why in [
        ({"ok": True}, "field 'stored' is missing"),
        ({"ok": True, "stored": "5"}, "'stored' is not an integer"),
        ({"ok": True, "stored": 5, "extra": 1}, "unknown field"),
        ({"ok": False}, "field 'error' is missing"),
        ({"stored": 5}, "'ok' is not true or false"),
    ]:
        with pytest.raises(m.MessageError, match=why):
            TABLE.check_reply("put", reply)


def test_board_calls_a_served_table_over_a_pty(pty_pair: tuple[int, int]) -> None:
    host_fd, dev_fd = pty_pair
    store: dict[str, bytes] = {}

    def put(agent: Any, fields: dict[str, Any], blob: bytes) -> api.Reply:
        store[fields["id"]] = blob
        return {"stored": len(blob)}, b""

    handlers: dict[str, api.Handler] = {
        "hello": lambda agent, f, b: ({"board": "sim"}, b""),
        "put": put,
    }

    def handle(op: str, fields: dict[str, Any], blob: bytes) -> api.Reply:
        try:
            TABLE.check_request(op, fields, blob)
        except RequestError as exc:
            return {"ok": False, "error": str(exc), "kind": "RequestError"}, b""
        reply, data = handlers[op](None, fields, blob)
        return {"ok": True, **reply}, data

    device = Endpoint(dev_fd, name="device")
    stop = threading.Event()
    server = threading.Thread(
        target=device.serve,
        args=(lambda p: api.handle_payload(handle, p), stop.is_set, 0.05),
    )
    server.start()
    client = Board(lambda: host_fd, name="pty", timeout=5, api=TABLE)
    try:
        assert client.call("hello")[0]["board"] == "sim"
        reply, _ = client.call("put", {"id": CID, "offset": 0}, b"\x00" * 4000)
        assert reply == {"stored": 4000, "ok": True, "_id": 2}
        with pytest.raises(BoardRefused, match="field 'offset' is outside") as refused:
            client.request("put", {"id": CID, "offset": -5})
        assert refused.value.kind == "RequestError" and refused.value.op == "put"
        # a late reply to an earlier request is skipped, not taken for the answer
        client.endpoint.send(m.encode({"ok": True, "board": "x", "_id": 999}))
        assert client.call("hello")[0]["_id"] == 4
        with pytest.raises(UsageError, match="no request 'reboot'"):
            client.call("reboot")
    finally:
        stop.set()
        server.join()
        device.close()
        client.close()
    assert store == {CID: b"\x00" * 4000}


# -- adding an op: its Op in a table and its handler, nothing else --------------------------------
ECHO = m.Op(
    "echo",
    doc="The text back, with the board's name, and the blob back.",
    fields={"text": m.Str(64)},
    blob=1024,
    reply={"text": m.Str(64), "board": m.Str(64)},
    reply_blob="the request's blob",
)
LIAR = m.Op("liar", doc="A handler that breaks its declaration.", reply={"n": m.Int()})


def _agent(root: Path, table: Api, handlers: dict[str, api.Handler]) -> Agent:
    SimBoard(root.name, profile="sim", base=root.parent).provision()
    profile = load_profile(root / "board.toml")
    return Agent(Store(root), profile, None, BootInfo(slot="factory"), table, handlers)


def test_a_new_op_is_its_declaration_and_its_handler(
    tmp_path: Path, pty_pair: tuple[int, int]
) -> None:
    """What adding a request to the board takes: an `Op` in the table and a handler registered
    against it. The real agent serves it over a real link and the Board client speaks it; the
    docs list it; nothing else is touched."""
    table = API.with_ops(ECHO, LIAR)
    handlers = dict(HANDLERS)
    handles = registrar(handlers, table)

    @handles("echo")
    def echo(agent: Agent, fields: dict[str, Any], blob: bytes) -> api.Reply:
        return {"text": fields["text"], "board": agent.profile.name}, blob

    @handles("liar")
    def liar(agent: Agent, fields: dict[str, Any], blob: bytes) -> api.Reply:
        return {"n": "not a number"}, b""

    host_fd, dev_fd = pty_pair
    agent = _agent(tmp_path / "sim", table, handlers)
    result: list[int] = []
    server = threading.Thread(target=lambda: result.append(serve(agent, dev_fd)))
    server.start()
    client = Board(lambda: host_fd, name="pty", timeout=10, api=table)
    try:
        reply, blob = client.request("echo", {"text": "hi"}, b"\x01\x02")
        assert (reply["text"], reply["board"], blob) == ("hi", "sim", b"\x01\x02")
        with pytest.raises(BoardRefused, match="request 'echo': field 'text' is not a string"):
            client.request("echo", {"text": 5})
        with pytest.raises(BoardRefused, match="data of 1025 bytes is over 1024"):
            client.request("echo", {"text": "hi"}, b"x" * 1025)
        with pytest.raises(BadReply, match="reply to 'liar': field 'n' is not an integer"):
            client.request("liar")
        assert client.request("hello")[0]["board"] == "sim"  # the stock ops still served
        client.request("reboot")
    finally:
        server.join(timeout=30)
        client.close()
    assert result == [REBOOT]
    assert "## `echo`" in table.markdown() and "## `echo`" not in API.markdown()
    # the stock table knows nothing of it, on either side
    with pytest.raises(UsageError, match="no request 'echo'"):
        Board(lambda: host_fd, name="pty").call("echo", {"text": "hi"})
    stock = _agent(tmp_path / "stock", API, HANDLERS)
    reply, _ = stock.handle("echo", {"text": "hi"}, b"")
    assert not reply["ok"] and "unknown request 'echo'" in reply["error"]
    with pytest.raises(ValueError, match="ops without a handler: \\['echo', 'liar'\\]"):
        Agent(Store(tmp_path / "stock"), agent.profile, None, BootInfo(slot="factory"), table)


def test_every_error_reply_names_its_kind(tmp_path: Path) -> None:
    """A request without an op, and a handler that fails of a bug, get error replies with a
    kind as every other refusal does; the agent serves the next request."""
    crash = m.Op("crash", doc="A handler with a bug.")
    table = API.with_ops(crash)
    handlers = dict(HANDLERS)

    @registrar(handlers, table)("crash")
    def crashes(agent: Agent, fields: dict[str, Any], blob: bytes) -> api.Reply:
        return {"n": {}["missing"]}, b""

    agent = _agent(tmp_path / "sim", table, handlers)
    no_op = api.decode(api.handle_payload(agent.handle, api.encode({"_id": 7})))[0]
    assert (no_op["ok"], no_op["kind"], no_op["_id"]) == (False, "RequestError", 7)
    reply = api.decode(api.handle_payload(agent.handle, api.encode({"op": "crash", "_id": 8})))[0]
    assert (reply["ok"], reply["kind"]) == (False, "InternalError")
    assert reply["error"].startswith("internal error in 'crash': KeyError")
    assert agent.handle("hello", {}, b"")[0]["ok"]


SAFE_OPS = sorted(set(API.ops) - {"reboot", "run"})  # those two end or occupy the session
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _hostile_request(draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(SAFE_OPS) | st.text(max_size=40))
    declared = [*API.ops[op].fields] if op in API.ops else []
    names = st.sampled_from(declared) | st.text(max_size=12) if declared else st.text(max_size=12)
    fields = draw(st.dictionaries(names, JSONISH, max_size=6))
    blob = draw(st.binary(max_size=64))
    try:
        return api.encode({"op": op, "_id": draw(st.integers(0, 1 << 60)), **fields}, blob)
    except api.RpcError:  # over the header limit: the link refuses it before the agent
        reject()


def test_hostile_requests_get_error_replies_from_the_real_agent(tmp_path: Path) -> None:
    """Any request the table lets through or refuses: one reply, never an exception out of
    the agent, and never a handler crashing on a field the table accepted ("internal error")."""
    agent = _agent(tmp_path / "sim", API, HANDLERS)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(payload=_hostile_request())
    def serve_one(payload: bytes) -> None:
        reply, _ = api.decode(api.handle_payload(agent.handle, payload))
        assert isinstance(reply["ok"], bool)
        if not reply["ok"]:
            assert isinstance(reply["error"], str) and reply["error"]
            assert not reply["error"].startswith("internal error"), reply["error"]
            assert isinstance(reply["kind"], str) and reply["kind"] != "InternalError", reply

    serve_one()
    assert agent.handle("hello", {}, b"")[0]["ok"]  # still serving
