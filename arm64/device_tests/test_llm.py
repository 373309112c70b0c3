"""Generation on aarch64 gives the x86_64 run's tokens exactly: greedy at int4 and int8, on the
fused and the optimum graphs, and seeded sampling at int8 (see `parity.py`).

The prompt is the first sentence of the test model's corpus, from which the tiny model recites
what follows by wide top-1/top-2 margins; the notes give the margins and the logit differences.
"""

from __future__ import annotations

from llm_probe import generate_with_logits
from parity import TOLERANCE, check_sampled, check_tokens

from runtime.engine.llm import GenerationConfig, Llm, SamplingParams


def _generate(ctx, name: str, profile=None) -> None:
    host = ctx.expect["llm"][name]
    model = Llm.from_artifact(ctx.work / name, profile)
    for mode, run in host["runs"].items():
        config = GenerationConfig(host["max_new_tokens"], SamplingParams(**run["sampling"]))
        gen, text, logits = generate_with_logits(model, host["prompt"], config)
        assert gen.prompt_ids == host["prompt_ids"], "the tokenizer encodes the prompt differently"
        if mode == "greedy":
            tol = TOLERANCE[f"llm-{host['quant']}"]
            check_tokens(ctx, mode, gen.tokens, logits, run["tokens"], run["logits"], tol)
        else:
            temperature = run["sampling"]["temperature"]
            gap = run["draw_margin"]
            check_sampled(
                ctx, mode, gen.tokens, logits, run["tokens"], run["logits"], gap, temperature
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


def test_llm_under_the_glasses_profile_gives_the_same_tokens(ctx) -> None:
    """Sessions configured from a board profile (big cluster, no spinning on battery)."""
    from runtime.engine.session import session_config
    from runtime.profile import load_profile

    profile = load_profile(ctx.work / "profiles" / "ar1-ref.toml")
    config = session_config(profile)
    assert config.threads >= 1 and not config.spinning, config
    ctx.note(f"ar1-ref sessions here: {config.threads} threads on CPUs {config.cpus}")
    _generate(ctx, "llm-tiny-qwen2-int8-fused", profile)
