"""Remote when it can, local when it must: one answer, whichever model writes it.

    router = Router(remote, local_llm, clock, Budgets(first_token_s=1.5, stall_s=2.0))
    answer = router.start(messages, max_tokens=48)
    while not answer.done:
        answer.step()                 # the caller owns the loop, as with a local generation
        show(answer.take_text())

Per request the router picks a route: remote when the remote is healthy (and the preference
allows it), local otherwise. On the remote route it watches the stream against the app's
budgets on the caller's clock: no first token within `first_token_s`, a gap over `stall_s`,
an HTTP error, a refused connection or a stream cut before `[DONE]` each switch the answer to
the local model at once. The local model continues from the text already shown (it gets the
prompt plus the partial answer as the start of its own turn), so the display never restarts;
if the continuation opens by repeating the last words shown, those words are dropped before
they reach the display (`Overlap`).

Health: a failure marks the remote down and schedules a probe (`GET /models`) after a backoff
that doubles on each failure (1 s to 60 s, or the server's Retry-After); until a probe
succeeds, requests go local. The preference (`prefer`) is set by the governor: "remote" saves
the board's CPU power, "local" saves radio energy, "auto" picks the cheaper by the power model
(`EnergyModel`). Every choice and switch is reported through `note(name, **args)` (the apps
put it in the trace).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.engine.llm import GenerationConfig, Llm
from runtime.engine.llm.generator import Generation
from runtime.engine.remote.client import RemoteError, RemoteGeneration, RemoteLlm
from runtime.sched.clock import Clock

__all__ = ["Answer", "Budgets", "EnergyModel", "Health", "Overlap", "Router"]

log = logging.getLogger(__name__)

Note = Callable[..., None]


@dataclass(frozen=True)
class Budgets:
    first_token_s: float = 1.5  # the remote's first token must arrive within this
    stall_s: float = 2.0  # a gap between remote tokens longer than this is a failure


@dataclass(frozen=True)
class EnergyModel:
    """Joules per answer on each route, from the board's power model and measured rates."""

    core_active_w: float
    cores: int
    radio_w: float
    local_s_per_token: float = 0.05
    remote_s_per_token: float = 0.03
    remote_first_token_s: float = 0.5

    def local_j(self, tokens: int) -> float:
        return self.core_active_w * self.cores * self.local_s_per_token * tokens

    def remote_j(self, tokens: int) -> float:
        return self.radio_w * (self.remote_first_token_s + self.remote_s_per_token * tokens)


class Health:
    """Whether to try the remote: down after a failure until a probe succeeds, with backoff."""

    def __init__(self, clock: Clock, base_s: float = 1.0, max_s: float = 60.0) -> None:
        self.clock = clock
        self.base_s = base_s
        self.max_s = max_s
        self.healthy = True
        self.failures = 0
        self.next_probe_t = 0.0
        self.last_reason = ""

    def failed(self, reason: str, retry_after_s: float | None = None) -> float:
        """Mark the remote down; returns the backoff before the next probe."""
        self.healthy = False
        self.failures += 1
        backoff = min(self.max_s, self.base_s * 2.0 ** (self.failures - 1))
        if retry_after_s is not None:
            backoff = max(backoff, min(retry_after_s, self.max_s))
        self.next_probe_t = self.clock.now() + backoff
        self.last_reason = reason
        return backoff

    def succeeded(self) -> None:
        self.healthy = True
        self.failures = 0
        self.last_reason = ""

    def probe_due(self) -> bool:
        return not self.healthy and self.clock.now() >= self.next_probe_t


_WORD = re.compile(r"\S+")


