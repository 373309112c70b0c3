"""Block-wise weight quantization in numpy, in the layout of onnxruntime's MatMulNBits.

A linear weight W [N, K] (Hugging Face's [out, in]) is cut into blocks of `block_size` along K.
Each block gets one scale (and, asymmetric, one zero point); the codes are unsigned
`bits`-wide integers q with W ~= (q - zero_point) * scale, stored as uint8 [N, k_blocks, blob]
where blob = block_size * bits / 8; with 4 bits two codes share a byte, the first in the low
nibble. Zero points, when present, are packed the same way: uint8 [N, ceil(k_blocks*bits/8)].

A block may also carry a minimum added after scaling (`Quantized.mins`, w = (q - zero_point) *
scale + min): MatMulNBits has no such input, so the graph adds the blocks' minimums times the
input's block sums (export/fused/gguf_blocks.py keeps a GGUF Q4_1 file's blocks that way, exactly).

Symmetric blocks use the implicit zero point 2^(bits-1) and map the block's largest-magnitude
value exactly onto the code 0 (scale = that value / -2^(bits-1)), which uses the whole signed
range [-8, 7] instead of [-7, 7]. GatherBlockQuantized reads the same bytes viewed as
[N, K * bits / 8] (quantized along the last axis), which is how the tied embedding is stored once.
K is padded with zeros to a multiple of the block size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantized:
    """One weight in MatMulNBits layout."""

    packed: np.ndarray  # uint8 [N, k_blocks, blob]
    scales: np.ndarray  # float32 [N, k_blocks]
    zero_points: np.ndarray | None  # uint8 [N, ceil(k_blocks * bits / 8)] or None (symmetric)
    bits: int
    block_size: int
    k: int  # logical K before padding
    # float32 [N, k_blocks] or None: a per-block offset added after scaling, w = (q - zp) *
    # scale + min (a GGUF Q4_1 block's minimum, kept exactly; see export/fused/gguf_blocks.py)
    mins: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.packed.shape[0])


def quantize(
    w: np.ndarray, bits: int, block_size: int, symmetric: bool, search: bool = False
) -> Quantized:
    """Quantize W [N, K] block-wise along K, rounding to nearest.

    Without `search` this is onnxruntime's own round-to-nearest (same squared error, measured
    on SmolLM2's layers). With `search`, each block's grid is the one of a few candidates
    (symmetric: the peak mapped to code 0; asymmetric: min..max; each shrunk by up to 20% to
    clip outliers) that minimizes the block's squared error: 15% less weight error, better
    top-1 agreement, but worse perplexity, because clipped outliers matter to the tails. On
    SmolLM2 int4 block 32 with an 8-bit embedding over export/data/passage.txt: perplexity
    x1.133 of fp32 without, x1.220 with; top-1 0.703 without, 0.736 with. Off by default.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    k = w.shape[1]
    blocks = _blocks(w, block_size)
    if symmetric:
        scales, codes = _symmetric(blocks, bits, search)
        zero_points = None
    else:
        scales, zp, codes = _asymmetric(blocks, bits, search)
        zero_points = pack(zp, bits)
    packed = pack(codes.astype(np.uint8), bits)
    return Quantized(packed, scales.astype(np.float32), zero_points, bits, block_size, k)


def _blocks(w: np.ndarray, block_size: int) -> np.ndarray:
    """W [N, K] as fp32 blocks [N, ceil(K / block_size), block_size], K zero-padded."""
    n, k = w.shape
    w = np.asarray(w, dtype=np.float32)
    pad = (-k) % block_size
    if pad:
        w = np.pad(w, ((0, 0), (0, pad)))
    return w.reshape(n, -1, block_size)


# Scale candidates tried per block: the peak mapped to code 0, shrunk by these factors.
_SHRINK = (1.0, 0.95, 0.9, 0.85, 0.8)
_ROWS = 4096  # rows per chunk of the search, to bound its memory


def _symmetric(blocks: np.ndarray, bits: int, search: bool) -> tuple[np.ndarray, np.ndarray]:
    mid = 1 << (bits - 1)
    qmax = (1 << bits) - 1
    idx = np.abs(blocks).argmax(axis=2)[..., None]
    peak = np.take_along_axis(blocks, idx, axis=2)[..., 0]
    candidates = [peak / -mid]
    if search:
        candidates = [peak / -mid * a for a in _SHRINK]
    scales = np.empty_like(peak)
    codes = np.empty(blocks.shape, np.uint8)
    for r in range(0, blocks.shape[0], _ROWS):
        b = blocks[r : r + _ROWS]
        best_err = np.full(b.shape[:2], np.inf, np.float32)
        for cand in candidates:
            c = cand[r : r + _ROWS]
            safe = np.where(c == 0, 1.0, c)[..., None]
            q = np.clip(np.rint(b / safe) + mid, 0, qmax)
            err = np.square((q - mid) * safe - b).sum(axis=2)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            scales[r : r + _ROWS] = np.where(better, c, scales[r : r + _ROWS])
            codes[r : r + _ROWS] = np.where(better[..., None], q, codes[r : r + _ROWS])
    return scales, codes


