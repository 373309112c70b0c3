"""The int4 artifact of the real SmolLM2-135M-Instruct GGUF decodes as llama.cpp decodes the
same file: at least 28 of 32 greedy tokens in agreement on each of three chat prompts
(bench/bench_gguf.py measures it; BENCHMARKS.md "GGUF import" has the figures)."""

from __future__ import annotations

import pytest

from bench.bench_gguf import compare
from tests.artifacts import llm_artifact, smollm2_gguf


@pytest.mark.slow
def test_int4_agrees_with_llama_cpp() -> None:
    art = llm_artifact("smollm2", quant="int4", graph="fused", max_length=512)
    result = compare(art, smollm2_gguf())
    for row in result["rows"]:
        assert row["same_prompt_tokens"], row
        assert row["agree"] >= min(28, row["of"]), row
