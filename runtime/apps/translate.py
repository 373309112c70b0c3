"""`translate`: captions, plus the LLM translating each finished sentence onto the display.

Each sentence is sent in the model's own chat template: a fixed system message naming the
source and target languages, then the sentence as the user turn. The system part is the same
token prefix for every sentence; it is prefilled once at start, and the LLM's KV cache keeps
the longest common prefix between turns, so each sentence only prefills its own tokens (the
trace's `translate` spans carry `prompt_tokens` and `reused_tokens` to show it).

Tokens stream to the display as they come (the source caption dimmer, the translation at full
brightness). The governor's policy applies per sentence: `max_tokens` caps the answer, tier
"small" switches to the smaller LLM if the bundle has one, and `translation_paused` skips the
LLM (the caption still shows; `translate.skipped` counts it).
Latency `speech_end_to_first_translation_s`: from the end of speech to the first translated
characters on the display.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from runtime.apps.captions import Captions
from runtime.apps.host import Host
from runtime.engine.llm import GenerationConfig, Llm
from runtime.io.screen import FINAL, SOURCE
from runtime.sched.scheduler import Job, Priority

__all__ = ["LANGUAGES", "Translate", "chat_prefix"]

log = logging.getLogger(__name__)

LANGUAGES = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
}
SYSTEM = "You are a translator. Translate the user's {src} text into {tgt}. Reply with the translation only."


def chat_prefix(llm: Llm, system: str) -> list[int]:
    """The token prefix every translation prompt shares: the system turn and the user header."""
    a = llm.encode_chat(
        llm.chat([{"role": "system", "content": system}, {"role": "user", "content": "a"}])
    )
    b = llm.encode_chat(
        llm.chat([{"role": "system", "content": system}, {"role": "user", "content": "b c"}])
    )
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class Translate(Captions):
    name = "translate"
    needs = ("vad", "asr", "llm")
    caption_level = SOURCE

    def __init__(self) -> None:
        super().__init__()
        self.translations: list[str] = []
        self.reused: list[int] = []
        self.prompt_tokens: list[int] = []
        self._pending_translations = 0

    def setup(self, host: Host) -> None:
        o = host.options
        for lang in (o.source_lang, o.target_lang):
            if lang not in LANGUAGES:
                from runtime.apps.errors import AppUsageError

                raise AppUsageError(
                    f"language {lang!r} is not known; choose one of {', '.join(LANGUAGES)}"
                )
        llm_dir = host.models.need("llm", self.name)
        super().setup(host)
        self.system = SYSTEM.format(src=LANGUAGES[o.source_lang], tgt=LANGUAGES[o.target_lang])
        self.llm = Llm.from_artifact(llm_dir, host.profile, threads=host.threads("llm"))
        small = host.models.smaller("llm")
        self.small = (
            Llm.from_artifact(small, host.profile, threads=host.threads("llm"))
            if small is not None
            else None
        )
        host.metrics.gauge("memory.kv_tokens", self.llm.max_length)
        for llm in (self.llm, self.small):
            if llm is not None:
                self.prefix = chat_prefix(llm, self.system)
                llm.prefill(self.prefix)

    def on_sentence(self, text: str, end_t: float) -> None:
        host = self.host
        assert host is not None
        if not text.strip():
            return
        if host.governor.policy.translation_paused:
            host.metrics.inc("translate.skipped")
            host.trace.instant("translation paused", "governor", "apps", text=text[:100])
            return
        self._pending_translations += 1
        marks: list[tuple[str, float]] = []
        host.sched.submit(
            Job(
                f"{self.name}.llm",
                self._translate(text, end_t, marks),
                Priority.LLM,
                marks=marks,
                pool="llm",
            )
        )

    def _translate(self, text: str, end_t: float, marks: list[tuple[str, float]]) -> Iterator[None]:
        host = self.host
        assert host is not None
        try:
            policy = host.governor.policy
            llm = self.small if policy.tier == "small" and self.small is not None else self.llm
            prompt = llm.chat(
                [{"role": "system", "content": self.system}, {"role": "user", "content": text}]
            )
            ids = llm.encode_chat(prompt)
            gen = llm.start(ids, GenerationConfig(max_new_tokens=policy.max_tokens, truncate=True))
            host.screen.commit("", FINAL)
            first = True
            while not gen.done:
                gen.step()
                delta = gen.take_text()
                if delta:
                    host.screen.append(delta)
                    if first:
                        first = False
                        marks.append(("speech_end_to_first_translation_s", end_t))
                        self.reused.append(gen.reused_tokens)
                        self.prompt_tokens.append(len(ids))
                yield None
            tail = gen.take_text()
            if tail:
                host.screen.append(tail)
            self.translations.append(gen.text)
            host.trace.instant(
                "translated",
                "app",
                "apps",
                prompt_tokens=len(ids),
                reused_tokens=gen.reused_tokens,
                tokens=len(gen.tokens),
                finish=gen.finish_reason or "",
                tier=policy.tier,
            )
            host.metrics.inc("translate.sentences")
        finally:
            self._pending_translations -= 1

    @property
    def finished(self) -> bool:
        return super().finished and self._pending_translations == 0

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "translations": self.translations,
            "prompt_tokens": self.prompt_tokens,
            "reused_prefix_tokens": self.reused,
        }
