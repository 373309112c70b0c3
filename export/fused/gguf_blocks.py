"""A GGUF file's quantized blocks in MatMulNBits layout, kept exactly instead of re-quantized.

GGUF stores a linear weight [N, K] as rows of blocks of 32 along K. Three block types map onto
onnxruntime's MatMulNBits (w = (code - zero_point) * scale, fp32 scales) without changing one
weight:

    Q4_0  d (fp16), 32 x 4-bit q        w = d * (q - 8)       -> 4-bit, block 32, zero point 8
    Q8_0  d (fp16), 32 x int8 q         w = d * q             -> 8-bit, block 32, zero point 128
    Q4_1  d, m (fp16), 32 x 4-bit q     w = d * q + m         -> 4-bit, block 32, zero point 0,
                                                                 and the block minimum m

fp16 scales convert to fp32 exactly. Q4_1's minimum is not a MatMulNBits zero point (that would
be -m/d, rarely an integer, and a float zero point rounds (q + m/d) * d), so it is kept as it
is (`Quantized.mins`) and the graph adds sum over blocks of m * (the input's block sum): the
weights are the file's bit for bit, the arithmetic is llama.cpp's own split of a Q4_1 dot
product. A 4-bit type also maps exactly onto 8 bits (--quant int8, or an 8-bit table).

Everything else is re-quantized from the dequantized weights, and `Plan.record` says which
tensor was kept exactly and which was re-quantized from what (the manifest carries it):
Q8_0 asked for at 4 bits, another block size than 32, and the K-quants. Q4_K (per 32-weight
sub-block: scale d * sc and minimum dmin * m, both exact in fp32) and Q5_K / Q6_K (5 and 6-bit
codes, exact on 8-bit blocks of 32 and 16) would map the same way; they are re-quantized until
a file of those types is tested here.

Llama GGUFs store q and k with their rows permuted for llama.cpp's rotary layout; rows are
put back in Hugging Face's order (whole rows move, so blocks stay intact). Every exact tensor
is checked against the float weights transformers loaded from the same file before use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.fused.errors import FusedError
from export.fused.quant import Quantized, dequantize, pack

log = logging.getLogger(__name__)

GGUF_BLOCK = 32
# Block types kept exactly: the bits their codes need, and whether they carry a minimum.
EXACT = {"Q4_0": (4, False), "Q4_1": (4, True), "Q8_0": (8, False)}


@dataclass(frozen=True)
class _Codes:
    """One GGUF tensor unpacked: w = (codes - zero) * scales (+ mins), codes in [0, 2^bits)."""

    codes: np.ndarray  # uint8 [N, k_blocks, 32]
    scales: np.ndarray  # float32 [N, k_blocks]
    zero: int  # the zero point every block of this type has
    mins: np.ndarray | None  # float32 [N, k_blocks]
    bits: int


@dataclass
class Plan:
    """Which weights the graph takes from the file's blocks, and what became of each."""

    blocks: GgufBlocks
    # graph weight name -> "Q4_1 exact" | "Q4_K re-quantized to int4 block 32" | ...
    record: dict[str, str] = field(default_factory=dict)

    def quantized(
        self, name: str, parts: list[str], bits: int, block_size: int, allow_mins: bool = True
    ) -> Quantized | None:
        """`parts` (HF names, concatenated along N) as a `Quantized` of `bits`, or None (the
        caller re-quantizes; the reason is recorded)."""
        types = [self.blocks.qtype(p) for p in parts]
        kinds = "+".join(sorted(set(types)))
        why = self._refusal(types, bits, block_size, allow_mins)
        if why:
            self.record[name] = f"{kinds} re-quantized to {bits}-bit block {block_size} ({why})"
            return None
        q = _combine([self.blocks.codes(p) for p in parts], bits)
        self.record[name] = f"{kinds} exact ({bits}-bit block {GGUF_BLOCK})"
        return q

    @staticmethod
    def _refusal(types: list[str], bits: int, block_size: int, allow_mins: bool) -> str:
        for t in types:
            if t not in EXACT:
                return f"{t} has no exact MatMulNBits form here"
            if EXACT[t][0] > bits:
                return f"{t} needs {EXACT[t][0]} bits"
            if EXACT[t][1] and not allow_mins:
                return f"{t}'s block minimums are not supported in the table lookup"
        if block_size != GGUF_BLOCK:
            return f"--block-size {block_size} is not the file's {GGUF_BLOCK}"
        return ""

    def summary(self) -> dict[str, Any]:
        """For the manifest: weights kept exactly and re-quantized, by name."""
        exact = {k: v for k, v in self.record.items() if " exact" in v}
        other = {k: v for k, v in self.record.items() if k not in exact}
        return {"file_types": self.blocks.type_counts(), "exact": exact, "requantized": other}


