"""Text in and out: tokenization, streaming detokenization, stop strings, chat templates.

Streaming never splits a character: each new token is decoded together with the few tokens
before it, and a delta is released only when the decoded text grows and does not end in
U+FFFD (the replacement character that byte-level tokenizers produce for an incomplete UTF-8
sequence, e.g. half of a Chinese character). Decoding a window rather than one token also
keeps SentencePiece's leading spaces right.

Stop strings: the text that could still turn into a stop string (a suffix of the output that is
a prefix of some stop string) is held back, so a caller never sees part of one.

Chat templates: Hugging Face models carry a Jinja template; the device has no Jinja and runs no
template code. `render_chat` recognises the template families the supported models use, from
marker strings in the template, and renders them with plain string formatting:
- ChatML (`<|im_start|>`: Qwen2/2.5, SmolLM2), with the default system prompt that the template
  inserts when the conversation has none (read from the template's string literal), and Qwen3's
  empty think block when thinking is turned off;
- Llama 3 headers (`<|start_header_id|>`).
Any other template is refused with a clear error (use a raw prompt instead).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from runtime.engine.errors import ArtifactError, EngineUsageError

__all__ = ["ChatTemplate", "StopFilter", "TextStream", "load_tokenizer"]


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad files
        raise ArtifactError(f"{path}: not a readable tokenizer.json ({exc})") from exc


class TextStream:
    """Token ids in, text deltas out, never a split character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens whose text has been released
        self._prev: str | None = ""  # decoded text of ids[_prefix:_read], when known
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        if self._prev is None:
            self._prev = self._tok.decode(self.ids[self._prefix : self._read])
        prev = self._prev
        new: str = self._tok.decode(self.ids[self._prefix :])
        if len(new) > len(prev) and not new.endswith("\ufffd"):
            delta = new[len(prev) :]
            self._prefix = self._read
            self._read = len(self.ids)
            self._prev = None  # the window moved; decoded again on the next push
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """What is left at the end (an incomplete character is dropped, as decode would)."""
        full: str = self._tok.decode(self.ids)
        rest = full[len(self.text) :] if full.startswith(self.text) else ""
        rest = rest.rstrip("\ufffd")
        self.text += rest
        return rest


class StopFilter:
    """Holds back text that may become a stop string; reports when one appears."""

    def __init__(self, stops: Sequence[str]) -> None:
        if any(not s for s in stops):
            raise EngineUsageError("stop strings must not be empty")
        self._stops = list(stops)
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        buf = self._held + delta
        if not self._stops:
            return buf
        cut = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        hold = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        out, self._held = ("" if self.stopped else self._held), ""
        return out


_LITERAL_SYSTEM = re.compile(
    r"""(['"])<\|im_start\|>system\\n(?P<body>(?:(?!\1).)*?)<\|im_end\|>\\n\1""", re.S
)
_LITERAL_SYSTEM_RAW = re.compile(
    r"""(['"])<\|im_start\|>system\n(?P<body>(?:(?!\1).)*?)<\|im_end\|>\n\1""", re.S
)


@dataclass(frozen=True)
class ChatTemplate:
    family: str  # chatml | llama3
    default_system: str | None = None
    thinking: bool = False  # the template knows Qwen3's <think> blocks
    bos: str = ""

    @classmethod
    def parse(cls, template: str | None, where: str) -> ChatTemplate:
        if not template:
            raise EngineUsageError(
                f"{where}: the artifact has no chat template; use a raw prompt (no --chat)"
            )
        if "<|im_start|>" in template:
            m = _LITERAL_SYSTEM.search(template) or _LITERAL_SYSTEM_RAW.search(template)
            default = None
            if m:
                default = m.group("body").replace("\\n", "\n").replace("\\'", "'")
            return cls("chatml", default, "<think>" in template)
        if "<|start_header_id|>" in template:
            return cls("llama3", bos="<|begin_of_text|>" if "bos_token" in template else "")
        raise EngineUsageError(
            f"{where}: the chat template is of a family this runtime does not render "
            "(supported: ChatML, Llama 3); use a raw prompt (no --chat)"
        )

    def render(
        self,
        messages: Sequence[dict[str, str]],
        add_generation_prompt: bool = True,
        enable_thinking: bool = False,
    ) -> str:
        for m in messages:
            if set(m) - {"role", "content"} or not isinstance(m.get("content"), str):
                raise EngineUsageError(f"a chat message needs a role and a text content: {m!r}")
            if m["role"] not in ("system", "user", "assistant"):
                raise EngineUsageError(f"unknown chat role {m['role']!r}")
        if self.family == "llama3":
            out = self.bos + "".join(
                f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}"
                "<|eot_id|>"
                for m in messages
            )
            if add_generation_prompt:
                out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
            return out
        parts = []
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            parts.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
        parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
            if self.thinking and not enable_thinking:
                parts.append("<think>\n\n</think>\n\n")
        return "".join(parts)
