"""LLM generation with the logits of every decision, for cross-architecture parity.

The engine has no public logits API, so this wraps the sampler of one `Generation` (the engine
hands it each step's logits and takes the token it returns). Used by the host reference and by
the device test alike; if the hook point goes away, both say so.
"""

from __future__ import annotations

from typing import Any


class _Recording:
    def __init__(self, inner: Any, rows: list[list[float]]) -> None:
        self._inner = inner
        self._rows = rows

    def __call__(self, logits: Any) -> Any:
        self._rows.append([float(x) for x in logits.reshape(-1).tolist()])
        return self._inner(logits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def generate_with_logits(
    model: Any, prompt: str, config: Any
) -> tuple[Any, str, list[list[float]]]:
    """(the finished generation, its text, one logits row per token)."""
    gen = model.start(prompt, config)
    if not callable(getattr(gen, "_sampler", None)):
        raise AssertionError(
            "runtime.engine.llm.Generation has no _sampler any more; "
            "update arm64/device_tests/llm_probe.py to where the logits are sampled"
        )
    rows: list[list[float]] = []
    gen._sampler = _Recording(gen._sampler, rows)
    text = "".join(gen)
    return gen, text, rows
