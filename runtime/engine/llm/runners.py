"""The two LLM graph kinds behind one small interface: feed new token ids, get last logits.

`FusedRunner` drives the fused graph (GroupQueryAttention; past and present are one buffer
per layer, updated in place, of the runner's max length: the caller's, up to the export's, when
the graph's KV length axis is symbolic). Every buffer the hot loop touches is
allocated once, when the runner is made, and bound once: the KV buffers (each past and its
present bound to the same OrtValue), the one-token input, `seqlens_k`, `total_sequence_length`
and the logits output are numpy arrays shared with OrtValues, so a decode step writes three
numbers in place and calls `run_with_iobinding` with nothing rebound. A prefill of S tokens
binds its own input once. A graph that takes its embedding table's rows instead of ids (the
runtime looks the table up, `embedding.TableLookup`) gets them read into bound buffers the same
way: codes and scales of one token bound once, a prefill's bound for its run.

`OptimumRunner` drives optimum's graph, where present = concat(past, new): the shapes grow by
one position per token, so the present OrtValues are left to onnxruntime's arena (which reuses
the same blocks) and fed back as the next past without a copy through numpy. The attention
mask is a view of one max-length buffer of ones.

Both keep `length` (tokens in the cache) and `truncate(n)` to reuse a cached prefix.

Speculative verify (`can_verify`, fused graphs that have the optional `num_logits` input):
`verify(ids)` appends S tokens like a prefill and returns the logits of all S positions
[S, vocab] (a preallocated buffer bound per S); rejected positions are dropped with
`truncate`, which only moves the length back (the next run overwrites them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.engine import kv
from runtime.engine.errors import ArtifactError
from runtime.engine.llm.embedding import TableLookup
from runtime.manifest import LlmInfo

__all__ = ["FusedRunner", "OptimumRunner", "Runner", "make_runner"]

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

# The most positions one verify run scores (the draft plus one).
VERIFY_MAX = 16
# The fused graph's optional input: how many last positions get logits (default 1).
NUM_LOGITS = "num_logits"

_DTYPES: dict[str, type[np.floating[Any]]] = {"float32": np.float32, "float16": np.float16}


class Runner:
    """Common state: the cache length and the session."""

    length: int
    max_length: int
    kv_bytes: int
    can_verify = False  # verify() is available

    def forward(self, ids: I64) -> F32:  # pragma: no cover - interface
        raise NotImplementedError

    def verify(self, ids: I64) -> F32:  # pragma: no cover - interface
        raise NotImplementedError

    def truncate(self, n: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def resize(self, max_length: int) -> None:
        """Hold at most `max_length` tokens from now on (the cache is emptied)."""
        self.truncate(0)

    def run_seconds(self) -> float:
        return self._run_s

    _run_s = 0.0


def make_runner(
    session: ort.InferenceSession,
    info: LlmInfo,
    where: str,
    max_length: int | None = None,
    lookup: TableLookup | None = None,
) -> Runner:
    """The runner for the graph kind; `max_length` (default: the export's) sizes the fused
    graph's KV buffers when their length axis is symbolic. `lookup` (`embedding.table_lookup`
    of the artifact) is required by, and only by, a graph that takes its table's rows."""
    if info.kv is None:
        raise ArtifactError(f"{where}: the manifest has no KV layout (llm.kv)")
    names = {i.name for i in session.get_inputs()}
    rows = lookup.layout.codes_input if lookup is not None else None
    if rows is not None and rows not in names:
        raise ArtifactError(
            f"{where}: the manifest describes an embedding table read into input {rows!r}, which "
            "the graph does not have; the manifest and the model do not belong together "
            "(re-export)"
        )
    if rows is None and info.input_ids not in names:
        raise ArtifactError(
            f"{where}: the graph takes no {info.input_ids!r} and the manifest describes no "
            "embedding table to feed it with; re-export the artifact"
        )
    for name in _kv_names(info, info.kv.past):
        if name not in names:
            raise ArtifactError(
                f"{where}: the graph has no input {name!r} that the manifest's KV layout "
                "names; the manifest and the model do not belong together (re-export)"
            )
    if info.graph_kind == "fused" and info.kv.shared_buffer:
        return FusedRunner(session, info, max_length, lookup)
    if info.graph_kind == "optimum" and not info.kv.shared_buffer:
        return OptimumRunner(session, info)
    raise ArtifactError(
        f"{where}: graph kind {info.graph_kind!r} with shared_buffer={info.kv.shared_buffer} "
        "is not a combination this runtime drives (fused+shared or optimum+separate)"
    )


def _kv_names(info: LlmInfo, template: str) -> list[str]:
    assert info.kv is not None
    return kv.names(template, info.layers, info.kv.kinds)


