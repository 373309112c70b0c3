"""Bounded request/reply messages, and the Endpoint over a real pty (the board API over it:
tests/test_agent_api.py)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from runtime.link import messages as m
from runtime.link.endpoint import Endpoint
from runtime.link.errors import LinkClosed, LinkTimeout

SCHEMA = m.Schema(
    [
        m.Op("hello"),
        m.Op(
            "put",
            {"id": m.Bytes32(), "offset": m.Int(0, 1 << 40), "tags": m.List(m.Str(8), 4)},
            blob=4096,
            optional=("tags",),
        ),
    ]
)
CID = "ab" * 32


def _raw(header: bytes) -> bytes:
    return len(header).to_bytes(2, "big") + header


def test_round_trip_and_layout() -> None:
    payload = m.encode({"op": "put", "rid": 3}, b"\x00\xff")
    assert payload[:2] == len(b'{"op":"put","rid":3}').to_bytes(2, "big")
    assert m.decode(payload) == ({"op": "put", "rid": 3}, b"\x00\xff")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x00", "shorter"),
        (b"\xff\xff{}", "does not fit"),
        (_raw(b"[1,2]"), "not a JSON object"),
        (_raw(b'{"a":NaN}') + b"x", "NaN"),
        (_raw(b'{"a":1,"a":2}'), "duplicate"),
        (_raw(b"\xff\xfe{}"), "not acceptable JSON"),
    ],
)
def test_hostile_payloads_are_refused_with_a_reason(payload: bytes, why: str) -> None:
    with pytest.raises(m.MessageError, match=why):
        m.decode(payload)


def test_deep_nesting_and_big_blobs_are_refused_before_parsing() -> None:
    deep = ("[" * 5000 + "]" * 5000).encode()[:8000]
    with pytest.raises(m.MessageError, match="deeper"):
        m.decode(len(deep).to_bytes(2, "big") + deep)
    with pytest.raises(m.MessageError, match="blob"):
        m.decode(m.encode({"op": "x"}) + b"\x00" * (m.MAX_BLOB + 1))
    with pytest.raises(m.MessageError, match="header"):
        m.encode({"k": "v" * m.MAX_HEADER})


@pytest.mark.parametrize(
    ("header", "blob", "why"),
    [
        ({"op": "nope"}, b"", "unknown request 'nope'"),
        ({"op": "put", "offset": 0}, b"", "field 'id' is missing"),
        ({"op": "put", "id": CID, "offset": -1}, b"", "'offset' is outside"),
        ({"op": "put", "id": CID, "offset": True}, b"", "'offset' is not an integer"),
        ({"op": "put", "id": "../" * 20, "offset": 0}, b"", "not allowed"),
        ({"op": "put", "id": CID, "offset": 0, "x": 1}, b"", "unknown field"),
        ({"op": "put", "id": CID, "offset": 0, "tags": ["a"] * 5}, b"", "more than 4 items"),
        ({"op": "put", "id": CID, "offset": 0}, b"x" * 4097, "over 4096"),
    ],
)
def test_schema_refuses_what_the_op_does_not_declare(
    header: dict[str, Any], blob: bytes, why: str
) -> None:
    with pytest.raises(m.MessageError, match=why):
        SCHEMA.check_request(header, blob)


def test_schema_accepts_a_well_formed_request() -> None:
    op, fields = SCHEMA.check_request({"op": "put", "id": CID, "offset": 5, "tags": ["a"]}, b"")
    assert op.name == "put" and fields == {"id": CID, "offset": 5, "tags": ["a"]}


@given(st.binary(max_size=600))
def test_decode_raises_only_message_error(data: bytes) -> None:
    try:
        header, _ = m.decode(data)
    except m.MessageError:
        return
    assert isinstance(header, dict)


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=8))
def test_any_json_object_round_trips(header: dict[str, Any]) -> None:
    assert m.decode(m.encode(header, b"b"))[0] == json.loads(json.dumps(header))


# -- over a pty ---------------------------------------------------------------------------------


def test_a_silent_peer_times_out_and_abort_unblocks(pty_pair: tuple[int, int]) -> None:
    host_fd, _ = pty_pair
    with Endpoint(host_fd, name="host") as host:
        with pytest.raises(LinkTimeout, match="no answer to the link hello"):
            host.connect(timeout=0.3)
        timer = threading.Timer(0.1, host.abort)
        timer.start()
        with pytest.raises(LinkClosed, match="aborted"):
            host.recv(timeout=30)
        timer.join()


def test_a_port_without_a_file_descriptor_goes_through_read_and_write() -> None:
    """loop:// has no fileno (like rfc2217://): the endpoint uses the port's own read/write.
    On a loopback the endpoint talks to itself: its hello, its data and its acks come back.
    (loop:// holds 4 KiB and one thread both writes and reads it: messages stay small.)"""
    port = serial.serial_for_url("loop://", timeout=0.01)
    try:
        with Endpoint(port, name="loop") as ep:
            assert ep.connect(timeout=5).version == 1
            for n in (1, 200, 700):
                assert ep.request(b"echo" * n, timeout=5) == b"echo" * n
            assert ep.flush(timeout=5)
    finally:
        port.close()
