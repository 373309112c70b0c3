"""A minimal host-side driver of a fused graph: the IO contract in code.

Used by the builder's tests, the fidelity measurement and the benchmarks; the device runtime
has its own engine that follows the same contract (see the package docstring). KV buffers are
allocated once as OrtValues; each past input and its present output are bound to the same
buffer, so onnxruntime appends the new rows in place and nothing is copied between runs.
A graph that takes embeddings (`FusedInfo.embedding`) is fed by the runtime's own lookup.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.fused.builder import FusedInfo
from export.fused.errors import FusedError


class FusedDecoder:
    """Prefill and step a fused graph with IO binding and an in-place KV cache."""

    def __init__(
        self, artifact_dir: Path, info: FusedInfo, threads: int = 2, spinning: bool = True
    ) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # Off where several sessions take turns on few cores (a spinning pool steals them)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(
            str(Path(artifact_dir) / info.onnx_file), so, providers=["CPUExecutionProvider"]
        )
        self.info = info
        kv = info.kv
        self.binding = self.session.io_binding()
        self._kv = []
        for layer in range(info.num_layers):
            for kind in kv.kinds:
                buf = ort.OrtValue.ortvalue_from_numpy(np.zeros(kv.shape, np.dtype(kv.dtype)))
                self._kv.append(buf)
                past, present = kv.names(layer, kind)
                self.binding.bind_ortvalue_input(past, buf)
                self.binding.bind_ortvalue_output(present, buf)
        self._logits = ort.OrtValue.ortvalue_from_numpy(
            np.zeros((1, 1, info.vocab_size), np.float32)
        )
        self.binding.bind_ortvalue_output("logits", self._logits)
        self.length = 0
        self._lookup = None
        if info.embedding is not None:
            from runtime.engine.llm.embedding import EmbeddingLayout, TableLookup

            layout = EmbeddingLayout.parse(info.embedding, str(artifact_dir))
            self._lookup = TableLookup(layout, Path(artifact_dir))

    def reset(self) -> None:
        """Forget the cache (the buffers are reused; rows past `length` are never read)."""
        self.length = 0

    def run(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Append tokens to the cache; return the logits [vocab] after the last of them."""
        tokens = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        total = self.length + tokens.shape[1]
        if total > self.info.max_length:
            raise FusedError(f"{total} tokens exceed the graph's max length {self.info.max_length}")
        if self._lookup is None:
            self.binding.bind_cpu_input("input_ids", tokens)
        else:
            codes, scales = self._lookup.buffers(tokens.shape[1])
            self._lookup.read(tokens[0], codes[0], scales[0])
            self.binding.bind_cpu_input(self._lookup.layout.codes_input, codes)
            self.binding.bind_cpu_input(self._lookup.layout.scales_input, scales)
        self.binding.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        self.binding.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        self.session.run_with_iobinding(self.binding)
        self.length = total
        logits: np.ndarray = self._logits.numpy()[0, 0]
        return logits

    def greedy(self, prompt: list[int], new_tokens: int, eos: tuple[int, ...] = ()) -> list[int]:
        """Greedy continuation of `prompt` (a fresh cache), up to `new_tokens` or an EOS."""
        self.reset()
        logits = self.run(prompt)
        out: list[int] = []
        for _ in range(new_tokens):
            token = int(np.argmax(logits))
            out.append(token)
            if token in eos or len(out) == new_tokens:
                break
            logits = self.run([token])
        return out

    def teacher_forced(self, tokens: list[int]) -> np.ndarray:
        """Logits [len(tokens) - 1, vocab] predicting tokens[1:], one run per token."""
        self.reset()
        rows = [self.run([t]).copy() for t in tokens[:-1]]
        return np.stack(rows)
