"""`translate`: captions, plus the LLM translating each finished sentence onto the display.

Each sentence is sent in the model's own chat template: a fixed system message naming the
source and target languages, then the sentence as the user turn. The system part is the same
token prefix for every sentence; it is prefilled once at start, and the LLM's KV cache keeps
the longest common prefix between turns, so each sentence only prefills its own tokens (the
trace's `translate` spans carry `prompt_tokens` and `reused_tokens` to show it).

Tokens stream to the display as they come (the source caption dimmer, the translation at full
brightness). Sentences wait in the app's own queue and one LLM job runs at a time, so the
queue is the backlog the governor watches (`Backlog`: sentences waiting, age of the oldest
from its end of speech). The governor's policy applies per sentence: `max_tokens` caps the
answer, `latest_only` drops every waiting sentence but the newest (`translate.skipped_backlog`
counts them; the trace says which), tier "small" switches to the smaller LLM if the bundle
has one, and `translation_paused` skips the LLM (the caption still shows;
`translate.skipped` counts it).
Latency `speech_end_to_first_translation_s`: from the end of speech to the first translated
characters on the display.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterator
from typing import Any

from runtime.apps.captions import Captions
from runtime.apps.host import Host
from runtime.apps.online import make_router
from runtime.apps.stream_to_screen import stream_to_screen
from runtime.engine.llm import GenerationConfig, Llm
from runtime.engine.remote import Router
from runtime.io.screen import SOURCE
from runtime.sched.governor import Backlog, Policy
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
        self.skipped_backlog = 0
        self.routes: list[str] = []
        self.router: Router | None = None
        self._waiting: collections.deque[tuple[str, float]] = collections.deque()
        self._lock = threading.Lock()
        self._llm_busy = False

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
        self.llm = Llm.from_artifact(
            llm_dir, host.profile, threads=host.threads("llm"), max_length=host.options.max_length
        )
        small = host.models.smaller("llm")
        self.small = (
            Llm.from_artifact(
                small, host.profile, threads=host.threads("llm"), max_length=host.options.max_length
            )
            if small is not None
            else None
        )
        self.router = make_router(host, self.llm)
        host.metrics.gauge("memory.kv_tokens", self.llm.max_length)
        for llm in (self.llm, self.small):
            if llm is not None:
                self.prefix = chat_prefix(llm, self.system)
                llm.prefill(self.prefix)
        host.governor.watch_backlog(self.backlog)
        host.governor.on_change(self._shed)

    def backlog(self, now: float) -> Backlog:
        with self._lock:
            oldest = now - self._waiting[0][1] if self._waiting else 0.0
            return Backlog(len(self._waiting), max(0.0, oldest))

    def on_sentence(self, text: str, end_t: float) -> None:
        host = self.host
        assert host is not None
        if not text.strip():
            return
        if host.governor.policy.translation_paused:
            host.metrics.inc("translate.skipped")
            host.trace.instant("translation paused", "governor", "apps", text=text[:100])
            return
        with self._lock:
            self._waiting.append((text, end_t))
        self._next()

    def _shed(self, policy: Policy) -> None:
        """Drop waiting sentences the policy no longer wants translated, and say so."""
        host = self.host
        assert host is not None
        with self._lock:
            if policy.translation_paused:
                dropped, self._waiting = [t for t, _ in self._waiting], collections.deque()
            else:
                dropped = []
                while policy.latest_only and len(self._waiting) > 1:
                    dropped.append(self._waiting.popleft()[0])
        if not dropped:
            return
        if policy.translation_paused:
            host.metrics.inc("translate.skipped", len(dropped))
            host.trace.instant("translation paused", "governor", "apps", sentences=len(dropped))
        else:
            self._skipped_stale(dropped)

    def _skipped_stale(self, dropped: list[str]) -> None:
        host = self.host
        assert host is not None
        with self._lock:
            self.skipped_backlog += len(dropped)
        host.metrics.inc("translate.skipped_backlog", len(dropped))
        host.trace.instant(
            "skipped to the newest sentence",
            "governor",
            "apps",
            skipped=len(dropped),
            first=dropped[0][:100],
        )

    def _next(self) -> None:
        """Start translating the next waiting sentence, unless one is being translated."""
        host = self.host
        assert host is not None
        self._shed(host.governor.policy)
        with self._lock:
            if self._llm_busy or not self._waiting:
                return
            text, end_t = self._waiting.popleft()
            self._llm_busy = True
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
            # the job may have waited for the worker: a sentence the policy now drops is not
            # translated (a newer one waits, or translation is paused)
            if policy.translation_paused:
                host.metrics.inc("translate.skipped")
                host.trace.instant("translation paused", "governor", "apps", text=text[:100])
                return
            with self._lock:
                stale = policy.latest_only and bool(self._waiting)
            if stale:
                self._skipped_stale([text])
                return
            llm = self.small if policy.tier == "small" and self.small is not None else self.llm
            messages = [
                {"role": "system", "content": self.system},
                {"role": "user", "content": text},
            ]
            if self.router is not None:
                self.router.local = llm
                yield from self._translate_routed(messages, end_t, marks, policy)
                return
            ids = llm.encode_chat(llm.chat(messages))
            gen = llm.start(ids, GenerationConfig(max_new_tokens=policy.max_tokens, truncate=True))

            def first() -> None:
                marks.append(("speech_end_to_first_translation_s", end_t))
                self.reused.append(gen.reused_tokens)
                self.prompt_tokens.append(len(ids))

            yield from stream_to_screen(host.screen, gen, first)
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
                max_tokens=policy.max_tokens,
            )
            host.metrics.inc("translate.sentences")
        finally:
            with self._lock:
                self._llm_busy = False
            self._next()

    def _translate_routed(
        self,
        messages: list[dict[str, str]],
        end_t: float,
        marks: list[tuple[str, float]],
        policy: Policy,
    ) -> Iterator[None]:
        """The same sentence through the router: remote when it is up, local otherwise, and
        local from the text already shown when the remote fails mid-sentence."""
        host, router = self.host, self.router
        assert host is not None and router is not None
        answer = router.start(messages, max_tokens=policy.max_tokens)
        yield from stream_to_screen(
            host.screen,
            answer,
            lambda: marks.append(("speech_end_to_first_translation_s", end_t)),
        )
        self.translations.append(answer.text)
        self.routes.append(answer.route)
        host.trace.instant(
            "translated",
            "app",
            "apps",
            route=answer.route,
            switch_reason=answer.switch_reason,
            remote_chars=len(answer.remote_text),
            finish=answer.finish_reason or "",
            tier=policy.tier,
            max_tokens=policy.max_tokens,
        )
        host.metrics.inc("translate.sentences")

    @property
    def finished(self) -> bool:
        with self._lock:
            idle = not self._llm_busy and not self._waiting
        return super().finished and idle

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "translations": self.translations,
            "prompt_tokens": self.prompt_tokens,
            "reused_prefix_tokens": self.reused,
            "skipped_backlog": self.skipped_backlog,
            **({"routes": self.routes} if self.router is not None else {}),
        }