def _kv_dtype(info: LlmInfo) -> type[np.floating[Any]]:
    assert info.kv is not None
    try:
        return _DTYPES[info.kv.dtype]
    except KeyError:
        raise ArtifactError(f"KV dtype {info.kv.dtype!r} is not supported") from None


class FusedRunner(Runner):
    def __init__(
        self,
        session: ort.InferenceSession,
        info: LlmInfo,
        max_length: int | None = None,
        lookup: TableLookup | None = None,
    ) -> None:
        import time

        self._time = time.perf_counter
        self.session = session
        first = info.kv.past.format(layer=0, kind=info.kv.kinds[0])  # type: ignore[union-attr]
        declared = next(i.shape for i in session.get_inputs() if i.name == first)[2]
        # A symbolic length axis takes buffers of any length up to the export's (its rotary
        # tables); a fixed one only its own.
        self._fixed = declared if isinstance(declared, int) else None
        if self._fixed is not None:
            self.max_length = self._fixed
        else:
            self.max_length = min(max_length or info.max_length, info.max_length)
        self.length = 0
        self._info = info
        self._binding = session.io_binding()
        self._kv: list[np.ndarray] = []
        self._allocate(self.max_length)
        self._ids1 = np.zeros((1, 1), np.int64)
        self._lookup = lookup
        # The one-token inputs, bound once: its id, or its row's codes and scales
        one: list[tuple[str, np.ndarray]] = [(info.input_ids, self._ids1)]
        if lookup is not None:
            codes, scales = lookup.buffers(1)
            self._codes1, self._scales1 = codes[0], scales[0]
            one = [(lookup.layout.codes_input, codes), (lookup.layout.scales_input, scales)]
        self._one = [(name, ort.OrtValue.ortvalue_from_numpy(a)) for name, a in one]
        self._seqlens = np.zeros(1, np.int32)
        self._total = np.zeros((), np.int32)
        self._binding.bind_ortvalue_input(
            "seqlens_k", ort.OrtValue.ortvalue_from_numpy(self._seqlens)
        )
        self._binding.bind_ortvalue_input(
            "total_sequence_length", ort.OrtValue.ortvalue_from_numpy(self._total)
        )
        out = {o.name: o for o in session.get_outputs()}
        logits_dtype = np.float16 if out[info.logits].type == "tensor(float16)" else np.float32
        self._logits = np.zeros((1, 1, info.vocab_size), logits_dtype)
        self._ids_name = info.input_ids
        self._prefill: list[np.ndarray] = []  # a prefill's inputs, alive while bound
        self._prefill_bound = True  # the one-token input is not bound yet
        # Speculative verify: graphs with the optional num_logits input (older exports have
        # none and return the last position only).
        optional = {i.name for i in session.get_overridable_initializers()}
        optional |= {i.name for i in session.get_inputs()}
        self.can_verify = NUM_LOGITS in optional
        self._logits_name = info.logits
        self._num_logits = np.ones(1, np.int64)
        self._many = np.zeros((1, VERIFY_MAX, info.vocab_size), logits_dtype)
        self._many_values: dict[int, ort.OrtValue] = {}
        self._one_logits = ort.OrtValue.ortvalue_from_numpy(self._logits)
        self._binding.bind_ortvalue_output(self._logits_name, self._one_logits)
        if self.can_verify:
            self._binding.bind_ortvalue_input(
                NUM_LOGITS, ort.OrtValue.ortvalue_from_numpy(self._num_logits)
            )

    def _allocate(self, length: int) -> None:
        """KV buffers of `length` tokens, each bound as its layer's past and present."""
        info = self._info
        assert info.kv is not None
        shape = (1, info.kv_heads, length, info.kv_head_dim)
        self._kv = []  # the old buffers go before the new ones are made
        pasts = _kv_names(info, info.kv.past)
        self._kv, self._kv_values = kv.allocate(len(pasts), shape, _kv_dtype(info))
        self.kv_bytes = sum(a.nbytes for a in self._kv)
        kv.bind(self._binding, pasts, _kv_names(info, info.kv.present), self._kv_values)
        self.max_length = length

    def resize(self, max_length: int) -> None:
        """New KV buffers of `max_length` tokens (a graph whose length axis is fixed keeps its
        own); the cache is emptied."""
        self.length = 0
        if self._fixed is None and max_length != self.max_length:
            self._kv_values = []
            self._allocate(min(max_length, self._info.max_length))

    def _run(self, n: int) -> None:
        """One run of the bound graph that leaves n tokens in the cache."""
        self._seqlens[0] = n - 1
        self._total[()] = n
        t0 = self._time()
        self.session.run_with_iobinding(self._binding)
        self._run_s += self._time() - t0
        self.length = n

    def forward(self, ids: I64) -> F32:
        n = self.length + ids.size
        if ids.size == 1:
            if self._lookup is None:
                self._ids1[0, 0] = ids[0]
            else:
                self._lookup.read(ids, self._codes1, self._scales1)
            if self._prefill_bound:
                for name, value in self._one:
                    self._binding.bind_ortvalue_input(name, value)
                self._prefill_bound = False
        else:
            self._bind_prefill(ids)
        self._run(n)
        logits = self._logits[0, 0]
        out: F32 = logits if logits.dtype == np.float32 else logits.astype(np.float32)
        return out

    def verify(self, ids: I64) -> F32:
        """Append ids (2..VERIFY_MAX of them) and return every position's logits [S, vocab]."""
        m = ids.size
        if not self.can_verify or not 1 < m <= VERIFY_MAX:
            raise ValueError(f"verify takes 2..{VERIFY_MAX} tokens on a graph with num_logits")
        self._bind_prefill(ids)
        value = self._many_values.get(m)
        if value is None:
            value = ort.OrtValue.ortvalue_from_numpy(self._many[:, :m])
            self._many_values[m] = value
        self._binding.bind_ortvalue_output(self._logits_name, value)
        self._num_logits[0] = m
        try:
            self._run(self.length + m)
        finally:
            self._num_logits[0] = 1
            self._binding.bind_ortvalue_output(self._logits_name, self._one_logits)
        logits = self._many[0, :m]
        out: F32 = logits if logits.dtype == np.float32 else logits.astype(np.float32)
        return out

    def _bind_prefill(self, ids: I64) -> None:
        if self._lookup is None:
            names = [self._ids_name]
            self._prefill = [np.ascontiguousarray(ids.reshape(1, -1), dtype=np.int64)]
        else:
            codes, scales = self._lookup.buffers(ids.size)
            self._lookup.read(ids, codes[0], scales[0])
            names = [name for name, _ in self._one]
            self._prefill = [codes, scales]
        for name, a in zip(names, self._prefill, strict=True):
            self._binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(a))
        self._prefill_bound = True

    def truncate(self, n: int) -> None:
        # Positions past n are overwritten by the next run; nothing to move.
        self.length = min(n, self.length)


