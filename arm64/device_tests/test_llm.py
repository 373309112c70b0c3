"""Generation on aarch64 equals the x86_64 run, token for token: greedy and seeded sampling."""

from __future__ import annotations

from runtime.engine.llm import GenerationConfig, Llm, SamplingParams


def _generate(ctx, name: str) -> None:
    host = ctx.expect["llm"][name]
    model = Llm.from_artifact(ctx.work / name)
    for mode, run in host["runs"].items():
        config = GenerationConfig(host["max_new_tokens"], SamplingParams(**run["sampling"]))
        gen = model.start(host["prompt"], config)
        assert gen.prompt_ids == host["prompt_ids"], "the tokenizer encodes the prompt differently"
        text = "".join(gen)
        pairs = zip(gen.tokens, run["tokens"], strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        assert gen.tokens == run["tokens"], (
            f"{name} ({mode}): aarch64 tokens differ from x86_64 from position {first}:\n"
            f"  aarch64 {gen.tokens}\n  x86_64  {run['tokens']}"
        )
        assert text == run["text"]


def test_llm_int4_fused_tokens_equal_x86(ctx) -> None:
    _generate(ctx, "llm-tiny-qwen2-int4-fused")


def test_llm_int8_fused_tokens_equal_x86(ctx) -> None:
    _generate(ctx, "llm-tiny-qwen2-int8-fused")


def test_llm_int4_optimum_tokens_equal_x86(ctx) -> None:
    _generate(ctx, "llm-tiny-qwen2-int4-optimum")


def test_llm_int8_optimum_tokens_equal_x86(ctx) -> None:
    _generate(ctx, "llm-tiny-qwen2-int8-optimum")
