"""The remote engine and the router against a real server (llama.cpp's), with injected faults.

The remote is llama.cpp's OpenAI-compatible server running the SmolLM2-135M-Instruct GGUF on
loopback; the local model is Ocula's SmolLM2 artifact. Every fault of the proxy
(tests/remote_helpers.py) must switch the answer to the local model within its budget, measured
on the router's virtual clock (it moves by the poll interval each time the router waited for
the server in vain), and the text on the display must continue: what the remote showed stays,
the local model continues it, nothing is retracted or repeated.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator

import pytest

from runtime.engine.llm import Llm
from runtime.engine.remote import Budgets, RemoteConfig, RemoteLlm, Router
from runtime.engine.remote.router import Overlap
from runtime.sched.clock import VirtualClock
from tests.artifacts import llm_artifact
from tests.remote_helpers import FaultProxy, llama_server

POLL = 0.02
BUDGETS = Budgets(first_token_s=5.0, stall_s=2.0)
MESSAGES = [
    {"role": "system", "content": "You are a helpful travel assistant."},
    {"role": "user", "content": "Describe a train station in five sentences."},
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with llama_server() as s:
        yield s.url


@pytest.fixture(scope="module")
def local() -> Llm:
    return Llm.from_artifact(llm_artifact("smollm2", "fp32", "fused"))


def _run(answer, max_steps: int = 20000) -> list[str]:
    shown = []
    for _ in range(max_steps):
        if answer.done:
            break
        answer.step()
        piece = answer.take_text()
        if piece:
            shown.append(piece)
    assert answer.done, "the answer did not finish"
    return shown


def _reference(url: str, max_tokens: int) -> str:
    """The server's own non-streamed greedy answer."""
    host, port = url.split("://")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    body = {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0.0}
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    out = json.loads(conn.getresponse().read())
    conn.close()
    return str(out["choices"][0]["message"]["content"])


def test_the_streamed_answer_is_the_servers_own(server: str) -> None:
    clock = VirtualClock()
    remote = RemoteLlm(RemoteConfig(server, model="smollm2"), clock, poll_s=POLL)
    router = Router(remote, None, clock, Budgets(first_token_s=60, stall_s=60))
    answer = router.start(MESSAGES, max_tokens=24)
    shown = _run(answer)
    assert answer.route == "remote" and answer.finish_reason in ("stop", "length")
    assert "".join(shown) == answer.text == _reference(server, 24)
    assert router.health.healthy


FAULTS = [
    # fault, proxy args, reason pattern, budget the switch must meet (s, virtual)
    ("refused", {}, r"connection refused", 0.0),
    ("status", {"status": 500}, r"HTTP 500", 0.0),
    ("status", {"status": 429}, r"HTTP 429.*rate-limiting", 0.0),
    ("cut", {"after": 6}, r"connection was cut", 0.0),
    ("stall", {"after": 6}, r"no token for 2 s", BUDGETS.stall_s),
    ("slow", {}, r"no first token within 5 s", BUDGETS.first_token_s),
]


@pytest.mark.parametrize(
    ("fault", "args", "reason", "budget"),
    FAULTS,
    ids=["refused", "http500", "http429", "cut", "stall", "slow-first-token"],
)
def test_every_fault_switches_to_local_in_budget_and_the_text_continues(
    server: str, local: Llm, fault: str, args: dict, reason: str, budget: float
) -> None:
    clock = VirtualClock()
    notes: list[tuple[str, dict]] = []
    with FaultProxy(server, fault, **args) as proxy:
        remote = RemoteLlm(RemoteConfig(proxy.url), clock, poll_s=POLL)
        router = Router(remote, local, clock, BUDGETS, note=lambda n, **a: notes.append((n, a)))
        answer = router.start(MESSAGES, max_tokens=40)
        shown = _run(answer)
    assert answer.route == "remote->local", answer.switch_reason
    assert re.search(reason, answer.switch_reason), answer.switch_reason
    # the switch came within the budget (one poll of slack), counted from the remote's last
    # event (its start for a first token that never came)
    waited = answer.switch_t - answer.remote_last_t
    assert budget - 1e-9 <= waited <= budget + 2 * POLL, waited
    # continuity: the display only grew; it starts with every piece the remote sent, and the
    # local model's continuation follows without repeating the last word shown
    assert "".join(shown) == answer.text
    assert answer.text.startswith(answer.remote_text)
    if fault in ("cut", "stall"):
        assert answer.remote_text.strip(), "the remote showed nothing before the fault"
    continuation = answer.text[len(answer.remote_text) :]
    assert continuation.strip(), "the local model added nothing"
    boundary = answer.remote_text[-1:].isspace() or continuation[:1].isspace()
    if boundary and answer.remote_text.split():
        assert continuation.split()[0].lower() != answer.remote_text.split()[-1].lower()
    # the failure is reported (trace) with the backoff before the next probe
    failed = [a for n, a in notes if n == "remote failed"]
    assert len(failed) == 1 and failed[0]["backoff_s"] >= (
        2.0 if args.get("status") == 429 else 1.0
    )
    assert not router.health.healthy


def test_after_a_failure_requests_go_local_until_a_probe_finds_the_server(
    server: str, local: Llm
) -> None:
    clock = VirtualClock()
    with FaultProxy(server, "status", status=500) as broken:
        remote = RemoteLlm(RemoteConfig(broken.url), clock, poll_s=POLL)
        router = Router(remote, local, clock, BUDGETS)
        _run(router.start(MESSAGES, max_tokens=4))
    assert not router.health.healthy
    second = router.start(MESSAGES, max_tokens=4)
    assert second.route == "local" and "remote down" in second.reason
    _run(second)
    # the server is back (a healthy proxy on another port stands for the repaired link)
    with FaultProxy(server) as good:
        router.remote = RemoteLlm(RemoteConfig(good.url), clock, poll_s=POLL)
        clock.advance(router.health.next_probe_t - clock.now())
        probing = router.start(MESSAGES, max_tokens=4)  # the probe runs beside this answer
        assert probing.route == "local"
        _run(probing)
        router.wait_probe(60)
        assert router.health.healthy
        back = router.start(MESSAGES, max_tokens=8)
        assert back.route == "remote"
        _run(back)
        assert back.route == "remote" and back.text


@pytest.mark.parametrize(
    ("shown", "pieces", "out"),
    [
        ("We go to the station ", ["the station ", "and wait."], "and wait."),
        ("We go to the station ", ["and wait."], "and wait."),
        ("We go to the sta", ["tion and wait."], "tion and wait."),
        ("Platform 4", [" 4 is", " closed."], " is closed."),
        ("Platform 4", [" five", " is closed."], " five is closed."),
    ],
)
def test_a_continuation_drops_only_the_words_it_repeats(shown: str, pieces: list[str], out: str):
    guard = Overlap(shown)
    got = "".join(guard.push(p) for p in pieces) + guard.push("", final=True)
    assert got == out
