"""Token parity with the x86_64 run: the same tokens, asserted, and the figures that say why.

The test models are decisive (`export.random` trains the tiny presets to recite their corpus's
opening from its first sentence): at every greedy decision the top-1 logit beats the top-2 by
far more than the two architectures' kernels make the logits differ. So the tokens must be
equal, with no tolerance, and the notes give the two figures that make equality safe: the
largest logit difference against x86_64 and the smallest top-1/top-2 margin x86_64 decided by.

`TOLERANCE` bounds the logit difference per model and quantization (measured across the two
architectures, with headroom). When every logit moves by up to that bound, a decision's margin
moves by up to twice it; the host refuses a test model whose smallest margin is not `DECISIVE`
times the bound (more than that worst move), so a model that stopped being decisive fails on x86_64
with its numbers, before any emulation. Seeded sampling is decided by where each uniform draw falls
among the cumulative probabilities: `draw_margin` is its smallest distance from a token's
boundary, which a logit difference d moves by at most e^(2d) - 1.

Used by the device tests (plain Python, no host packages) and by the host reference.
"""

from __future__ import annotations

import math
from typing import Any

# max |logit difference| aarch64 vs x86_64, measured on tiny-qwen2 and tiny-whisper. LLM int8
# (MatMulNBits, activations quantized per block at accuracy level 4): the same integer
# arithmetic on both, ~5e-6 on most paths, but an activation that lies on a rounding edge
# quantizes one step apart and moves the logits by up to ~0.05 (seen on one sampled path).
# LLM int4 takes other kernels on aarch64: 0.3-0.45 on every path. Whisper's int8 encoder
# quantizes activations at run time (MatMulInteger): ~0.1 with onnxruntime 1.2x; with 1.32 and
# the tiny-whisper preset as trained now, 0.13-0.89 over the 24 decisions (every token equal).
TOLERANCE = {"llm-int8": 0.1, "llm-int4": 0.6, "asr-int8": 1.0}
# A margin over 2 x the tolerance already keeps the argmax; 2.5 keeps a quarter in reserve.
DECISIVE = 2.5


def margin(row: list[float]) -> float:
    """Top-1 minus top-2 logit of one decision."""
    first = second = -math.inf
    for x in row:
        if x > first:
            first, second = x, first
        elif x > second:
            second = x
    return first - second


def min_margin(rows: list[list[float]]) -> tuple[float, int]:
    """(smallest top-1/top-2 margin, the step it is at) over all decisions."""
    return min((margin(row), i) for i, row in enumerate(rows))


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _compare(
    mine: list[int], my_rows: list[list[float]], theirs: list[int], their_rows: list[list[float]]
) -> tuple[int | None, int, float]:
    """(the first step the tokens differ at or None, how many are equal, the largest logit
    difference). Decisions taken on the same prefix are comparable: all, or up to the first
    difference."""
    part = _first_difference(mine, theirs)
    equal = len(theirs) if part is None else part
    steps = min(len(my_rows), len(their_rows), len(theirs) if part is None else part + 1)
    diff = max(
        (abs(a - b) for i in range(steps) for a, b in zip(my_rows[i], their_rows[i], strict=True)),
        default=0.0,
    )
    return part, equal, diff


def _tokens_differ(
    label: str, part: int, mine: list[int], theirs: list[int], why: str = ""
) -> AssertionError:
    return AssertionError(
        f"{label}: aarch64 tokens differ from x86_64 at step {part}{why}:\n"
        f"  aarch64 {mine}\n  x86_64  {theirs}"
    )


def check_tokens(
    ctx: Any,
    label: str,
    mine: list[int],
    my_rows: list[list[float]],
    theirs: list[int],
    their_rows: list[list[float]],
    tol: float,
) -> None:
    """Greedy decoding: the same tokens as x86_64, from logits within `tol` of x86_64's."""
    part, equal, diff = _compare(mine, my_rows, theirs, their_rows)
    low, at = min_margin(their_rows)
    ctx.note(
        f"{label}: {equal}/{len(theirs)} tokens equal; max |logit diff| vs x86_64 {diff:.2e}; "
        f"min top-1/top-2 margin on x86_64 {low:.3f} (step {at}), "
        f"{low / diff if diff else math.inf:.0f}x the difference"
    )
    if part is not None:
        where = their_rows[part] if part < len(their_rows) else None
        raise _tokens_differ(
            label,
            part,
            mine,
            theirs,
            f" (x86_64 decided it by a margin of {margin(where) if where else math.nan:.4f}; "
            f"the logits there differ by up to {diff:.2e})",
        )
    assert diff <= tol, f"{label}: logits differ from x86_64 by {diff:.2e} > {tol}"


def check_sampled(
    ctx: Any,
    label: str,
    mine: list[int],
    my_rows: list[list[float]],
    theirs: list[int],
    their_rows: list[list[float]],
    draw_gap: float,
    temperature: float,
) -> None:
    """Seeded sampling: the same tokens as x86_64; `draw_gap` is the x86_64 run's smallest
    distance of a draw from a token boundary (see `draw_margin`)."""
    part, equal, diff = _compare(mine, my_rows, theirs, their_rows)
    shift = math.expm1(2 * diff / temperature)
    ctx.note(
        f"{label}: {equal}/{len(theirs)} tokens equal; "
        f"max |logit diff| vs x86_64 {diff:.2e}; draws at least {draw_gap:.2e} from a token "
        f"boundary on x86_64, which the difference moves by at most {shift:.2e}"
    )
    if part is not None:
        raise _tokens_differ(label, part, mine, theirs)


def draw_margin(
    rows: list[list[float]], tokens: list[int], seed: int, temperature: float, top_k: int = 0
) -> float:
    """The smallest distance between a seeded draw and the edges of the token it chose.

    The engine's sampler (temperature and top-k; no top-p or penalty) keeps the `top_k` most
    likely tokens (all when 0), sorts them by logit, takes softmax weights over them and calls
    numpy's `Generator.choice(n, p=w)`, which draws one uniform u per token and picks the first
    cumulative weight above it. This redoes that on the
    recorded logits with the same seeded generator; a choice that differs from the token the
    engine chose means the sampler draws differently now (AssertionError)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    gaps = []
    for step, (row, token) in enumerate(zip(rows, tokens, strict=True)):
        z = np.asarray(row, np.float64) / temperature
        order = np.argsort(-z, kind="stable")[: top_k or None]
        w = np.exp(z[order] - z[order[0]])
        w /= w.sum()
        cdf = w.cumsum()
        cdf /= cdf[-1]
        u = rng.random()
        i = int(cdf.searchsorted(u, side="right"))
        if int(order[i]) != token:
            raise AssertionError(
                f"step {step}: numpy's choice over the sorted softmax picks {int(order[i])}, "
                f"the sampler chose {token}; update arm64/device_tests/parity.py:draw_margin "
                "to how runtime/engine/llm/sampling.py draws"
            )
        gaps.append(min(u - (cdf[i - 1] if i else 0.0), cdf[i] - u))
    return float(min(gaps))
