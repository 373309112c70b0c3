"""The reliable layer in virtual time: two Connections wired through a simulated serial line.

The line keeps order (a UART does), runs at a byte rate with a latency, and can flip bits,
drop bytes, insert garbage and go dead for a while. Time only moves when the simulation says
so, so a test of "60 s of a noisy line" runs in milliseconds and never sleeps.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.link import framing
from runtime.link.connection import (
    HEADER,
    HELLO,
    NEED_DATA,
    RST,
    RST_VERSION,
    Closed,
    Connected,
    Connection,
    Message,
    State,
)
from runtime.link.errors import LinkUsage


@dataclass
class Faults:
    ber: float = 0.0  # probability of a flipped bit, per bit
    drop: float = 0.0  # probability of a lost byte
    garbage: float = 0.0  # probability that a burst of frames is followed by junk bytes
    dup: float = 0.0  # probability that a write arrives twice (not a UART fault: a stress)
    cuts: list[tuple[float, float]] = field(default_factory=list)  # (from, to) dead line


class Line:
    """One direction: ordered, `rate` bytes/s, `latency` s, with faults."""

    def __init__(self, rng: random.Random, faults: Faults, rate: float, latency: float) -> None:
        self.rng, self.faults, self.rate, self.latency = rng, faults, rate, latency
        self.queue: list[tuple[float, bytes]] = []
        self.busy_until = 0.0

    def write(self, data: bytes, now: float) -> None:
        if data and self.faults.garbage and self.rng.random() < self.faults.garbage:
            data += self.rng.randbytes(self.rng.randrange(1, 40))  # junk after a burst
        if data and self.faults.dup and self.rng.random() < self.faults.dup:
            data += data
        for i in range(0, len(data), 128):  # bytes arrive as they come off the line
            self._write(data[i : i + 128], now)

    def _write(self, data: bytes, now: float) -> None:
        f, rng = self.faults, self.rng
        start = max(now, self.busy_until)
        self.busy_until = start + len(data) / self.rate
        arrive = self.busy_until + self.latency
        if any(a <= arrive <= b for a, b in f.cuts):
            return
        out = bytearray()
        for b in data:
            if f.drop and rng.random() < f.drop:
                continue
            if f.ber:
                for bit in range(8):
                    if rng.random() < f.ber:
                        b ^= 1 << bit
            out.append(b)
        self.queue.append((arrive, bytes(out)))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def deliver(self, conn: Connection, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.pop(0)
            i = 0
            while i < len(data):  # any split
                n = self.rng.randrange(1, 300)
                conn.receive_data(data[i : i + n], now)
                i += n


class Sim:
    def __init__(
        self,
        seed: int = 0,
        faults: Faults | None = None,
        rate: float = 92160.0,
        latency: float = 0.002,
        a: Connection | None = None,
        b: Connection | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        faults = faults or Faults()
        self.a = a or Connection()
        self.b = b or Connection()
        self.ab = Line(self.rng, faults, rate, latency)
        self.ba = Line(self.rng, faults, rate, latency)
        self.now = 0.0
        self.got: dict[str, list[object]] = {"a": [], "b": []}
        self.reading = {"a": True, "b": True}

    def step(self) -> None:
        for name, conn, line in (("a", self.a, self.ab), ("b", self.b, self.ba)):
            conn.poll(self.now)
            has_output = conn.has_output
            out = conn.data_to_send(self.now)
            assert bool(out) == has_output  # what an adapter relies on before it waits
            line.write(out, self.now)
            if self.reading[name]:
                while (ev := conn.next_event()) is not NEED_DATA:
                    self.got[name].append(ev)
        times = [t for t in (self.ab.next_time(), self.ba.next_time()) if t is not None]
        times += [t for t in (self.a.next_deadline(), self.b.next_deadline()) if t is not None]
        nxt = min(times) if times else self.now + 0.05
        self.now = max(nxt, self.now + 1e-6)
        self.ab.deliver(self.b, self.now)
        self.ba.deliver(self.a, self.now)

    def run_until(self, cond: object, limit: float = 120.0) -> None:
        while not cond():  # type: ignore[operator]
            assert self.now < limit, f"not done after {limit} virtual s: {self.a.stats}"
            self.step()

    def messages(self, name: str) -> list[bytes]:
        return [e.data for e in self.got[name] if isinstance(e, Message)]


def open_pair(sim: Sim) -> None:
    sim.a.connect(sim.now)
    sim.run_until(lambda: sim.a.state is State.OPEN and sim.b.state is State.OPEN)
    sim.step()  # hand the Connected events over


def test_hello_agrees_on_version_and_the_smaller_frame() -> None:
    sim = Sim(a=Connection(max_payload=512, window=8), b=Connection(max_payload=2048, window=16))
    open_pair(sim)
    ca = next(e for e in sim.got["a"] if isinstance(e, Connected))
    cb = next(e for e in sim.got["b"] if isinstance(e, Connected))
    assert ca.session == cb.session
    assert ca.version == cb.version == 1
    assert ca.max_payload == cb.max_payload == 512
    assert (ca.peer_window, cb.peer_window) == (16, 8)


def test_a_hello_of_an_unknown_version_is_refused_with_a_reason() -> None:
    b = Connection()
    hello = HEADER.pack(2 << 4 | HELLO, 0, 77, 0, 0, 32, 0) + struct.pack("<BBHH", 2, 3, 1024, 8)
    b.receive_data(framing.encode(hello), 0.0)
    (frame,) = framing.Decoder().feed(b.data_to_send(0.0))
    vt, _, session, *_ = HEADER.unpack_from(frame)
    assert (vt & 0x0F, session, frame[HEADER.size]) == (RST, 77, RST_VERSION)
    assert b"versions 2-3" in frame
    assert b.state is State.IDLE


def test_messages_of_any_size_arrive_whole_and_in_order() -> None:
    sim = Sim()
    open_pair(sim)
    sizes = [0, 1, 1012, 1013, 5000, 70_000, 3]
    sent = [bytes([i]) * n for i, n in enumerate(sizes)]
    for m in sent:
        sim.a.send(m)
    sim.b.send(b"reply")
    sim.run_until(lambda: len(sim.messages("b")) == len(sent) and sim.messages("a"))
    assert sim.messages("b") == sent
    assert sim.messages("a") == [b"reply"]
    assert sim.a.stats["retransmits"] == 0


def test_a_clean_line_stays_busy_at_921600_baud() -> None:
    """Window and acks keep the line full: payload bytes per line byte stay above 95%."""
    sim = Sim(rate=92160.0, latency=0.003)
    open_pair(sim)
    start = sim.now
    total = 0
    for _ in range(40):
        sim.a.send(b"\x5a" * 32768)
        total += 32768
    sim.run_until(lambda: len(sim.messages("b")) == 40)
    assert total / ((sim.now - start) * 92160.0) > 0.95


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(0, 6000), min_size=1, max_size=12),
    ber=st.sampled_from([0.0, 1e-5, 1e-4, 2e-4]),
    drop=st.sampled_from([0.0, 1e-4, 1e-3]),
    garbage=st.sampled_from([0.0, 0.05, 0.3]),
    dup=st.sampled_from([0.0, 0.2]),
    cut=st.one_of(st.none(), st.tuples(st.floats(0.01, 2.0), st.floats(0.01, 3.0))),
)
def test_a_faulty_line_delivers_every_message_once_in_order_uncorrupted(
    seed: int,
    sizes: list[int],
    ber: float,
    drop: float,
    garbage: float,
    dup: float,
    cut: tuple[float, float] | None,
) -> None:
    cuts = [(cut[0], cut[0] + cut[1])] if cut else []
    sim = Sim(seed, Faults(ber=ber, drop=drop, garbage=garbage, dup=dup, cuts=cuts))
    rng = random.Random(seed)
    open_pair(sim)
    sent_a = [rng.randbytes(n) for n in sizes]
    sent_b = [rng.randbytes(n // 3) for n in sizes]
    for m in sent_a:
        sim.a.send(m)
    for m in sent_b:
        sim.b.send(m)
    sim.run_until(
        lambda: len(sim.messages("b")) >= len(sent_a) and len(sim.messages("a")) >= len(sent_b),
        limit=600.0,
    )
    sim.run_until(lambda: sim.a.idle and sim.b.idle, limit=1200.0)
    assert sim.messages("b") == sent_a
    assert sim.messages("a") == sent_b
    assert not [e for e in sim.got["a"] + sim.got["b"] if isinstance(e, Closed)]


def test_resumes_within_a_second_after_a_cut_line() -> None:
    sim = Sim(faults=Faults(cuts=[(0.5, 10.5)]))
    open_pair(sim)
    for _ in range(200):
        sim.a.send(b"x" * 1000)
    sim.run_until(lambda: sim.now > 10.5)
    before = len(sim.messages("b"))
    sim.run_until(lambda: len(sim.messages("b")) > before)
    assert sim.now < 10.5 + 1.0
    sim.run_until(lambda: len(sim.messages("b")) == 200)


def test_a_slow_reader_is_never_overrun_and_memory_stays_bounded() -> None:
    sim = Sim(a=Connection(window=8), b=Connection(window=8))
    open_pair(sim)
    sim.reading["b"] = False
    for _ in range(100):
        sim.a.send(b"y" * 3000)
    until = sim.now + 30.0
    sim.run_until(lambda: sim.now > until)
    b = sim.b
    held = sum(len(e.data) for e in b._events if isinstance(e, Message))
    assert held <= 8 * 1024 + 3000  # at most a window of frames plus one message being built
    assert len(b._ooo) <= 8
    assert b.stats["out_of_window"] == 0  # the sender respected the window
    assert sim.a.stats["frames_out"] < 40  # it stopped; probes are ACKs, not data
    sim.reading["b"] = True
    sim.run_until(lambda: len(sim.messages("b")) == 100)
    assert sim.messages("b") == [b"y" * 3000] * 100


def test_a_restarted_peer_resets_the_link_and_a_new_hello_recovers() -> None:
    sim = Sim()
    open_pair(sim)
    sim.b = Connection()  # the device rebooted: a fresh state machine, no session
    sim.a.send(b"are you there")
    sim.run_until(lambda: sim.a.state is State.CLOSED)
    sim.step()
    closed = [e for e in sim.got["a"] if isinstance(e, Closed)]
    assert "restarted" in closed[0].reason
    with pytest.raises(LinkUsage):
        sim.a.send(b"while closed")
    open_pair(sim)
    sim.a.send(b"again")
    sim.run_until(lambda: sim.messages("b") == [b"again"])


def test_a_lost_hello_ack_does_not_reset_the_session() -> None:
    sim = Sim()
    sim.a.connect(0.0)
    # deliver the HELLO to b, lose b's HELLO_ACK
    sim.b.receive_data(sim.a.data_to_send(0.0), 0.0)
    assert sim.b.state is State.OPEN
    sim.b.send(b"early")
    sim.b.data_to_send(0.0)  # lost too
    sim.now = 0.01
    sim.run_until(lambda: sim.messages("a") == [b"early"])
    assert sim.b.stats["dropped_messages"] == 0


def test_crossing_hellos_settle_on_one_session_and_keep_what_was_queued() -> None:
    sim = Sim(a=Connection(session=100), b=Connection(session=200))
    sim.a.connect(0.0)
    sim.b.connect(0.0)
    sim.a.send(b"from a" * 500)
    sim.b.send(b"from b")
    sim.run_until(lambda: sim.a.state is State.OPEN and sim.b.state is State.OPEN)
    assert sim.a.session == sim.b.session == 200
    sim.run_until(lambda: sim.messages("b") and sim.messages("a"))
    assert sim.messages("b") == [b"from a" * 500]
    assert sim.messages("a") == [b"from b"]
    assert sim.a.stats["dropped_messages"] == sim.b.stats["dropped_messages"] == 0


def test_a_message_queued_before_the_hello_is_cut_at_the_agreed_frame_size() -> None:
    sim = Sim(a=Connection(max_payload=4096), b=Connection(max_payload=128))
    sim.a.connect(0.0)
    sim.a.send(bytes(range(256)) * 20)
    sim.run_until(lambda: sim.messages("b"))
    assert sim.messages("b") == [bytes(range(256)) * 20]
    assert sim.b.decoder.oversize == 0


def test_a_message_over_the_limit_closes_the_link_on_both_sides() -> None:
    sim = Sim(a=Connection(), b=Connection(max_message=10_000))
    open_pair(sim)
    sim.a.send(b"z" * 20_000)
    sim.run_until(lambda: sim.a.state is State.CLOSED and sim.b.state is State.CLOSED)
    sim.step()
    assert any("over 10000 bytes" in e.reason for e in sim.got["a"] if isinstance(e, Closed))
    with pytest.raises(LinkUsage, match="limit"):
        Connection(max_message=10).send(b"x" * 11)


def test_frames_of_another_session_are_dropped() -> None:
    sim = Sim()
    open_pair(sim)
    stale = Connection(session=sim.a.session ^ 0x5555)
    stale.connect(0.0)
    stale.data_to_send(0.0)
    stale.state = State.OPEN  # pretend: a frame of a session b never agreed to
    stale.send(b"stale")
    sim.b.receive_data(stale.data_to_send(0.0), sim.now)
    assert sim.b.next_event() is NEED_DATA or sim.messages("b") == []
    assert sim.b.stats["other_session"] == 1


def test_a_flood_of_stale_frames_gets_few_resets() -> None:
    stale = Connection(session=4242)
    stale.connect(0.0)
    stale.data_to_send(0.0)
    stale.state = State.OPEN
    stale._peer_wnd = 32  # pretend a peer once opened a window of 32 frames
    for _ in range(500):
        stale.send(b"old")
    flood = stale.data_to_send(0.0) * 20  # 20 copies of a window of frames, all at once
    fresh = Connection()
    fresh.receive_data(flood, 0.0)
    resets = framing.Decoder().feed(fresh.data_to_send(0.0))
    assert fresh.stats["other_session"] == 20 * 32
    assert len(resets) == 1
    assert fresh.next_event() is NEED_DATA


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(
        st.tuples(
            st.integers(0, 255),  # ver/type
            st.integers(0, 255),  # flags
            st.sampled_from(["ours", "other"]),
            st.integers(0, 0xFFFF),  # seq
            st.integers(0, 0xFFFF),  # ack
            st.integers(0, 0xFFFF),  # wnd
            st.integers(0, 255),  # attempt
            st.binary(max_size=300),
        ),
        max_size=30,
    )
)
def test_a_hostile_peer_with_valid_crcs_cannot_make_it_raise_or_grow(
    frames: list[tuple[int, int, str, int, int, int, int, bytes]],
) -> None:
    """Frames that pass the CRC but carry any header: the connection drops, resets or closes,
    never raises, and keeps its buffers within the window."""
    sim = Sim()
    open_pair(sim)
    sim.b.send(b"pending" * 300)
    sim.b.data_to_send(sim.now)
    for vt, flags, whose, seq, ack, wnd, attempt, body in frames:
        session = sim.b.session if whose == "ours" else sim.b.session ^ 0x00FF
        payload = HEADER.pack(vt, flags, session, seq, ack, wnd, attempt) + body
        sim.b.receive_data(framing.encode(payload), sim.now)
        sim.b.poll(sim.now + 1.0)
        sim.b.data_to_send(sim.now + 1.0)
        while sim.b.next_event() is not NEED_DATA:
            pass
    b = sim.b
    assert len(b._ooo) <= b.window
    assert b._partial_size <= b.max_message
    assert len(b._inflight) <= 1024
