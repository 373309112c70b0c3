"""Reliable, ordered messages over frames: the link's state machine, sans-IO.

Bytes in, events out, time passed in; no port, no thread, no clock inside (like h11):

    conn = Connection()
    conn.send(b"request")                 # queue a message (any size up to max_message)
    wire.write(conn.data_to_send(now))    # frames to put on the line
    conn.receive_data(wire.read(), now)   # bytes from the line, any split
    conn.poll(now)                        # timers: retransmit, hello, window probe
    ev = conn.next_event()                # Connected | Message | Closed | NEED_DATA
    conn.next_deadline()                  # when poll() has work next (for select's timeout)

The frame format (header, types, hello, acks, resets) is in `header`. Every frame carries the
session, the cumulative ack and the receive window; DATA frames carry a piece of one message.

Loss recovery relies on the serial line keeping order: when an ACK shows that a transmission
arrived, every frame sent before it and still unacknowledged is lost and is sent again at once
(RACK, exactly, thanks to the echoed attempt). A retransmission timer (RTT-adaptive) covers a
tail loss or a cut line: it resends the oldest frame only, and the ACK that answers it triggers
the rest. It backs off (to at most `BACKOFF_CAP`) only once the peer has been silent that long;
while the peer is heard from, a lost frame on a noisy line is probed for again after one RTO.
Duplicates are acknowledged again and dropped.

Either side may start: `connect(now)` (or the first `send`) sends HELLO; a side that receives a
HELLO of a new session adopts it, dropping the old session's state. Two hellos crossing are
settled by the larger session id. States and transitions are the table `TRANSITIONS` below.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from dataclasses import dataclass

from runtime.link import framing
from runtime.link.errors import LinkUsage
from runtime.link.header import (
    ACK,
    DATA,
    FLAG_MORE,
    FLAG_PROBE,
    HEADER,
    HELLO,
    HELLO_ACK,
    HELLO_BODY,
    MIN_FRAME,
    MIN_VERSION,
    PROTOCOL_VERSION,
    RST,
    RST_PROTOCOL,
    RST_UNKNOWN,
    RST_VERSION,
    rst_frame,
    rst_reason,
)
from runtime.link.header import seq_diff as _diff

__all__ = [
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Closed",
    "Connected",
    "Connection",
    "Event",
    "Message",
    "State",
]

DEFAULT_MAX_PAYLOAD = 1024
DEFAULT_WINDOW = 32
MAX_WINDOW = 1024  # well under half the 16-bit sequence space
DEFAULT_MAX_MESSAGE = 1 << 20
RTO_INITIAL = 0.25
RTO_MIN = 0.03
RTO_MAX = 3.0  # the RTT-derived timeout never exceeds this
BACKOFF_CAP = 0.5  # backing off never stretches a timeout past max(RTO, this): a cut line
# that comes back is noticed within about this long


class State(enum.Enum):
    IDLE = "idle"  # no session yet; a HELLO from the peer opens one
    CONNECTING = "connecting"  # our HELLO is out; waiting for HELLO_ACK
    OPEN = "open"
    CLOSED = "closed"  # reset by the peer, refused, or protocol error; connect() again


# (state, input) -> next state. Inputs: connect (local), hello / hello_ack / rst (from the peer,
# for our session or a new one), fail (a protocol error). Pairs not listed leave the state as
# it is and the input is dropped (counted in `stats["ignored"]`).
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.IDLE, "connect"): State.CONNECTING,
    (State.OPEN, "connect"): State.CONNECTING,
    (State.CLOSED, "connect"): State.CONNECTING,
    (State.CONNECTING, "connect"): State.CONNECTING,
    (State.IDLE, "hello"): State.OPEN,
    (State.CONNECTING, "hello"): State.OPEN,  # crossing hellos: the larger session wins
    (State.OPEN, "hello"): State.OPEN,  # a repeated hello, or the peer restarted
    (State.CLOSED, "hello"): State.OPEN,
    (State.CONNECTING, "hello_ack"): State.OPEN,
    (State.CONNECTING, "rst"): State.CLOSED,
    (State.OPEN, "rst"): State.CLOSED,
    (State.OPEN, "fail"): State.CLOSED,
    (State.CONNECTING, "fail"): State.CLOSED,
}


@dataclass(frozen=True)
class Connected:
    session: int
    version: int
    max_payload: int
    peer_window: int


@dataclass(frozen=True)
class Message:
    data: bytes


@dataclass(frozen=True)
class Closed:
    reason: str


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
Event = Connected | Message | Closed | _NeedData


class _Out:
    """A DATA frame sent and not yet acknowledged."""

    __slots__ = ("data", "flags", "lost", "sent_at", "seq", "tx")

    def __init__(self, seq: int, flags: int, data: bytes) -> None:
        self.seq = seq
        self.flags = flags
        self.data = data
        self.tx: list[int] = []  # transmission order of each attempt
        self.sent_at: list[float] = []
        self.lost = False


class Connection:
    """One end of the link. Not thread-safe: one adapter drives it."""

    def __init__(
        self,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        window: int = DEFAULT_WINDOW,
        max_message: int = DEFAULT_MAX_MESSAGE,
        session: int | None = None,
    ) -> None:
        if not MIN_FRAME <= max_payload <= 0xFFFF:
            raise LinkUsage(f"max_payload {max_payload} is outside {MIN_FRAME}..65535 bytes")
        if not 1 <= window <= MAX_WINDOW:
            raise LinkUsage(f"window {window} is outside 1..{MAX_WINDOW} frames")
        self.max_payload = max_payload
        self.window = window
        self.max_message = max_message
        self._fixed_session = session
        self.state = State.IDLE
        self.session = 0
        self.version = 0
        self.frame_payload = max_payload  # agreed by the hello
        self.decoder = framing.Decoder(max_payload)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "frames_in",
                "frames_out",
                "retransmits",
                "timeouts",
                "duplicates",
                "out_of_window",
                "bad_header",
                "other_session",
                "ignored",
                "messages_in",
                "messages_out",
                "dropped_messages",
            ),
            0,
        )
        self._events: deque[Connected | Message | Closed] = deque()
        self._control: list[bytes] = []  # HELLO, HELLO_ACK, RST payloads to send
        self._hello_at = -1.0
        self._hello_rto = RTO_INITIAL
        self.last_heard = -1.0
        self._last_rst = (-1, 0.0)
        self._reset_session_state()

    # -- state -----------------------------------------------------------------------------------
    def _reset_session_state(self) -> None:
        # sending
        self._unsent: deque[bytes] = deque()  # messages not yet (fully) numbered
        self._cursor = 0  # bytes of the first unsent message already cut into frames
        self._unsent_bytes = 0
        self._inflight: dict[int, _Out] = {}  # seq -> frame, in seq order
        self._snd_nxt = 0
        self._peer_ack = 0
        self._peer_wnd = 1
        self._tx = 0
        self._srtt = -1.0
        self._rttvar = 0.0
        self._rto = RTO_INITIAL
        self._backoff = 1
        self._probe_at = -1.0
        self._progress_at = -1.0  # when an ACK last acknowledged new frames (restarts the timer)
        # receiving
        self._rcv_nxt = 0
        self._ooo: dict[int, tuple[int, bytes]] = {}
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._held = 0  # frames of messages delivered to the queue but not yet taken
        self._held_msgs: deque[int] = deque()  # frames of each queued Message event
        self._ack_due = False
        self._echo = (0, 0xFF)  # (seq, attempt) of the last DATA in; 0xFF: none yet
        self._advertised = self.window
        self._edge = self.window  # first seq past the window last advertised (never shrinks)

    def _move(self, what: str) -> bool:
        nxt = TRANSITIONS.get((self.state, what))
        if nxt is None:
            self.stats["ignored"] += 1
            return False
        self.state = nxt
        return True

    def connect(self, now: float) -> None:
        """Start a new session: HELLO goes out with the next data_to_send()."""
        self._move("connect")
        self._drop_session()
        self.session = self._new_session()
        self._hello_at = -1.0
        self._hello_rto = RTO_INITIAL

    def _new_session(self) -> int:
        if self._fixed_session is not None:
            return self._fixed_session & 0xFFFF or 1
        return int.from_bytes(os.urandom(2), "little") or 1

    def _drop_session(self) -> None:
        dropped = len(self._held_msgs) + len(self._unsent)
        dropped += sum(1 for o in self._inflight.values() if not o.flags & FLAG_MORE)
        self.stats["dropped_messages"] += dropped
        self._events = deque(e for e in self._events if not isinstance(e, Message))
        self._reset_session_state()

    # -- the caller's API ------------------------------------------------------------------------
    def send(self, payload: bytes) -> None:
        """Queue one message. It goes out in order, split into frames, once the link is open."""
        if len(payload) > self.max_message:
            raise LinkUsage(
                f"message of {len(payload)} bytes is over the link's {self.max_message}-byte limit"
            )
        if self.state in (State.IDLE, State.CLOSED):
            raise LinkUsage(f"send() on a link that is {self.state.value}; call connect() first")
        data = bytes(payload)
        self._unsent.append(data)  # cut into frames when sent, at the size agreed by then
        self._unsent_bytes += len(data)
        self.stats["messages_out"] += 1

    @property
    def pending_bytes(self) -> int:
        """Message bytes queued or in flight (not yet acknowledged): the adapter's back-pressure."""
        return self._unsent_bytes + sum(len(o.data) for o in self._inflight.values())

    @property
    def idle(self) -> bool:
        """True when everything sent has been acknowledged and nothing waits to go out."""
        return not self._unsent and not self._inflight and not self._control

    @property
    def has_output(self) -> bool:
        """True when data_to_send() would return something now (call it before waiting)."""
        if self._control or (self.state is State.CONNECTING and self._hello_at < 0):
            return True
        if self.state is not State.OPEN:
            return False
        if self._ack_due or any(o.lost for o in self._inflight.values()):
            return True
        return bool(self._unsent) and _diff(self._snd_nxt, self._peer_ack) < self._peer_wnd

    def next_event(self) -> Event:
        if not self._events:
            return NEED_DATA
        ev = self._events.popleft()
        if isinstance(ev, Message):
            self._held -= self._held_msgs.popleft()
            if self._room() >= max(1, self.window // 2) > self._advertised:
                self._ack_due = True  # the window reopened: tell the peer
        return ev

    def receive_data(self, data: bytes, now: float) -> None:
        for payload in self.decoder.feed(data):
            self._on_frame(payload, now)

    def next_deadline(self) -> float | None:
        """The time poll() next has work to do, or None when only input can make progress."""
        times = []
        if self.state is State.CONNECTING and self._hello_at >= 0:
            times.append(self._hello_at + self._hello_rto)
        if self.state is State.OPEN:
            oldest = self._oldest_unacked()
            if oldest is not None:
                times.append(self._timer_base(oldest) + self._timeout())
            elif not self._inflight and self._unsent and self._probe_at >= 0:
                times.append(self._probe_at + self._timeout())
        return min(times) if times else None

    def poll(self, now: float) -> None:
        """Run the timers due at `now`."""
        hello_due = self._hello_at >= 0 and now >= self._hello_at + self._hello_rto
        if self.state is State.CONNECTING and hello_due:
            self._hello_at = -1.0  # resend
            self._hello_rto = min(self._hello_rto * 2, BACKOFF_CAP)
        if self.state is not State.OPEN:
            return
        oldest = self._oldest_unacked()
        if oldest is not None:
            if now >= self._timer_base(oldest) + self._timeout():
                oldest.lost = True
                self.stats["timeouts"] += 1
                if now - self.last_heard > BACKOFF_CAP:
                    self._backoff = min(self._backoff * 2, 64)  # the peer went quiet: back off
                else:
                    self._backoff = 1  # the peer is alive (a noisy line): probe again soon
        elif self._inflight or not self._unsent or self._probe_at < 0:
            pass
        elif now >= self._probe_at + self._timeout():
            self._probe_at = -1.0  # the window is shut: ask the peer for an ACK
            self._control.append(self._ack_frame(FLAG_PROBE))

    def data_to_send(self, now: float, limit: int | None = None) -> bytes:
        """Frames due now (control, ACK, retransmissions, then new data within the window).

        `limit` caps the bytes of DATA returned (at least one frame is returned when any is
        due), so an adapter can hand over only what the port can take right away.
        """
        out = bytearray()
        if self.state is State.CONNECTING and self._hello_at < 0:
            self._hello_at = now
            out += framing.encode(self._hello(HELLO))
        for payload in self._control:
            out += framing.encode(payload)
        self._control.clear()
        if self.state is not State.OPEN:
            return bytes(out)
        if self._ack_due:
            out += framing.encode(self._ack_frame(0))
            self._ack_due = False
        budget = limit if limit is not None else 1 << 62
        for o in list(self._inflight.values()):
            if o.lost and budget > 0:
                out += self._transmit(o, now)
                budget -= len(o.data) + HEADER.size
                self.stats["retransmits"] += 1
        while self._unsent and budget > 0:
            if _diff(self._snd_nxt, self._peer_ack) >= self._peer_wnd:
                if not self._inflight and self._probe_at < 0:
                    self._probe_at = now
                break
            flags, piece = self._next_piece()
            o = _Out(self._snd_nxt, flags, piece)
            self._snd_nxt = (self._snd_nxt + 1) & 0xFFFF
            self._inflight[o.seq] = o
            out += self._transmit(o, now)
            budget -= len(piece) + HEADER.size
        return bytes(out)

    # -- sending helpers ---------------------------------------------------------------------------
    def _next_piece(self) -> tuple[int, bytes]:
        message = self._unsent[0]
        end = self._cursor + self.frame_payload - HEADER.size
        piece = message[self._cursor : end]
        self._unsent_bytes -= len(piece)
        if end < len(message):
            self._cursor = end
            return FLAG_MORE, piece
        self._unsent.popleft()
        self._cursor = 0
        return 0, piece

    def _header(self, kind: int, flags: int, seq: int, attempt: int) -> bytes:
        self._advertised = self._room()
        edge = (self._rcv_nxt + self._advertised) & 0xFFFF
        if _diff(edge, self._edge) > 0:
            self._edge = edge
        return HEADER.pack(
            PROTOCOL_VERSION << 4 | kind,
            flags,
            self.session,
            seq,
            self._rcv_nxt,
            self._advertised,
            attempt & 0xFF,
        )

    def _hello(self, kind: int) -> bytes:
        body = HELLO_BODY.pack(MIN_VERSION, PROTOCOL_VERSION, self.max_payload, self.window)
        return self._header(kind, 0, 0, 0) + body

    def _ack_frame(self, flags: int) -> bytes:
        bits = 0
        for seq in self._ooo:
            bits |= 1 << (_diff(seq, self._rcv_nxt) - 1)
        sack = bits.to_bytes((bits.bit_length() + 7) // 8, "little")
        return self._header(ACK, flags, self._echo[0], self._echo[1]) + sack

    def _transmit(self, o: _Out, now: float) -> bytes:
        o.tx.append(self._tx)
        o.sent_at.append(now)
        o.lost = False
        self._tx += 1
        self.stats["frames_out"] += 1
        return framing.encode(self._header(DATA, o.flags, o.seq, len(o.tx) - 1) + o.data)

    def _oldest_unacked(self) -> _Out | None:
        """The frame the retransmission timer runs for; None while a frame already waits to
        be sent again (the port is busy: firing more timers would only pile up resends)."""
        best = None
        for o in self._inflight.values():
            if o.lost:
                return None
            if best is None or o.sent_at[-1] < best.sent_at[-1]:
                best = o
        return best

    def _timer_base(self, oldest: _Out) -> float:
        return max(oldest.sent_at[-1], self._progress_at)

    def _timeout(self) -> float:
        return min(self._rto * self._backoff, max(self._rto, BACKOFF_CAP))

    def _room(self) -> int:
        return max(0, self.window - self._held)

    # -- receiving -------------------------------------------------------------------------------
    def _on_frame(self, payload: bytes, now: float) -> None:
        if len(payload) < HEADER.size:
            self.stats["bad_header"] += 1
            return
        vt, flags, session, seq, ack, wnd, attempt = HEADER.unpack_from(payload)
        kind = vt & 0x0F
        if vt >> 4 != PROTOCOL_VERSION and kind not in (HELLO, RST):
            self.stats["bad_header"] += 1
            return
        body = payload[HEADER.size :]
        self.stats["frames_in"] += 1
        if kind == HELLO:
            self._on_hello(session, body)
        elif kind == HELLO_ACK:
            self._on_hello_ack(session, body, wnd, now)
        elif kind == RST:
            if session == self.session and self.state in (State.OPEN, State.CONNECTING):
                self._close("rst", rst_reason(body))
            else:
                self.stats["ignored"] += 1
        elif session != self.session or self.state is not State.OPEN:
            self.stats["other_session"] += 1
            if kind in (DATA, ACK) and session != self.session:
                self._reset_unknown(session, now)
        elif kind == DATA:
            self.last_heard = now
            self._on_ack(ack, wnd, None, b"", now)
            self._on_data(seq, flags, attempt, body)
        elif kind == ACK:
            self.last_heard = now
            self._on_ack(ack, wnd, (seq, attempt), body, now)
            if flags & FLAG_PROBE:
                self._ack_due = True
        else:
            self.stats["bad_header"] += 1

    def _reset_unknown(self, session: int, now: float) -> None:
        """Tell the peer its session is unknown; at most once per RTO_MIN per session, so a
        flood of stale frames is not answered by a flood of resets."""
        last_session, last_time = self._last_rst
        if session == last_session and now - last_time < RTO_MIN:
            return
        self._last_rst = (session, now)
        self._control.append(rst_frame(session, RST_UNKNOWN, b"unknown session"))

    def _parse_hello(self, session: int, body: bytes) -> tuple[int, int, int] | None:
        if len(body) < HELLO_BODY.size:
            self.stats["bad_header"] += 1
            return None
        lo, hi, max_payload, window = HELLO_BODY.unpack_from(body)
        version = min(hi, PROTOCOL_VERSION)
        if version < max(lo, MIN_VERSION):
            text = f"versions {lo}-{hi} offered, this side speaks {MIN_VERSION}-{PROTOCOL_VERSION}"
            self._control.append(rst_frame(session, RST_VERSION, text.encode()))
            return None
        if max_payload < MIN_FRAME or not 1 <= window <= MAX_WINDOW:
            self._control.append(rst_frame(session, RST_PROTOCOL, b"hello out of range"))
            return None
        return version, min(max_payload, self.max_payload), window

    def _on_hello(self, session: int, body: bytes) -> None:
        if self.state is State.CONNECTING and session < self.session:
            self.stats["ignored"] += 1  # crossing hellos: ours has the larger id and wins
            return
        agreed = self._parse_hello(session, body)
        if agreed is None:
            return
        if self.state is State.OPEN and session == self.session:
            self._control.append(self._hello(HELLO_ACK))  # our HELLO_ACK was lost
            return
        carry = None
        if self.state is State.CONNECTING and not self._inflight:
            carry = self._unsent  # queued before any hello was answered: nothing numbered yet
            self._unsent = deque()
        if not self._move("hello"):
            return
        self._drop_session()
        if carry:
            self._unsent, self._unsent_bytes = carry, sum(len(m) for m in carry)
        self.session = session
        self._open(*agreed)
        self._control.append(self._hello(HELLO_ACK))

    def _on_hello_ack(self, session: int, body: bytes, wnd: int, now: float) -> None:
        if self.state is not State.CONNECTING or session != self.session:
            self.stats["ignored"] += 1
            return
        agreed = self._parse_hello(session, body)
        if agreed is None:
            self._close("fail", "the peer's hello reply is not acceptable")
            return
        self._move("hello_ack")
        if self._hello_at >= 0 and self._hello_rto == RTO_INITIAL:
            self._sample_rtt(now - self._hello_at)
        self._open(*agreed)

    def _open(self, version: int, frame_payload: int, peer_window: int) -> None:
        self.version = version
        self.frame_payload = frame_payload
        self._peer_wnd = min(peer_window, MAX_WINDOW)
        self._events.append(Connected(self.session, version, frame_payload, peer_window))

    def _close(self, what: str, reason: str) -> None:
        if self._move(what):
            self._drop_session()
            self._events.append(Closed(reason))

    def _on_ack(
        self, ack: int, wnd: int, echo: tuple[int, int] | None, sack: bytes, now: float
    ) -> None:
        if _diff(ack, self._snd_nxt) > 0:
            self._protocol_error(f"the peer acknowledged seq {ack} that was never sent")
            return
        if _diff(ack, self._peer_ack) < 0:
            return  # older than what we know (cannot happen on an ordered line; be safe)
        acked: list[_Out] = []
        while _diff(ack, self._peer_ack) > 0:
            o = self._inflight.pop(self._peer_ack, None)
            if o is not None:
                acked.append(o)
            self._peer_ack = (self._peer_ack + 1) & 0xFFFF
        bits = int.from_bytes(sack, "little")
        while bits:
            low = bits & -bits
            seq = (ack + low.bit_length()) & 0xFFFF
            bits ^= low
            o = self._inflight.pop(seq, None)
            if o is not None:
                acked.append(o)
        self._peer_wnd = min(wnd, MAX_WINDOW)
        arrived = -1  # transmission order of the newest transmission known to have arrived
        for o in acked:
            arrived = max(arrived, o.tx[0])
        if echo is not None:
            o = self._inflight.get(echo[0]) or next((a for a in acked if a.seq == echo[0]), None)
            if o is not None and echo[1] < len(o.tx):
                arrived = max(arrived, o.tx[echo[1]])
                self._sample_rtt(now - o.sent_at[echo[1]])
        if acked:
            self._backoff = 1
            self._progress_at = now
        for o in self._inflight.values():
            if o.tx[-1] < arrived:
                o.lost = True  # sent before something that arrived: an ordered line lost it

    def _sample_rtt(self, rtt: float) -> None:
        if self._srtt < 0:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(max(self._srtt + 4 * self._rttvar, RTO_MIN), RTO_MAX)

    def _on_data(self, seq: int, flags: int, attempt: int, body: bytes) -> None:
        self._ack_due = True
        self._echo = (seq, attempt)
        off = _diff(seq, self._rcv_nxt)
        if off < 0 or seq in self._ooo:
            self.stats["duplicates"] += 1
            return
        if off >= self._room() and _diff(seq, self._edge) >= 0:
            self.stats["out_of_window"] += 1
            return
        self._ooo[seq] = (flags, body)
        while self._rcv_nxt in self._ooo:
            fl, piece = self._ooo.pop(self._rcv_nxt)
            self._rcv_nxt = (self._rcv_nxt + 1) & 0xFFFF
            self._partial.append(piece)
            self._partial_size += len(piece)
            if self._partial_size > self.max_message:
                self._protocol_error(f"the peer sent a message over {self.max_message} bytes")
                return
            if not fl & FLAG_MORE:
                self._events.append(Message(b"".join(self._partial)))
                self._held_msgs.append(len(self._partial))
                self._held += len(self._partial)
                self._partial = []
                self._partial_size = 0
                self.stats["messages_in"] += 1

    def _protocol_error(self, reason: str) -> None:
        self._control.append(rst_frame(self.session, RST_PROTOCOL, reason.encode()[:200]))
        self._close("fail", reason)
