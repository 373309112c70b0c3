"""Greedy speculative decoding with prompt-lookup drafts: the same tokens as plain decoding,
fewer graph runs; rollback of rejected drafts; stops inside an accepted draft; old graphs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.engine.errors import EngineUsageError
from runtime.engine.llm import GenerationConfig, Llm
from runtime.engine.llm.lookup import LookupConfig, PromptLookup
from runtime.engine.llm.sampling import SamplingParams
from tests.test_engine_helpers import llm_artifact

LOOKUP = LookupConfig(max_draft=6, ngram=3, min_ngram=1)
REPETITIVE = [11, 12, 13, 14, 15] * 6
COPY = [*range(40, 70), 7, *range(40, 50)]
DISTINCT = list(range(200, 230))


def _run(llm: Llm, prompt: list[int], **kw: object) -> tuple[list[int], list[np.ndarray], object]:
    llm.reset()
    gen = llm.start(prompt, GenerationConfig(**kw))  # type: ignore[arg-type]
    logits = []
    while gen.step() is not None:
        assert gen.last_logits is not None
        logits.append(gen.last_logits.copy())
    return gen.tokens, logits, gen


def test_drafts_follow_the_latest_ngram_and_the_callers_draft() -> None:
    p = PromptLookup(LookupConfig(max_draft=4, ngram=2, min_ngram=1), [1, 2, 3, 4, 1, 2, 5, 1])
    # the last 2-gram (5, 1) never occurred before; the 1-gram (1) last occurred at index 4
    assert p.propose(4) == [2, 5, 1]
    p.generated([2])  # (1, 2) last occurred at 4..5, followed by 5, 1, 2
    assert p.propose(2) == [5, 1]
    q = PromptLookup(LookupConfig(), [9, 9], draft=[7, 8, 6, 10])
    assert q.propose(3) == [7, 8, 6]  # nothing generated yet: the draft's start
    q.generated([7, 8])
    assert q.propose(3) == [6, 10]
    q.generated([5])  # the output left the draft: n-grams only
    assert q.propose(3) == []
    with pytest.raises(EngineUsageError, match="max draft"):
        LookupConfig(max_draft=16)


@pytest.mark.parametrize("preset", ["tiny-qwen2", "tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_greedy_tokens_and_logits_equal_plain_decoding(preset: str, quant: str) -> None:
    llm = Llm.from_artifact(llm_artifact(preset, quant, "fused"))
    assert llm.can_verify
    hits = 0
    for prompt in (REPETITIVE, COPY, DISTINCT):
        plain, plain_logits, _ = _run(llm, prompt, max_new_tokens=48)
        fast, fast_logits, gen = _run(llm, prompt, max_new_tokens=48, lookup=LOOKUP)
        assert fast == plain
        for a, b in zip(fast_logits, plain_logits, strict=True):
            # int4: a position scored in a multi-position run sums attention in another order
            # and MatMulNBits quantizes its activations per run (up to 0.06 measured here)
            np.testing.assert_allclose(a, b, atol=1e-4 if quant == "fp32" else 0.1)
        assert gen.decode_runs < len(fast) - 1 or gen.accepted == 0  # type: ignore[attr-defined]
        hits += gen.accepted  # type: ignore[attr-defined]
    assert hits > 0  # drafts were made and accepted


def test_a_rejected_draft_leaves_the_cache_as_plain_decoding_does() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    prompt = COPY
    llm.reset()
    first = int(np.argmax(llm._feed(prompt, reuse=False)))
    after = llm._feed_one(first).copy()
    nxt = int(np.argmax(after))
    wrong = (nxt + 1) % llm.info.vocab_size
    expected = llm._feed_one(nxt).copy()

    llm.reset()
    llm._feed(prompt, reuse=False)
    rows = llm._verify([first, wrong, 3, 4])
    np.testing.assert_allclose(rows[0], after, atol=1e-4)
    llm._rollback(len(prompt) + 1)  # keep `first`, drop the rejected draft
    assert llm.cached_tokens == len(prompt) + 1
    np.testing.assert_allclose(llm._feed_one(nxt), expected, atol=1e-4)


def test_stops_inside_an_accepted_draft() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    plain, _, _ = _run(llm, REPETITIVE, max_new_tokens=48)
    fast, _, gen = _run(llm, REPETITIVE, max_new_tokens=48, lookup=LOOKUP)
    assert fast == plain and gen.accepted >= 4  # type: ignore[attr-defined]
    # max new tokens: every length stops at the same token
    for n in (1, 2, 3, 5, 8, 13):
        assert _run(llm, REPETITIVE, max_new_tokens=n, lookup=LOOKUP)[0] == plain[:n]
    # EOS: a token that first appears late in the output
    k = next(i for i in range(10, len(plain)) if plain[i] not in plain[:i])
    eos = llm.eos_ids
    llm.eos_ids = frozenset({plain[k]})
    try:
        tokens, _, g = _run(llm, REPETITIVE, max_new_tokens=48, lookup=LOOKUP)
        assert tokens == plain[: k + 1] and g.finish_reason == "eos"  # type: ignore[attr-defined]
    finally:
        llm.eos_ids = eos
    # a stop string: the text ends before it, as without lookup
    text = llm.decode(plain)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    a = _run(llm, REPETITIVE, max_new_tokens=48, stop=(stop,))[2]
    b = _run(llm, REPETITIVE, max_new_tokens=48, stop=(stop,), lookup=LOOKUP)[2]
    assert a.text == b.text and a.finish_reason == b.finish_reason == "stop"  # type: ignore[attr-defined]
    # the cache after a generation that stopped mid-draft still serves the next prompt
    again = _run(llm, REPETITIVE + plain[:3], max_new_tokens=16)[0]
    llm.reset()
    assert again == _run(llm, REPETITIVE + plain[:3], max_new_tokens=16)[0]


def test_callers_draft_and_repetition_penalty() -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-llama", "fp32", "fused"))
    plain, _, _ = _run(llm, DISTINCT, max_new_tokens=32)
    # the previous output as the draft: accepted as far as it goes
    fast, _, gen = _run(llm, DISTINCT, max_new_tokens=32, lookup=LOOKUP, draft=plain[:20])
    assert fast == plain and gen.accepted >= 19  # type: ignore[attr-defined]
    # as text (the previous translation): tokenized as the output would be
    text_draft = _run(llm, DISTINCT, max_new_tokens=32, lookup=LOOKUP, draft=llm.decode(plain))
    assert text_draft[0] == plain and text_draft[2].accepted > 0  # type: ignore[attr-defined]
    # a wrong draft costs nothing in tokens
    wrong = [(t + 1) % llm.info.vocab_size for t in plain]
    assert _run(llm, DISTINCT, max_new_tokens=32, lookup=LOOKUP, draft=wrong)[0] == plain
    penalised = SamplingParams(repetition_penalty=1.3)
    a = _run(llm, REPETITIVE, max_new_tokens=40, sampling=penalised)[0]
    b, _, g = _run(llm, REPETITIVE, max_new_tokens=40, sampling=penalised, lookup=LOOKUP)
    assert a == b and g.verify_runs > 0  # type: ignore[attr-defined]
    with pytest.raises(EngineUsageError, match="draft needs lookup"):
        llm.start(DISTINCT, GenerationConfig(draft=plain))


def test_sampling_and_graphs_without_num_logits_decode_plainly(tmp_path: Path) -> None:
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "fused"))
    sampled = SamplingParams(temperature=0.8, seed=3)
    a = _run(llm, REPETITIVE, max_new_tokens=24, sampling=sampled)[0]
    b, _, g = _run(llm, REPETITIVE, max_new_tokens=24, sampling=sampled, lookup=LOOKUP)
    assert a == b and g.verify_runs == 0  # type: ignore[attr-defined]

    # An export from before num_logits: the input gone, the slice's start a constant
    src = llm_artifact("tiny-qwen2", "fp32", "fused")
    old = tmp_path / "old"
    shutil.copytree(src, old)
    model = onnx.load(str(old / "model.onnx"), load_external_data=False)
    keep = [i for i in model.graph.input if i.name != "num_logits"]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.save(model, str(old / "model.onnx"))
    old_llm = Llm.from_artifact(old, verify=False)
    assert not old_llm.can_verify
    plain = _run(llm, REPETITIVE, max_new_tokens=24)[0]
    tokens, _, g = _run(old_llm, REPETITIVE, max_new_tokens=24, lookup=LOOKUP)
    assert tokens == plain and g.verify_runs == 0  # type: ignore[attr-defined]
    optimum = Llm.from_artifact(llm_artifact("tiny-qwen2", "fp32", "optimum"))
    assert not optimum.can_verify