class OptimumRunner(Runner):
    def __init__(self, session: ort.InferenceSession, info: LlmInfo) -> None:
        import time

        self._time = time.perf_counter
        self.session = session
        self.max_length = info.max_length
        self.length = 0
        self._info = info
        self._dtype = _kv_dtype(info)
        self._pasts = _kv_names(info, info.kv.past)  # type: ignore[union-attr]
        self._presents = _kv_names(info, info.kv.present)  # type: ignore[union-attr]
        inputs = {i.name for i in session.get_inputs()}
        self._mask_name = info.attention_mask if info.attention_mask in inputs else None
        self._pos_name = info.position_ids if info.position_ids in inputs else None
        self._mask = np.ones((1, info.max_length), np.int64)
        self._binding = session.io_binding()
        self.kv_bytes = 0
        self._empty = np.zeros((1, info.kv_heads, 0, info.kv_head_dim), self._dtype)
        self._past: list[ort.OrtValue] = []
        self.truncate(0)

    def forward(self, ids: I64) -> F32:
        b = self._binding
        n = self.length + ids.size
        b.bind_cpu_input(self._info.input_ids, np.ascontiguousarray(ids.reshape(1, -1), np.int64))
        if self._mask_name:
            b.bind_cpu_input(self._mask_name, self._mask[:, :n])
        if self._pos_name:
            b.bind_cpu_input(self._pos_name, np.arange(self.length, n, dtype=np.int64)[None])
        for name, value in zip(self._pasts, self._past, strict=True):
            b.bind_ortvalue_input(name, value)
        b.bind_output(self._info.logits, "cpu")
        for name in self._presents:
            b.bind_output(name, "cpu")
        t0 = self._time()
        self.session.run_with_iobinding(b)
        self._run_s += self._time() - t0
        outs = b.get_outputs()
        self._past = list(outs[1:])
        b.clear_binding_outputs()
        self.length = n
        logits = outs[0].numpy()[0, -1]
        self.kv_bytes = 2 * self._info.layers * n * self._info.kv_heads * self._info.kv_head_dim * 4
        out: F32 = logits.astype(np.float32, copy=False)
        return out

    def truncate(self, n: int) -> None:
        if n >= self.length and self._past:
            return
        if n == 0 or not self._past:
            self._past = [ort.OrtValue.ortvalue_from_numpy(self._empty) for _ in self._pasts]
            self.length = 0
            return
        self._past = [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[:, :, :n]))
            for v in self._past
        ]
        self.length = n
