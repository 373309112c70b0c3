"""Remote vs local answers, and the time to fail over on each fault.

    python -m bench bench_remote

- First-token latency: the same chat request answered by llama.cpp's server (SmolLM2-135M Q4_1
  GGUF, on loopback, 1 thread) through the remote engine, and by Ocula's local SmolLM2 artifact
  (fp32 fused, 1 thread), alternating rounds, medians. Loopback hides the network: on a board
  the remote's figure adds the radio link's round trips.
- Time to switch, per fault of the test proxy (tests/remote_helpers.py), on the real clock:
  from the fault to the router's switch, and from the switch to the first local characters.
- Energy per answer on each route, from the profiles' power models (ar1-ref, rpi5): local =
  cores x core_active_w x the local answer's measured time; remote = radio_w x the remote
  answer's measured time (the radio kept up while the answer streams).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

ROUNDS = 5
TOKENS = 32
MESSAGES = [
    {"role": "system", "content": "You are a translator. Reply with the translation only."},
    {
        "role": "user",
        "content": "Translate into French: the next train to Lyon leaves from platform 4.",
    },
]
FAULTS = [
    ("refused", {}),
    ("status-500", {"fault": "status", "status": 500}),
    ("status-429", {"fault": "status", "status": 429}),
    ("cut", {"fault": "cut", "after": 6}),
    ("stall", {"fault": "stall", "after": 6}),
    ("slow-first-token", {"fault": "slow"}),
]


def _answer(router: Any, messages: list[dict[str, str]]) -> Any:
    t0 = time.perf_counter()
    answer = router.start(messages, max_tokens=TOKENS)
    while not answer.done:
        answer.step()
        answer.take_text()
    answer.wall_s = time.perf_counter() - t0
    return answer


def _s(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def run(out_dir: Path) -> dict[str, Any]:
    from board import profiles
    from runtime.engine.llm import Llm
    from runtime.engine.remote import Budgets, RemoteConfig, RemoteLlm, Router
    from runtime.sched.clock import MonotonicClock
    from tests.artifacts import llm_artifact
    from tests.remote_helpers import FaultProxy, llama_server

    clock = MonotonicClock()
    budgets = Budgets(first_token_s=1.5, stall_s=2.0)
    local = Llm.from_artifact(llm_artifact("smollm2", "fp32", "fused"), threads=1)
    load = [round(x, 2) for x in os.getloadavg()]
    with llama_server() as server:
        remote = RemoteLlm(RemoteConfig(server.url), clock)
        remote_only = Router(remote, None, clock, Budgets(60, 60))
        local_only = Router(None, local, clock)
        _answer(remote_only, MESSAGES)  # warm both
        _answer(local_only, MESSAGES)
        rounds: dict[str, list[Any]] = {"remote": [], "local": []}
        for _ in range(ROUNDS):
            rounds["remote"].append(_answer(remote_only, MESSAGES))
            rounds["local"].append(_answer(local_only, MESSAGES))
        switch: dict[str, Any] = {}
        for name, args in FAULTS:
            kwargs = dict(args)
            fault = str(kwargs.pop("fault", name))
            with FaultProxy(server.url, fault, **kwargs) as proxy:
                router = Router(RemoteLlm(RemoteConfig(proxy.url), clock), local, clock, budgets)
                r = _answer(router, MESSAGES)
            switch[name] = {
                "route": r.route,
                "reason": r.switch_reason,
                "fault_to_switch_s": _s(r.switch_t, r.remote_last_t),
                "switch_to_local_text_s": _s(r.local_text_t, r.switch_t),
                "budget_s": {"stall": budgets.stall_s, "slow": budgets.first_token_s}.get(
                    fault, 0.0
                ),
            }
    med = {
        k: {
            "first_token_s": round(statistics.median(a.first_text_t - a.started_t for a in v), 3),
            "answer_s": round(statistics.median(a.wall_s for a in v), 3),
        }
        for k, v in rounds.items()
    }
    energy = {}
    for name in ("ar1-ref", "rpi5"):
        p = profiles.find(name).power
        energy[name] = {
            "local_j": round(p.core_active_w * 1 * med["local"]["answer_s"], 3),
            "remote_j": round(p.radio_w * med["remote"]["answer_s"], 3),
        }
    return {
        "rounds": ROUNDS,
        "tokens": TOKENS,
        "load_average_start": load,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "first_token": med,
        "first_token_ratio_local_over_remote": round(
            med["local"]["first_token_s"] / med["remote"]["first_token_s"], 2
        ),
        "switch": switch,
        "energy_per_answer": energy,
        "note": "remote on loopback (no radio round trips); energy from the profiles' power models",
    }
