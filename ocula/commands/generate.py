"""`ocula generate ARTIFACT --prompt TEXT`: run an LLM artifact on this host, streaming the text.

Without --chat the prompt is raw text (no template), so its greedy tokens can be compared with
transformers' `generate`. With --json one object is printed at the end: prompt and generated
token ids, the text, time to first token and decode speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ocula.argtypes import integer, number, text


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "generate",
        parents=[common],
        help="run an LLM artifact on this host",
        description="Generate text with an LLM artifact (made by 'ocula export llm'). The text "
        "streams to stdout as it is generated; --json prints one JSON object instead.",
    )
    p.add_argument("artifact", type=Path, metavar="ARTIFACT", help="LLM artifact folder")
    p.add_argument("--prompt", required=True, type=text, help="the prompt (raw text unless --chat)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--system", type=text, help="system message for --chat")
    p.add_argument("--max-new-tokens", type=integer(1, 1 << 20), default=128, metavar="N")
    p.add_argument(
        "--max-length",
        type=integer(16, 1 << 20),
        default=None,
        metavar="N",
        help="tokens the KV cache holds (prompt + new tokens); default: what this run needs, "
        "within the artifact's and the board's limits",
    )
    p.add_argument(
        "--temperature", type=number(0, 100), default=0.0, metavar="T", help="0 = greedy"
    )
    p.add_argument("--top-k", type=integer(0, 1 << 24), default=0, metavar="K", help="0 = off")
    p.add_argument(
        "--top-p", type=number(0, 1, low_open=True), default=1.0, metavar="P", help="1 = off"
    )
    p.add_argument(
        "--repetition-penalty",
        type=number(0, 100, low_open=True),
        default=1.0,
        metavar="R",
        help="1 = off",
    )
    p.add_argument("--seed", type=integer(0, 2**63 - 1), default=None, metavar="S")
    p.add_argument(
        "--stop", type=text, action="append", default=[], metavar="TEXT", help="stop string"
    )
    p.add_argument(
        "--time-budget", type=number(0, 7 * 86400, low_open=True), default=None, metavar="SECONDS"
    )
    p.add_argument("--truncate", action="store_true", help="keep the end of a too-long prompt")
    p.add_argument("--threads", type=integer(1, 1024), default=None, metavar="N")
    p.add_argument("--board", help="board profile for threads and memory budget (default: host)")
    p.add_argument(
        "--lookup",
        action="store_true",
        help="greedy only: draft tokens by prompt lookup and verify several per graph run "
        "(the same tokens as plain decoding at fp32; at int4/int8 the multi-position kernels "
        "round differently, so tokens can differ)",
    )
    p.add_argument(
        "--draft",
        type=text,
        metavar="TEXT",
        help="with --lookup: text the output is expected to follow",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from runtime.engine.errors import EngineUsageError
    from runtime.engine.llm import GenerationConfig, Llm, SamplingParams
    from runtime.engine.llm.lookup import LookupConfig

    profile = None
    if args.board:
        from board import profiles

        profile = profiles.find(args.board)
    sampling = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    if args.draft is not None and not args.lookup:
        raise EngineUsageError("--draft needs --lookup")
    if args.lookup and not sampling.greedy:
        raise EngineUsageError(
            "--lookup verifies drafts against greedy decoding only: drop --temperature "
            "(or drop --lookup to sample)"
        )
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        sampling=sampling,
        stop=tuple(args.stop),
        time_budget_s=args.time_budget,
        truncate=args.truncate,
        lookup=LookupConfig() if args.lookup else None,
        draft=args.draft,
    )
    if args.system and not args.chat:
        raise EngineUsageError("--system needs --chat")
    if args.max_length is not None and args.max_length < 16:
        raise EngineUsageError(f"--max-length {args.max_length}: must be at least 16 tokens")
    llm = Llm.from_artifact(
        args.artifact, profile, threads=args.threads, max_length=args.max_length
    )
    if args.lookup and not llm.can_verify:
        print(
            "ocula: note: this artifact's graph scores one position per run (exported before "
            "--lookup existed, or not a fused graph): decoding without drafts; re-export it "
            "to use --lookup",
            file=sys.stderr,
        )
    if args.chat:
        messages = [{"role": "user", "content": args.prompt}]
        if args.system:
            messages.insert(0, {"role": "system", "content": args.system})
        ids = llm.encode_chat(llm.chat(messages))
    else:
        ids = llm.encode(args.prompt)
    if args.max_length is None:
        # The cache this run needs: the prompt and every new token (at least 16)
        llm.resize(max(16, min(len(ids) + args.max_new_tokens, llm.length_limit)))
    gen = llm.start(ids, config)
    for delta in gen:
        if not args.json:
            sys.stdout.write(delta)
            sys.stdout.flush()
    if args.json:
        print(
            json.dumps(
                {
                    "prompt_ids": gen.prompt_ids,
                    "token_ids": gen.tokens,
                    "text": gen.text,
                    "finish_reason": gen.finish_reason,
                    "ttft_s": round(gen.first_token_s or 0.0, 6),
                    "decode_tokens_per_s": round(gen.decode_tokens_per_s, 3),
                    "prompt_tokens": len(gen.prompt_ids),
                    "new_tokens": len(gen.tokens),
                    "max_length": llm.max_length,
                    "kv_bytes": llm.kv_bytes,
                    **(
                        {
                            "lookup": {
                                "verify_runs": gen.verify_runs,
                                "drafted": gen.drafted,
                                "accepted": gen.accepted,
                            }
                        }
                        if args.lookup
                        else {}
                    ),
                },
                ensure_ascii=False,
            )
        )
    else:
        sys.stdout.write("\n")
        print(
            f"{len(gen.tokens)} tokens ({gen.finish_reason}); first token after "
            f"{1000 * (gen.first_token_s or 0):.0f} ms; {gen.decode_tokens_per_s:.1f} tokens/s",
            file=sys.stderr,
        )
    return 0