def _asymmetric(
    blocks: np.ndarray, bits: int, search: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min/max grids (zero included), the range shrunk by the same factors when searching."""
    qmax = (1 << bits) - 1
    lo0 = np.minimum(blocks.min(axis=2), 0.0)
    hi0 = np.maximum(blocks.max(axis=2), 0.0)
    scales = np.empty_like(lo0)
    zps = np.empty(lo0.shape, np.uint8)
    codes = np.empty(blocks.shape, np.uint8)
    for r in range(0, blocks.shape[0], _ROWS):
        b = blocks[r : r + _ROWS]
        best_err = np.full(b.shape[:2], np.inf, np.float32)
        for a in _SHRINK if search else (1.0,):
            lo, hi = lo0[r : r + _ROWS] * a, hi0[r : r + _ROWS] * a
            scale = (hi - lo) / qmax
            safe = np.where(scale == 0, 1.0, scale)
            zp = np.clip(np.rint(-lo / safe), 0, qmax)
            q = np.clip(np.rint(b / safe[..., None]) + zp[..., None], 0, qmax)
            err = np.square((q - zp[..., None]) * safe[..., None] - b).sum(axis=2)
            better = err < best_err
            best_err = np.where(better, err, best_err)
            scales[r : r + _ROWS] = np.where(better, scale, scales[r : r + _ROWS])
            zps[r : r + _ROWS] = np.where(better, zp, zps[r : r + _ROWS])
            codes[r : r + _ROWS] = np.where(better[..., None], q, codes[r : r + _ROWS])
    return scales, zps, codes


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 codes along the last axis: 8 bits as is, 4 bits two per byte, low first."""
    if bits == 8:
        return np.ascontiguousarray(codes)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], axis=-1)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4))


def unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The inverse of `pack`, keeping `count` codes of the last axis."""
    if bits == 8:
        return packed[..., :count]
    both = np.stack([packed & 0x0F, packed >> 4], axis=-1)
    return both.reshape(*packed.shape[:-1], -1)[..., :count]


def dequantize(q: Quantized) -> np.ndarray:
    """W [N, K] as MatMulNBits sees it (the reference the tests compare against)."""
    n, k_blocks, _ = q.packed.shape
    codes = unpack(q.packed, q.bits, q.block_size).astype(np.float32)
    if q.zero_points is None:
        zp = np.full((n, k_blocks), 1 << (q.bits - 1), np.float32)
    else:
        zp = unpack(q.zero_points, q.bits, k_blocks).astype(np.float32)
    w = (codes - zp[..., None]) * q.scales[..., None]
    if q.mins is not None:
        w = w + q.mins[..., None]
    return w.reshape(n, -1)[:, : q.k]


# The split 8-bit grid: codes q in [-SPLIT_LOW, SPLIT_HIGH], so that every code splits into a
# high nibble h = floor((q + 8) / 16) in [-8, 7] and a low nibble l = q - 16 h in [-8, 7].
SPLIT_LOW = 128
SPLIT_HIGH = 119


@dataclass(frozen=True)
class Split8:
    """An 8-bit symmetric quantization stored as two 4-bit planes.

    W ~= (hi - 8) * S + (lo - 8) * S / 16 with S = `high.scales` (16 times the 8-bit step).
    `high` alone is a 4-bit quantization of W on the grid S (each code rounded half down from
    the 8-bit one), so MatMulNBits can read it as an ordinary 4-bit weight; adding the low
    plane gives the 8-bit value back. Both planes share the layout [N, k_blocks, blob].
    """

    high: Quantized
    low: np.ndarray  # uint8 [N, k_blocks, blob], 4-bit codes, zero point 8, scale S / 16


def split8(w: np.ndarray, block_size: int) -> Split8:
    """Quantize W [N, K] to 8 bits and split each code into the two 4-bit planes of `Split8`.

    Each block's step is signed so that its largest magnitude maps to the negative end, and is
    the finest that keeps every code in [-128, 119]: the peak / 128 (plain 8-bit quantization's
    step, so the high plane alone is plain 4-bit quantization's grid) unless a value of the
    other sign needs a coarser one (above 119 steps). Rounding is to nearest on that step.
    """
    k = w.shape[1]
    blocks = _blocks(w, block_size)
    idx = np.abs(blocks).argmax(axis=2)[..., None]
    peak = np.take_along_axis(blocks, idx, axis=2)[..., 0]
    sign = np.where(peak < 0, 1.0, -1.0).astype(np.float32)  # the step's: the peak maps to < 0
    opposite = np.maximum((blocks * sign[..., None]).max(axis=2), 0.0)  # largest mapped to > 0
    step = sign * np.maximum(np.abs(peak) / SPLIT_LOW, opposite / SPLIT_HIGH)
    safe = np.where(step == 0, 1.0, step)[..., None]
    q = np.clip(np.rint(blocks / safe), -SPLIT_LOW, SPLIT_HIGH).astype(np.int16)
    hi = (q + 8) // 16
    lo = q - 16 * hi
    high = Quantized(
        pack((hi + 8).astype(np.uint8), 4), (16 * step).astype(np.float32), None, 4, block_size, k
    )
    return Split8(high, pack((lo + 8).astype(np.uint8), 4))


def dequantize_split(s: Split8) -> np.ndarray:
    """W [N, K] from both planes (the 8-bit value)."""
    q = s.high
    lo = unpack(s.low, 4, q.block_size).astype(np.float32) - 8
    w = dequantize(q) + (lo * q.scales[..., None] / 16).reshape(q.n, -1)[:, : q.k]
    return w
