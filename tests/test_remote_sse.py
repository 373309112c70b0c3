"""The event-stream reader: any split of the bytes gives the same events; limits hold."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.engine.remote.sse import SseError, SseEvent, SseParser


def _stream(pieces: list[str], newline: str) -> bytes:
    out = ": keep-alive comment\n"
    for p in pieces:
        out += "event: delta\n" if p.startswith("e") else ""
        out += f"data: {json.dumps({'choices': [{'delta': {'content': p}}]})}{newline}{newline}"
    out += f"data: [DONE]{newline}{newline}"
    return out.encode()


texts = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(pieces=texts, newline=st.sampled_from(["\n", "\r\n", "\r"]), data=st.data())
def test_any_split_gives_the_same_events(pieces: list[str], newline: str, data: st.DataObject):
    raw = _stream(pieces, newline)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=20)))
    parser = SseParser()
    events: list[SseEvent] = []
    last = 0
    for c in [*cuts, len(raw)]:
        events += parser.feed(raw[last:c])
        last = c
    got = [json.loads(e.data)["choices"][0]["delta"]["content"] for e in events[:-1]]
    assert got == pieces
    assert events[-1].data == "[DONE]"
    assert [e.event for e in events[:-1]] == [
        "delta" if p.startswith("e") else "message" for p in pieces
    ]


def test_multiline_data_is_joined_and_comments_ignored():
    events = SseParser().feed(b": hi\ndata: a\ndata: b\nid: 7\n\n")
    assert events == [SseEvent("a\nb", "message", "7")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_garbage_raises_only_sse_errors(raw: bytes):
    parser = SseParser(max_line=256, max_event=1024)
    try:
        for i in range(0, len(raw), 7):
            parser.feed(raw[i : i + 7])
    except SseError:
        pass


def test_a_line_without_end_is_refused_at_its_limit():
    parser = SseParser(max_line=1000)
    with pytest.raises(SseError, match="longer than 1000 bytes"):
        parser.feed(b"data: " + b"x" * 5000)


def test_an_event_over_its_limit_is_refused():
    parser = SseParser(max_event=100)
    with pytest.raises(SseError, match="larger than 100 bytes"):
        parser.feed(b"data: " + b"y" * 60 + b"\ndata: " + b"z" * 60 + b"\n")
