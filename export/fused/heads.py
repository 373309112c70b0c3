"""Attention heads padded to the size onnxruntime's GroupQueryAttention runs.

onnxruntime's CPU GroupQueryAttention takes head sizes that are a multiple of 8, and of 16
when it applies the rotary embedding itself (`do_rotary`, as the fused graph does); other
sizes fail at the first run ("head_size shall be a multiple of 16"). A model whose head_dim d
is not a multiple of 16 (Qwen3 variants, small Llamas) runs with its heads padded to
D = ceil(d / 16) * 16, exactly:

- q and k rows gain zero rows inside each half of every head ([x1 | 0 | x2 | 0]), so the
  half-split rotary still pairs element i with i + D/2 (x1 with x2, zeros with zeros) and the
  cos/sin tables gain columns that rotate the zeros (cos 1, sin 0);
- v rows gain zero rows at the end of every head, so the padded output columns are zero, and
  o_proj gains zero columns there, so they add nothing;
- q . k is unchanged (zeros add nothing) and the softmax scale stays 1/sqrt(d) (the node's
  `scale` attribute);
- the per-head q/k RMS norm of Qwen3 runs over D elements with epsilon * d / D and its weight
  times sqrt(d / D), which is the norm over d.

The KV cache holds D per head: the manifest's KV layout (`llm.kv.shape`) says so, `head_dim`
stays the model's d.
"""

from __future__ import annotations

import numpy as np

# onnxruntime's CPU GroupQueryAttention with rotary inside: head size % 16 == 0
GQA_HEAD_MULTIPLE = 16


def attn_dim(head_dim: int) -> int:
    """The head size GroupQueryAttention runs for a model's head_dim."""
    return -(-head_dim // GQA_HEAD_MULTIPLE) * GQA_HEAD_MULTIPLE


def pad_heads(w: np.ndarray, heads: int, d: int, big: int, rotary: bool) -> np.ndarray:
    """Rows [heads * d, ...] (a projection's weight or bias) as [heads * big, ...]: zero rows
    inside each half of every head (`rotary`: q and k) or at its end (v)."""
    if big == d:
        return w
    rest = w.shape[1:]
    x = w.reshape(heads, d, *rest)
    out = np.zeros((heads, big, *rest), w.dtype)
    if rotary:
        h, hb = d // 2, big // 2
        out[:, :h] = x[:, :h]
        out[:, hb : hb + h] = x[:, h:]
    else:
        out[:, :d] = x
    return out.reshape(heads * big, *rest)


def pad_o_proj(w: np.ndarray, heads: int, d: int, big: int) -> np.ndarray:
    """o_proj's weight [hidden, heads * d] as [hidden, heads * big], zero columns where the
    padded v heads put their zeros."""
    if big == d:
        return w
    return pad_heads(np.ascontiguousarray(w.T), heads, d, big, rotary=False).T.copy()


def pad_rotary(table: np.ndarray, big: int, fill: float) -> np.ndarray:
    """A cos or sin table [length, d/2] as [length, big/2], new columns `fill`."""
    half = big // 2
    if table.shape[1] == half:
        return table
    out = np.full((table.shape[0], half), fill, table.dtype)
    out[:, : table.shape[1]] = table
    return out


def pad_norm_weight(g: np.ndarray, d: int, big: int) -> np.ndarray:
    """A q/k norm weight [d] for a norm over `big` elements with epsilon * d / big: the weight
    times sqrt(d / big), laid out as the rotary pads q and k."""
    if big == d:
        return g
    scaled = (g.astype(np.float64) * np.sqrt(d / big)).astype(g.dtype)
    return pad_heads(scaled, 1, d, big, rotary=True)
