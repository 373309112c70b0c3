"""Streaming an LLM answer onto the display: what translate and look share.

`stream_to_screen(screen, gen, on_first)` opens a new paragraph in the final style, then steps
the generator one token per scheduler step, appending each piece of decoded text to that
paragraph as it comes (a caption committed meanwhile stays whole);
`on_first()` is called once, in the step that put the first characters on screen (the apps
record their "to first characters" latency there). The caller owns the loop: this is a
generator of steps, used as `yield from stream_to_screen(...)` inside a job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from runtime.io.screen import FINAL, CaptionScreen

__all__ = ["AnswerStream", "stream_to_screen"]


class AnswerStream(Protocol):
    """A local generation or a routed answer (runtime/engine/remote): both stream text."""

    text: str

    @property
    def done(self) -> bool: ...

    def step(self) -> Any: ...

    def take_text(self) -> str: ...


def stream_to_screen(
    screen: CaptionScreen, gen: AnswerStream, on_first: Callable[[], None]
) -> Iterator[None]:
    para = screen.commit("", FINAL)
    first = True
    while not gen.done:
        gen.step()
        delta = gen.take_text()
        if delta:
            screen.append(delta, para)
            if first:
                first = False
                on_first()
        yield None
    tail = gen.take_text()
    if tail:
        screen.append(tail, para)