class GgufBlocks:
    """The quantized tensors of one GGUF file, by Hugging Face weight name."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        import gguf

        self.path = path
        try:
            self.reader = gguf.GGUFReader(str(path))
        except Exception as e:  # gguf raises plain exceptions on a cut file
            raise FusedError(f"{path}: unreadable GGUF ({e}); re-download it") from e
        self.tensors = {t.name: t for t in self.reader.tensors}
        arch_name = bytes(
            self.reader.fields["general.architecture"].parts[
                self.reader.fields["general.architecture"].data[0]
            ]
        ).decode()
        arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name), None)
        if arch is None:
            raise FusedError(f"{path}: GGUF architecture {arch_name!r} is unknown to gguf-py")
        self.arch = arch_name
        self.names = gguf.get_tensor_name_map(arch, int(config["num_hidden_layers"]))
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config.get("num_key_value_heads") or self.heads)

    def gguf_name(self, hf_name: str) -> str:
        base, _, suffix = hf_name.rpartition(".")
        name = self.names.get_name(base)
        if name is None or f"{name}.{suffix}" not in self.tensors:
            if hf_name == "lm_head.weight" and "output.weight" not in self.tensors:
                name = "token_embd"  # tied: the head is the embedding table
            else:
                raise FusedError(f"{self.path}: no GGUF tensor for weight {hf_name!r}")
        return f"{name}.{suffix}"

    def qtype(self, hf_name: str) -> str:
        return str(self.tensors[self.gguf_name(hf_name)].tensor_type.name)

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        return dict(sorted(counts.items()))

    def codes(self, hf_name: str) -> _Codes:
        name = self.gguf_name(hf_name)
        t = self.tensors[name]
        raw = np.asarray(t.data, dtype=np.uint8)  # [N, row bytes]
        n = raw.shape[0]
        raw = raw[self._row_order(name, n)]
        qtype = t.tensor_type.name
        if qtype == "Q8_0":
            b = raw.reshape(n, -1, 34)
            d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
            q = b[..., 2:].copy().view(np.int8)
            return _Codes((q.astype(np.int16) + 128).astype(np.uint8), d, 128, None, 8)
        size = 18 if qtype == "Q4_0" else 20
        b = raw.reshape(n, -1, size)
        d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        mins = None
        if qtype == "Q4_1":
            mins = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = b[..., size - 16 :]
        # byte j holds weight j (low nibble) and weight j + 16 (high nibble)
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
        return _Codes(codes, d, 8 if qtype == "Q4_0" else 0, mins, 4)

    def _row_order(self, gguf_name: str, n: int) -> np.ndarray:
        """Rows in Hugging Face's order: llama.cpp's converter permutes llama's q and k."""
        rows = np.arange(n)
        if self.arch != "llama" or not (".attn_q." in gguf_name or ".attn_k." in gguf_name):
            return rows
        heads = self.heads if ".attn_q." in gguf_name else self.kv_heads
        # transformers' reverse permutation, applied to row indices
        return rows.reshape(heads, n // heads // 2, 2).swapaxes(2, 1).reshape(n)


def _combine(parts: list[_Codes], bits: int) -> Quantized:
    """Concatenate tensors (along N) into one `Quantized` of `bits`: codes moved to that grid's
    zero point; explicit zero points and minimums as soon as one part has minimums."""
    mid = 1 << (bits - 1)
    with_mins = any(p.mins is not None for p in parts)
    codes, scales, zps, mins = [], [], [], []
    for p in parts:
        zero = p.zero if with_mins else mid  # without minimums, every part shares 2^(bits-1)
        shifted = p.codes.astype(np.int16) - p.zero + zero
        codes.append(shifted.astype(np.uint8))
        scales.append(p.scales)
        zps.append(np.full(p.scales.shape, zero, np.uint8))
        mins.append(p.mins if p.mins is not None else np.zeros_like(p.scales))
    c = np.concatenate(codes)
    kb = c.shape[1]
    return Quantized(
        pack(c, bits),
        np.concatenate(scales),
        pack(np.concatenate(zps), bits) if with_mins else None,
        bits,
        GGUF_BLOCK,
        kb * GGUF_BLOCK,
        np.concatenate(mins) if with_mins else None,
    )


def check_exact(q: Quantized, w: np.ndarray, name: str) -> None:
    """The blocks dequantize to exactly the float weights transformers read from the file."""
    got = dequantize(q)
    if got.shape != w.shape or not np.array_equal(got, w.astype(np.float32)):
        diff = float(np.abs(got - w).max()) if got.shape == w.shape else float("nan")
        raise FusedError(
            f"weight {name}: the GGUF blocks do not reproduce the file's dequantized weights "
            f"(shape {got.shape} vs {w.shape}, max diff {diff:.3g}); this is a bug in Ocula"
        )
