"""Server-sent events, sans-IO: bytes in, events out (the wire format of streamed completions).

    parser = SseParser()
    for event in parser.feed(chunk):    # any split of the stream, down to one byte at a time
        handle(event.data)

It keeps the parts of the format (the WHATWG event-stream grammar) that completion servers use:
`data:` lines joined with newlines, `event:` and `id:` fields, comments (`:` lines) ignored, an
event dispatched at a blank line; CR, LF and CRLF line ends. Limits are checked before anything
grows: a line longer than `max_line` or an event larger than `max_event` raises `SseError`, so a
server that never sends a newline cannot make the device buffer without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.engine.errors import EngineError

__all__ = ["SseError", "SseEvent", "SseParser"]

MAX_LINE = 1 << 20
MAX_EVENT = 4 << 20


class SseError(EngineError):
    """The stream is not a well-formed event stream, or breaks its size limits."""


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str = ""


class SseParser:
    def __init__(self, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        self.max_line = max_line
        self.max_event = max_event
        self._buf = bytearray()
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._id = ""
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Events completed by `chunk` (possibly none)."""
        out: list[SseEvent] = []
        for b in chunk:
            if self._skip_lf:
                self._skip_lf = False
                if b == 0x0A:
                    continue
            if b in (0x0A, 0x0D):
                self._skip_lf = b == 0x0D
                line, self._buf = bytes(self._buf), bytearray()
                event = self._line(line)
                if event is not None:
                    out.append(event)
                continue
            if len(self._buf) >= self.max_line:
                raise SseError(f"an event-stream line is longer than {self.max_line} bytes")
            self._buf.append(b)
        return out

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SseError(f"an event-stream line is not UTF-8 ({exc.reason})") from exc
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise SseError(f"an event is larger than {self.max_event} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SseEvent("\n".join(self._data), self._event or "message", self._id)
        self._data, self._size, self._event = [], 0, ""
        return event