class Overlap:
    """Drops the words a continuation repeats from the end of the text already shown.

    Text passes through `push()`; it is held only while its complete words still match the
    start of some tail of `shown` (at most `window` words), so a continuation that starts with
    new words is released at once.
    """

    def __init__(self, shown: str, window: int = 6) -> None:
        words = [w.lower() for w in _WORD.findall(shown)]
        self.tail = words[-window:]
        self.ends_in_space = not shown or shown[-1].isspace()
        self._held = ""
        self._open = bool(self.tail)

    def push(self, text: str, final: bool = False) -> str:
        if not self._open:
            return text
        self._held += text
        held = self._held
        words = [m for m in _WORD.finditer(held)]
        complete = [m for m in words if m.end() < len(held) or final]
        if not self.ends_in_space and held and not held[0].isspace():
            self._open = False  # the continuation finishes a word cut mid-way: nothing repeats
            self._held = ""
            return held
        best = 0
        alive = False
        for k in range(1, len(self.tail) + 1):
            want = self.tail[-k:]
            got = [m.group().lower() for m in complete[:k]]
            if got != want[: len(got)]:
                continue
            if len(got) == k:
                best = k
            else:
                alive = True
        if alive and not final:
            return ""
        self._open = False
        self._held = ""
        if best:
            rest = held[complete[best - 1].end() :]
            return rest.lstrip() if self.ends_in_space else rest
        return held


