"""The LLM generator: prefill, then one token per `step()`, driven by the caller.

    llm = Llm.from_artifact("artifacts/qwen", profile)
    gen = llm.start("Translate to French: good morning", GenerationConfig(max_new_tokens=32))
    for delta in gen:            # or: while not gen.done: gen.step()
        show(delta)

Rules it keeps:
- One generation at a time per `Llm` (it owns one KV cache); starting another ends the first.
- The KV cache outlives a generation: the next prompt that starts with the same tokens (a fixed
  system prompt, the previous turn) only prefills what is new. `prefill()` warms a prefix.
- `step()` does one graph run and one sample; `cancel()` (any thread) takes effect before the
  next run. Stops: EOS ids from the manifest, stop strings, max new tokens, the cache's max
  length, a time budget. `finish_reason` says which.
- KV memory: the fused runner's buffers hold `max_length` tokens: the caller's `max_length=`
  (or the board profile's `budget.llm_max_tokens`), which must not be above the export's max
  length or what the board's RSS budget leaves (an error names the limit). `resize(n)` sizes
  them for one run's need (prompt + new tokens), as `ocula generate` does.
- A prompt that does not fit the max length is an error that says the numbers, unless the
  caller asked to keep only its last tokens (`truncate=True`).
- Speculative decoding (`GenerationConfig.lookup`, off by default; greedy only, fused graphs
  with `num_logits`): `step()` drafts the next tokens by prompt lookup (or from the caller's
  `draft`, e.g. the previous translation), verifies them with one run over all of their
  positions, and hands out the accepted ones one per call, so stops, budgets, cancellation
  and the text stream behave as without it. Rejected positions are dropped by moving the
  cache length back. On fp32 the tokens are plain decoding's; on int4 real weights a position
  scored inside a multi-position run differs from the same position scored alone (attention
  sums in another order, and MatMulNBits' int8 activations amplify it: up to ~0.8 in SmolLM2's
  logits, as between one prefill and a prefill plus a decode step), so near-ties can go the
  other way (BENCHMARKS.md).
- `Generation.last_logits` is the model's output for the token that `step()` last returned:
  a read-only float32 view [vocab_size] of the raw logits (before repetition penalty,
  temperature or any filter), valid until the next `step()` of any generation on the same `Llm`
  (copy it to keep it). None before the first step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime import budget
from runtime.engine.artifact import open_artifact
from runtime.engine.errors import ArtifactError, EngineUsageError, InputError
from runtime.engine.llm.embedding import table_lookup
from runtime.engine.llm.lookup import LookupConfig, PromptLookup
from runtime.engine.llm.runners import Runner, make_runner
from runtime.engine.llm.sampling import Sampler, SamplingParams
from runtime.engine.llm.text import ChatTemplate, StopFilter, TextStream, load_tokenizer
from runtime.engine.session import open_session
from runtime.manifest import LlmInfo
from runtime.profile import Profile

__all__ = [
    "Generation",
    "GenerationConfig",
    "Llm",
    "LookupConfig",
    "cache_length",
    "max_length_for_budget",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    time_budget_s: float | None = None
    truncate: bool = False  # keep the prompt's last tokens when it is too long
    # Greedy speculative decoding with prompt-lookup drafts (lookup.py): same tokens, fewer
    # graph runs when the output repeats its context. Used only for greedy sampling on graphs
    # that can verify (fused exports with `num_logits`); None turns it off.
    lookup: LookupConfig | None = None
    # A guess at the output (text or token ids), e.g. the previous translation of a sentence
    # that grew: drafted from while the output follows it. Needs `lookup`.
    draft: str | Sequence[int] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 1 << 20:
            raise EngineUsageError(f"max new tokens must be >= 1, got {self.max_new_tokens}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise EngineUsageError(f"time budget must be > 0 s, got {self.time_budget_s}")


def cache_length(
    info: LlmInfo,
    weights_bytes: int,
    profile: Profile | None,
    requested: int | None,
    where: str,
) -> int:
    """The KV cache's length in tokens: `requested`, or the board's default
    (`budget.llm_max_tokens`, else the export's max length) bounded by the export's max length
    and what the board's RSS budget leaves. A requested length above either limit is an error
    that names it; a default above them is lowered, and the log says so."""
    board_len = max_length_for_budget(info, weights_bytes, profile)
    board = f"board {profile.name}" if profile is not None else "the host"
    if board_len < 16:
        raise ArtifactError(
            f"{where}: the weights leave no room for a KV cache within {board}'s RSS budget; "
            "use a smaller model or quant"
        )
    if requested is not None:
        if requested < 16:
            raise EngineUsageError(f"max length {requested}: must be at least 16 tokens")
        if requested > info.max_length:
            raise EngineUsageError(
                f"max length {requested} is above this artifact's {info.max_length} tokens "
                "(its export's --max-length); ask for fewer, or re-export with a larger one"
            )
        if requested > board_len:
            raise EngineUsageError(
                f"max length {requested}: the KV cache would not fit {board}'s "
                f"{profile.budget.max_rss_mb if profile else 0} MiB RSS budget beside the weights "
                f"(room for {board_len} tokens); ask for at most {board_len}"
            )
        return requested
    want = profile.budget.llm_max_tokens if profile is not None else info.max_length
    length = min(want, info.max_length, board_len)
    if length < want:
        log.info(
            "KV cache: %d tokens (%s's default %d; export %d, RSS budget %d)",
            length,
            board,
            want,
            info.max_length,
            board_len,
        )
    return length


def max_length_for_budget(info: LlmInfo, weights_bytes: int, profile: Profile | None) -> int:
    """The longest KV cache the board's RSS budget leaves room for (capped by the export's):
    `runtime.budget.kv_room`, the sum the export check and the flash check make too."""
    return budget.kv_room(info, weights_bytes, profile)


class Llm:
    """A loaded LLM artifact: session, tokenizer, template and its one KV cache."""

    def __init__(
        self,
        info: LlmInfo,
        session_runner: Runner,
        tokenizer_path: Path,
        chat_template: str | None,
        where: str,
        max_length: int | None = None,
    ) -> None:
        self.info = info
        self.where = where
        self._runner = session_runner
        self.tokenizer = load_tokenizer(tokenizer_path)
        self._template_text = chat_template
        self.max_length = min(max_length or info.max_length, session_runner.max_length)
        self.eos_ids = frozenset(info.eos_token_ids)
        self._cached: list[int] = []  # tokens whose K/V are in the cache, in order
        self._active: Generation | None = None
        self._weights = 0
        self._profile: Profile | None = None

    @classmethod
    def from_artifact(
        cls,
        path: str | Path,
        profile: Profile | None = None,
        *,
        threads: int | None = None,
        verify: bool = True,
        max_length: int | None = None,
    ) -> Llm:
        """Load an artifact. `max_length` is the tokens one conversation holds (prompt + new
        tokens); None takes the board profile's `budget.llm_max_tokens` (without a profile,
        the export's max length), bounded by the export's and the RSS budget's. A fused graph
        whose KV length is symbolic (exports from this version on) allocates its KV buffers
        for exactly that many tokens; an older fused graph allocates the length it was
        exported with. A `max_length` above the export's or the budget's is an error."""
        art = open_artifact(path, "llm", verify=verify)
        m = art.manifest
        info = m.llm
        assert info is not None  # the manifest checks kind llm has it
        where = str(art.path)
        if m.tokenizer is None or not m.tokenizer.files:
            raise ArtifactError(f"{where}: the manifest lists no tokenizer files; re-export")
        tok = next((f for f in m.tokenizer.files if f.endswith("tokenizer.json")), None)
        if tok is None:
            raise ArtifactError(f"{where}: no tokenizer.json among {m.tokenizer.files}")
        weights = budget.weights_bytes(m)
        length = cache_length(info, weights, profile, max_length, where)
        model, sha = art.graph_file("decoder")
        # The fused graph (~10 nodes a layer) optimizes at load in as little time as the cached
        # graph takes to read (qwen2.5-0.5b int4: 0.38 s either way), and the cache would be a
        # second copy of every weight next to the artifact (377 MB): not cached. optimum's graph
        # (thousands of nodes) is.
        cache = info.graph_kind != "fused"
        session = open_session(model, profile, threads=threads, identity=sha, cache=cache)
        runner = make_runner(session, info, where, length, table_lookup(m, art.path))
        board_len = max_length_for_budget(info, weights, profile)
        if profile is not None and runner.max_length > board_len:
            need = math.ceil(budget.memory(m, runner.max_length).rss_mb)
            raise ArtifactError(
                f"{where}: this fused artifact holds a KV buffer of {runner.max_length} tokens; "
                f"weights + KV + activations + runtime need about {need} MiB, over board "
                f"{profile.name}'s {profile.budget.max_rss_mb} MiB RSS budget; re-export with "
                f"--max-length {max(64, length // 64 * 64)} or a smaller quantization"
            )
        llm = cls(info, runner, art.file(tok), m.tokenizer.chat_template, where, length)
        llm._weights, llm._profile = weights, profile
        return llm

    def resize(self, max_length: int) -> None:
        """Size the KV cache for `max_length` tokens (prompt + new tokens) from now on, e.g.
        exactly what one run needs; the same limits as `from_artifact`'s. Forgets the cache."""
        length = cache_length(self.info, self._weights, self._profile, max_length, self.where)
        self.reset()
        self._runner.resize(length)
        self.max_length = min(length, self._runner.max_length)

    @property
    def length_limit(self) -> int:
        """The most tokens `resize` takes: the export's max length, or less where the board's
        RSS budget leaves less room."""
        return min(
            self.info.max_length, max_length_for_budget(self.info, self._weights, self._profile)
        )

    @property
    def kv_bytes(self) -> int:
        """Bytes of the KV buffers as allocated (fused graphs; optimum's grows per token)."""
        return self._runner.kv_bytes

    # -- prompts ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of raw text, exactly as the model's tokenizer gives them (no template
        beyond what the tokenizer's own post-processor adds, e.g. a BOS)."""
        ids: list[int] = self.tokenizer.encode(text).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids))
        return text

    def chat(self, messages: Sequence[dict[str, str]], enable_thinking: bool = False) -> str:
        """The chat prompt for `messages`, rendered from the model's template (no Jinja)."""
        template = ChatTemplate.parse(self._template_text, self.where)
        return template.render(messages, True, enable_thinking)

    def encode_chat(self, prompt: str) -> list[int]:
        """Encode a rendered chat prompt: special-token markers become their ids; no BOS is
        added by the post-processor when the template writes its own."""
        ids: list[int] = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        return ids

    # -- generation ------------------------------------------------------------------------

    def start(
        self, prompt: str | Sequence[int], config: GenerationConfig | None = None
    ) -> Generation:
        config = config or GenerationConfig()
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise InputError("the prompt is empty (no tokens); give at least one token")
        bad = [t for t in ids if not 0 <= t < self.info.vocab_size]
        if bad:
            raise InputError(
                f"token id {bad[0]} is outside the vocabulary (0..{self.info.vocab_size - 1})"
            )
        if len(ids) >= self.max_length:
            if not config.truncate:
                raise InputError(
                    f"the prompt has {len(ids)} tokens; this model's max length here is "
                    f"{self.max_length} (prompt + new tokens); shorten it or ask to truncate"
                )
            keep = max(1, self.max_length // 2)
            log.warning("prompt truncated to its last %d of %d tokens", keep, len(ids))
            ids = ids[-keep:]
        if self._active is not None:
            self._active._superseded = True
        gen = Generation(self, ids, config)
        self._active = gen
        return gen

    def prefill(self, ids: Sequence[int]) -> None:
        """Put `ids` in the KV cache now (a fixed system prompt), so later prompts that start
        with them only prefill the rest."""
        self._feed(list(ids), reuse=True)

    def reset(self) -> None:
        """Forget the KV cache (the next prompt prefills from its first token)."""
        self._runner.truncate(0)
        self._cached.clear()

    @property
    def cached_tokens(self) -> int:
        return len(self._cached)

    def _feed(self, ids: list[int], reuse: bool) -> np.ndarray:
        """Make the cache hold exactly `ids` and return the logits after the last one."""
        common = 0
        if reuse:
            limit = min(len(self._cached), len(ids) - 1)
            while common < limit and self._cached[common] == ids[common]:
                common += 1
        self._runner.truncate(common)
        del self._cached[common:]
        new = np.asarray(ids[common:], dtype=np.int64)
        logits = self._runner.forward(new)
        self._cached.extend(ids[common:])
        return logits

    def _feed_one(self, token: int) -> np.ndarray:
        logits = self._runner.forward(np.array([token], dtype=np.int64))
        self._cached.append(token)
        return logits

    def _verify(self, ids: list[int]) -> np.ndarray:
        """Append ids to the cache; the logits [len(ids), vocab] after each of them."""
        logits = self._runner.verify(np.asarray(ids, dtype=np.int64))
        self._cached.extend(ids)
        return logits

    def _rollback(self, n: int) -> None:
        """Keep the first n cached tokens (a draft's rejected ones go)."""
        self._runner.truncate(n)
        del self._cached[n:]

    @property
    def can_verify(self) -> bool:
        """Whether the graph scores several positions per run (speculative decoding)."""
        return self._runner.can_verify

    @property
    def session_seconds(self) -> float:
        return self._runner.run_seconds()


class Generation:
    """One generation in progress. Not thread-safe, except `cancel()`."""

    def __init__(self, llm: Llm, prompt_ids: list[int], config: GenerationConfig) -> None:
        self._llm = llm
        self.prompt_ids = prompt_ids
        self.config = config
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self._sampler = Sampler(config.sampling, llm.info.vocab_size)
        self._sampler.observe(prompt_ids)
        self._stream = TextStream(llm.tokenizer)
        self._stops = StopFilter(config.stop)
        self._cancel = threading.Event()
        self._superseded = False
        self._pending: str = ""
        self.text = ""
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self.decode_s = 0.0
        self.reused_tokens = 0
        self._last_logits: np.ndarray | None = None
        # Speculative decoding state: accepted tokens (with their logits) not yet handed out
        self._queue: list[tuple[int, np.ndarray]] = []
        self._lookup: PromptLookup | None = None
        self.decode_runs = 0  # graph runs after the prefill
        self.verify_runs = 0  # of which verified a draft
        self.drafted = 0  # draft tokens proposed
        self.accepted = 0  # draft tokens accepted
        if config.draft is not None and config.lookup is None:
            raise EngineUsageError("a draft needs lookup=LookupConfig(...) in the config")
        if config.lookup is not None and config.sampling.greedy and llm.can_verify:
            draft = config.draft or ()
            if isinstance(draft, str):
                draft = llm.encode_chat(draft)
            self._lookup = PromptLookup(config.lookup, prompt_ids, [int(t) for t in draft])
        self._k = config.lookup.max_draft if config.lookup is not None else 0

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def cancel(self) -> None:
        """Stop before the next token (safe from another thread)."""
        self._cancel.set()

    def step(self) -> int | None:
        """Run the model once and return the next token, or None when the generation ended."""
        if self.done:
            return None
        if self._superseded:
            raise EngineUsageError("this generation was ended by a newer start() on the same Llm")
        if self._cancel.is_set():
            self._finish("cancelled")
            return None
        llm = self._llm
        if self.tokens:
            if (
                self.config.time_budget_s is not None
                and time.perf_counter() - self.started > self.config.time_budget_s
            ):
                self._finish("time")
                return None
            # the cache as plain decoding holds it: prompt and all returned tokens but the last
            if len(self.prompt_ids) + len(self.tokens) >= llm.max_length:
                self._finish("length")
                return None
            t0 = time.perf_counter()
            if self._queue:
                token, logits = self._queue.pop(0)
            elif self._lookup is not None:
                token, logits = self._speculate()
            else:
                logits = llm._feed_one(self.tokens[-1])
                token = self._sampler(logits)
                self.decode_runs += 1
            self.decode_s += time.perf_counter() - t0
        else:
            before = len(llm._cached)
            logits = llm._feed(self.prompt_ids, reuse=True)
            self.reused_tokens = min(before, len(self.prompt_ids) - 1) if before else 0
            token = self._sampler(logits)
            if self._lookup is not None:
                self._lookup.generated([token])
            self.first_token_s = time.perf_counter() - self.started
        self._last_logits = logits
        self.tokens.append(token)
        self._sampler.observe([token])
        self._emit(token)
        if token in llm.eos_ids:
            self._finish("eos")
        elif self._stops.stopped:
            self._finish("stop")
        elif len(self.tokens) >= self.config.max_new_tokens:
            self._finish("max_new_tokens")
        return token

    def _speculate(self) -> tuple[int, np.ndarray]:
        """One step with a draft: verify it with one run, queue the accepted tokens (greedy's
        own choices at each position up to the first that differs from the draft, plus that
        one), roll the cache back over the rest, and return the first."""
        llm, lookup = self._llm, self._lookup
        assert lookup is not None
        last = self.tokens[-1]
        base = len(llm._cached)  # the last token is not in the cache yet
        room = min(
            self._k,
            self.config.max_new_tokens - len(self.tokens) - 1,
            llm.max_length - base - 2,
        )
        draft = lookup.propose(room) if room > 0 else []
        self.decode_runs += 1
        if not draft:
            logits = llm._feed_one(last)
            token = self._sampler(logits)
            lookup.generated([token])
            return token, logits
        rows = llm._verify([last, *draft])
        self.verify_runs += 1
        self.drafted += len(draft)
        sampler, queue = self._sampler, self._queue
        for i, row in enumerate(rows):
            token = sampler(row)
            sampler.observe([token])  # a repetition penalty sees it as the next step would
            queue.append((token, row))
            if i == len(draft) or draft[i] != token:
                break
        self.accepted += len(queue) - 1
        # The draft length follows the acceptance (a verify costs more per position than it
        # saves when drafts miss): longer after a full accept, shorter after a miss.
        if len(queue) > len(draft):
            self._k = min(self._k + 2, lookup.config.max_draft)
        else:
            self._k = max(1, self._k - 1)
        llm._rollback(base + len(queue))  # keep the last token and the accepted draft
        lookup.generated([t for t, _ in queue])
        return queue.pop(0)

    def _emit(self, token: int) -> None:
        if token in self._llm.eos_ids:
            return
        out = self._stops.feed(self._stream.push(token))
        self._pending += out
        self.text += out

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        if reason != "stop":
            tail = self._stops.feed(self._stream.flush()) + self._stops.flush()
            self._pending += tail
            self.text += tail

    def take_text(self) -> str:
        """Text released since the last call (whole characters, never part of a stop string)."""
        out, self._pending = self._pending, ""
        return out

    def __iter__(self) -> Iterator[str]:
        """Text deltas until the generation ends."""
        while not self.done:
            self.step()
            delta = self.take_text()
            if delta:
                yield delta
        delta = self.take_text()
        if delta:
            yield delta

    @property
    def last_logits(self) -> np.ndarray | None:
        """Raw logits [vocab_size] (float32, read-only) that chose the last token `step()`
        returned; overwritten by the next step on the same `Llm`, so copy to keep. None before
        the first step."""
        if self._last_logits is None:
            return None
        view = self._last_logits.view()
        view.flags.writeable = False
        return view

    @property
    def decode_tokens_per_s(self) -> float:
        n = len(self.tokens) - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else 0.0
