"""LLM generation with the logits of every decision, for cross-architecture parity.

Drives a `Generation` step by step and copies `Generation.last_logits` (the raw logits the
sampler chose each token from) after every step. Used by the host reference and by the device
test alike.
"""

from __future__ import annotations

from typing import Any


def generate_with_logits(
    model: Any, prompt: str, config: Any
) -> tuple[Any, str, list[list[float]]]:
    """(the finished generation, its text, one logits row per token)."""
    gen = model.start(prompt, config)
    rows: list[list[float]] = []
    while not gen.done:
        if gen.step() is not None:
            rows.append([float(x) for x in gen.last_logits.reshape(-1).tolist()])
    assert len(rows) == len(gen.tokens), (len(rows), len(gen.tokens))
    return gen, gen.text, rows