class Answer:
    """One answer in progress, from the remote, the local model, or both in turn."""

    def __init__(
        self,
        router: Router,
        messages: Sequence[dict[str, Any]],
        max_tokens: int,
        route: str,
        reason: str,
        local_messages: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self._router = router
        self.messages = list(messages)
        self.local_messages = list(local_messages) if local_messages is not None else None
        self.max_tokens = max_tokens
        self.route = route  # "remote", "local", or "remote->local" after a switch
        self.reason = reason
        self.started_t = router.clock.now()
        self.first_text_t: float | None = None
        self.local_text_t: float | None = None  # the local model's first text on screen
        self.switch_t: float | None = None
        self.switch_reason = ""
        self.remote_last_t: float | None = None  # the remote's last event before a switch
        self.remote_text = ""
        self.text = ""
        self._pending = ""
        self.finish_reason: str | None = None
        self._remote: RemoteGeneration | None = None
        self._local: Generation | None = None
        self._overlap: Overlap | None = None
        self._cancelled = False
        if route == "remote":
            assert router.remote is not None
            self._remote = router.remote.start(messages, max_tokens)
        else:
            self._start_local("")

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        self._cancelled = True
        if self._remote is not None:
            self._remote.cancel()
        if self._local is not None:
            self._local.cancel()

    def take_text(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _show(self, piece: str) -> None:
        if piece:
            now = self._router.clock.now()
            if self.first_text_t is None:
                self.first_text_t = now
            if self._local is not None and self.local_text_t is None:
                self.local_text_t = now
            self.text += piece
            self._pending += piece

    def step(self) -> None:
        """One step: one remote event (waiting at most to the next deadline) or one local token."""
        if self.done:
            return
        if self._cancelled:
            self.finish_reason = "cancelled"
            return
        if self._remote is not None:
            self._step_remote(self._remote)
        else:
            self._step_local()

    def _step_remote(self, gen: RemoteGeneration) -> None:
        clock, budgets = self._router.clock, self._router.budgets
        if gen.first_token_t is None:
            deadline = gen.started_t + budgets.first_token_s
            why = f"no first token within {budgets.first_token_s:g} s"
        else:
            deadline = gen.last_event_t + budgets.stall_s
            why = f"no token for {budgets.stall_s:g} s"
        piece = gen.step(until=deadline)
        self.remote_text += piece
        self._show(gen.take_text())
        if gen.done and gen.error is None and gen.finish_reason != "cancelled":
            self._router.health.succeeded()
            self.finish_reason = gen.finish_reason
            return
        if gen.error is not None:
            self._switch(str(gen.error), gen.error)
        elif clock.now() >= deadline and not gen.done:
            self._switch(why, None)

    def _switch(self, why: str, error: RemoteError | None) -> None:
        router = self._router
        assert self._remote is not None
        self._remote.cancel()
        self.remote_last_t = self._remote.last_event_t
        self._remote = None
        self.switch_t = router.clock.now()
        self.switch_reason = why
        backoff = router.health.failed(why, error.retry_after_s if error is not None else None)
        router.note(
            "remote failed",
            reason=why,
            shown_chars=len(self.text),
            backoff_s=round(backoff, 3),
            status=error.status if error is not None else 0,
        )
        if router.local is None:
            self.finish_reason = "error"
            return
        self.route = "remote->local"
        self._start_local(self.text)

    def _start_local(self, shown: str) -> None:
        router = self._router
        llm = router.local
        if llm is None:
            raise RemoteError("no local model to answer with, and the remote is down")
        prompt = llm.chat(self.local_messages or self.messages) + shown
        ids = llm.encode_chat(prompt)
        left = max(1, self.max_tokens - len(llm.encode(shown))) if shown else self.max_tokens
        self._local = llm.start(ids, GenerationConfig(max_new_tokens=left, truncate=True))
        self._overlap = Overlap(shown) if shown else None

    def _step_local(self) -> None:
        gen = self._local
        assert gen is not None
        gen.step()
        piece = gen.take_text()
        if self._overlap is not None:
            piece = self._overlap.push(piece, final=gen.done)
        self._show(piece)
        if gen.done:
            self.finish_reason = gen.finish_reason or "stop"


class Router:
    """Routes each answer to the remote or the local model, and fails over mid-answer."""

    def __init__(
        self,
        remote: RemoteLlm | None,
        local: Llm | None,
        clock: Clock,
        budgets: Budgets | None = None,
        *,
        prefer: str = "remote",
        energy: EnergyModel | None = None,
        note: Note | None = None,
    ) -> None:
        if remote is None and local is None:
            raise RemoteError("a router needs a remote endpoint, a local model, or both")
        self.remote = remote
        self.local = local
        self.clock = clock
        self.budgets = budgets or Budgets()
        self.prefer = prefer
        self.energy = energy
        self.health = Health(clock)
        self._note = note
        self._probe: threading.Thread | None = None

    def note(self, name: str, **args: Any) -> None:
        log.info("%s %s", name, args)
        if self._note is not None:
            self._note(name, **args)

    def choose(self, max_tokens: int) -> tuple[str, str]:
        """(route, why) for a new answer of up to `max_tokens`."""
        if self.remote is None:
            return "local", "no remote endpoint"
        if self.local is None:
            return "remote", "no local model"
        if not self.health.healthy:
            self._maybe_probe()
            return "local", f"remote down ({self.health.last_reason})"
        if self.prefer == "local":
            return "local", "the governor prefers local (radio energy)"
        if self.prefer == "auto" and self.energy is not None:
            lj, rj = self.energy.local_j(max_tokens), self.energy.remote_j(max_tokens)
            if lj < rj:
                return "local", f"local costs less energy ({lj:.2f} J < {rj:.2f} J)"
            return "remote", f"remote costs less energy ({rj:.2f} J <= {lj:.2f} J)"
        return "remote", "remote healthy"

    def start(
        self,
        messages: Sequence[dict[str, Any]],
        max_tokens: int = 128,
        local_messages: Sequence[dict[str, Any]] | None = None,
    ) -> Answer:
        """An answer to `messages`; the local model gets `local_messages` where given (the
        remote may take content the board's model cannot, such as an image)."""
        route, why = self.choose(max_tokens)
        self.note("route", route=route, reason=why)
        return Answer(self, messages, max_tokens, route, why, local_messages)

    def _maybe_probe(self) -> None:
        remote = self.remote
        if remote is None or not self.health.probe_due():
            return
        if self._probe is not None and self._probe.is_alive():
            return

        def probe() -> None:
            ok = remote.probe()
            if ok:
                self.health.succeeded()
                self.note("remote back", probe="ok")
            else:
                self.health.failed("probe failed")
                self.note("remote probe failed", next_probe_t=round(self.health.next_probe_t, 3))

        self._probe = threading.Thread(target=probe, name="remote-probe", daemon=True)
        self._probe.start()

    def wait_probe(self, timeout: float) -> None:
        """Wait for a running probe to finish (tests, shutdown)."""
        if self._probe is not None:
            self._probe.join(timeout)
