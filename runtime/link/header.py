"""The link's frame format: what follows the framing layer's CRC-checked payload.

Each frame's payload (see `framing`) starts with an 11-byte header, little-endian:

    ver<<4|type u8, flags u8, session u16, seq u16, ack u16, wnd u16, attempt u8

`session` names one connection: a hello picks it at random and frames of other sessions are
dropped (a stale frame from before a restart can never be taken for a new one). `ack` is
cumulative (every seq before it arrived), `wnd` how many frames from `ack` on the sender of the
frame can still take (flow control: a slow reader closes its window and the peer stops).
Sequence numbers are 16-bit and wrap; `seq_diff` compares them.

Frame types:
- HELLO / HELLO_ACK: body `HELLO_BODY` = (min version, max version, max payload, window); the
  two sides agree on the highest version both speak and on the smaller frame size;
- DATA: `seq` and `attempt` (0 for the first transmission) and a piece of a message; flag MORE
  says the message goes on in the next seq;
- ACK: `seq`/`attempt` echo the last DATA frame that arrived; the body is a little-endian
  bitmap of the frames received past `ack` (bit i: seq ack+1+i); flag PROBE asks for an ACK;
- RST: body = a reason code and text: the session is unknown (the peer restarted), the hello's
  version is not spoken, or the peer broke the protocol.
"""

from __future__ import annotations

import struct

__all__ = [
    "ACK",
    "DATA",
    "FLAG_MORE",
    "FLAG_PROBE",
    "HEADER",
    "HELLO",
    "HELLO_ACK",
    "HELLO_BODY",
    "MIN_FRAME",
    "MIN_VERSION",
    "PROTOCOL_VERSION",
    "RST",
    "RST_PROTOCOL",
    "RST_UNKNOWN",
    "RST_VERSION",
    "rst_frame",
    "rst_reason",
    "seq_diff",
]

PROTOCOL_VERSION = 1
MIN_VERSION = 1

HELLO, HELLO_ACK, DATA, ACK, RST = 1, 2, 3, 4, 5
FLAG_MORE = 0x01  # DATA: the message continues in the next frame
FLAG_PROBE = 0x02  # ACK: answer with an ACK (window probe)
RST_UNKNOWN, RST_VERSION, RST_PROTOCOL = 1, 2, 3

HEADER = struct.Struct("<BBHHHHB")
HELLO_BODY = struct.Struct("<BBHH")
MIN_FRAME = 64  # smallest max_payload a hello may ask for


def seq_diff(a: int, b: int) -> int:
    """a - b on the 16-bit sequence circle."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def rst_frame(session: int, code: int, text: bytes) -> bytes:
    return HEADER.pack(PROTOCOL_VERSION << 4 | RST, 0, session, 0, 0, 0, 0) + bytes([code]) + text


def rst_reason(body: bytes) -> str:
    """An RST's body in words, for the Closed event and the error the caller sees."""
    code = body[0] if body else 0
    text = bytes(body[1:201]).decode("utf-8", "replace")
    if code == RST_UNKNOWN:
        return "the peer does not know this link session (it restarted); connect again"
    if code == RST_VERSION:
        return f"the peer refused the protocol version ({text}); update one side"
    return f"the peer reset the link: {text or 'no reason given'}"
