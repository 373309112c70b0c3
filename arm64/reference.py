"""The x86_64 side of the parity checks: inputs for the device and the host's own results.

`prepare(work)` fills the folder `work` with what the device tests read (artifacts, fixtures,
profiles) and returns `expect`, the results of the same computations on this host, which
`device_tests/` must reproduce on aarch64: the link frames, the profiles' parsed values, the
artifacts' file hashes, the VAD's segments and probabilities, and the generated tokens.

The host runs its engines on copies under `work/.host/`, so the artifacts the device reads are
exactly what export wrote (no optimized-graph cache of the host's beside them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arm64.errors import Arm64Error

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
VAD_WAV = "speech_padded.wav"
VAD_TRUTH = "speech_padded.json"

Check = Callable[[Path, dict[str, Any]], None]


def prepare(work: Path) -> dict[str, Any]:
    """Build the device's inputs into `work`; returns the host's results (`expect.json`)."""
    expect: dict[str, Any] = {"artifacts": {}}
    for name, check in CHECKS:
        log.info("host reference: %s", name)
        try:
            check(work, expect)
        except Arm64Error:
            raise
        except Exception as e:
            raise Arm64Error(f"x86_64 reference: {name}", f"{type(e).__name__}: {e}") from e
    (work / "expect.json").write_text(json.dumps(expect, indent=1))
    return expect


def _record_artifact(work: Path, name: str, expect: dict[str, Any]) -> None:
    from runtime.manifest import load_manifest

    m = load_manifest(work / name)
    expect["artifacts"][name] = {"kind": m.kind, "sha256": sorted(f.sha256 for f in m.files)}


def _host_copy(work: Path, name: str) -> Path:
    copy = work / ".host" / name
    shutil.copytree(work / name, copy)
    return copy


def link(work: Path, expect: dict[str, Any]) -> None:
    from runtime.link import framing

    rng = random.Random(3)
    payloads = [b"", b"\x00", b"hello", b"\x00" * 300, bytes(range(256)) * 2]
    payloads.append(bytes(rng.randrange(256) for _ in range(700)))
    expect["link"] = {
        "payloads": [p.hex() for p in payloads],
        "frames": [framing.encode(p).hex() for p in payloads],
    }


def profiles(work: Path, expect: dict[str, Any]) -> None:
    from runtime.profile import load_profile

    folder = work / "profiles"
    folder.mkdir()
    expect["profiles"] = {}
    for toml in sorted((ROOT / "board" / "profiles").glob("*.toml")):
        shutil.copy2(toml, folder / toml.name)
        values = {k: v for k, v in dataclasses.asdict(load_profile(toml)).items() if k != "source"}
        expect["profiles"][toml.stem] = json.loads(json.dumps(values))


def vad(work: Path, expect: dict[str, Any]) -> None:
    from export.packaged import export_packaged
    from runtime.engine.audio import read_wav
    from runtime.engine.vad import Vad, speech_segments

    export_packaged("vad", work / "vad")
    _record_artifact(work, "vad", expect)
    (work / "data").mkdir(exist_ok=True)
    for name in (VAD_WAV, VAD_TRUTH):
        shutil.copy2(DATA / name, work / "data" / name)
    engine = Vad.from_artifact(_host_copy(work, "vad"))
    segments = speech_segments(engine, read_wav(DATA / VAD_WAV, 16000))
    expect["vad"] = {
        "wav": f"data/{VAD_WAV}",
        "truth": f"data/{VAD_TRUTH}",
        "segments": [[s.start, s.end] for s in segments],
        "probabilities": engine.probabilities,
    }


LLM_PRESET = "tiny-qwen2"
LLM_VARIANTS = [("int4", "fused"), ("int8", "fused"), ("int4", "optimum"), ("int8", "optimum")]
LLM_NEW_TOKENS = 24
# Greedy for every variant. Seeded sampling (numpy's PCG64 draws the same numbers everywhere)
# makes each token depend on the softmax of the top-k, not just the argmax: run for int8, whose
# logits mostly agree with x86_64 to ~1e-6. Top-k keeps the draws among likely tokens, whose
# intervals of the cumulative probability are wide, so no draw lands near an edge.
LLM_SAMPLING: dict[str, dict[str, Any]] = {
    "greedy": {},
    "sampled": {"temperature": 0.8, "top_k": 8, "seed": 1234},
}
SAMPLED_QUANTS = ("int8",)


def _decisive(what: str, rows: list[list[float]], tol: float) -> None:
    """The x86_64 run decided every step by DECISIVE times the cross-architecture tolerance."""
    from arm64.device_tests.parity import DECISIVE, min_margin

    low, at = min_margin(rows)
    if low < DECISIVE * tol:
        raise Arm64Error(
            f"x86_64 reference: {what}",
            f"the test model decides step {at} by a top-1/top-2 margin of only {low:.4f}, under "
            f"{DECISIVE:g} x the {tol} the logits may differ by across architectures, so equal "
            "tokens would be luck; export.random's recitation training no longer makes it "
            "decisive (see Preset.recite_steps)",
        )


def llm(work: Path, expect: dict[str, Any]) -> None:
    from arm64.device_tests.llm_probe import generate_with_logits
    from arm64.device_tests.parity import TOLERANCE, draw_margin
    from export.random import recital_prompt
    from runtime.engine.llm import GenerationConfig, Llm, SamplingParams
    from tests.artifacts import llm_artifact

    prompt = recital_prompt()
    expect["llm"] = {}
    for quant, graph in LLM_VARIANTS:
        name = f"llm-{LLM_PRESET}-{quant}-{graph}"
        shutil.copytree(llm_artifact(LLM_PRESET, quant=quant, graph=graph), work / name)
        _record_artifact(work, name, expect)
        model = Llm.from_artifact(_host_copy(work, name))
        runs = {}
        for mode, sampling in LLM_SAMPLING.items():
            if mode == "sampled" and quant not in SAMPLED_QUANTS:
                continue
            config = GenerationConfig(LLM_NEW_TOKENS, SamplingParams(**sampling))
            gen, text, logits = generate_with_logits(model, prompt, config)
            run: dict[str, Any] = {
                "sampling": sampling,
                "tokens": gen.tokens,
                "text": text,
                "logits": logits,
            }
            if mode == "greedy":
                _decisive(f"{name} greedy", logits, TOLERANCE[f"llm-{quant}"])
            else:
                t, seed, k = sampling["temperature"], sampling["seed"], sampling["top_k"]
                run["draw_margin"] = draw_margin(logits, gen.tokens, seed, t, k)
            runs[mode] = run
        expect["llm"][name] = {
            "quant": quant,
            "prompt": prompt,
            "prompt_ids": gen.prompt_ids,
            "max_new_tokens": LLM_NEW_TOKENS,
            "runs": runs,
        }


ASR_PRESET = "tiny-whisper"
ASR_WAV = "speech_short.wav"
ASR_NEW_TOKENS = 24


def asr(work: Path, expect: dict[str, Any]) -> None:
    from arm64.device_tests.asr_probe import transcribe_with_logits
    from arm64.device_tests.parity import TOLERANCE
    from runtime.engine.asr import Whisper
    from runtime.engine.audio import read_wav
    from tests.artifacts import asr_artifact

    name = f"asr-{ASR_PRESET}-int8"
    # The logits head: the parity check compares logits (int8 has no other head).
    shutil.copytree(asr_artifact(ASR_PRESET, quant="int8", head="fp32"), work / name)
    _record_artifact(work, name, expect)
    (work / "data").mkdir(exist_ok=True)
    shutil.copy2(DATA / ASR_WAV, work / "data" / ASR_WAV)
    model = Whisper.from_artifact(_host_copy(work, name))
    audio = read_wav(DATA / ASR_WAV, model.sample_rate)
    result, logits = transcribe_with_logits(
        model, audio, language="en", max_new_tokens=ASR_NEW_TOKENS
    )
    _decisive(f"{name} decode", logits, TOLERANCE["asr-int8"])
    expect["asr"] = {
        "artifact": name,
        "wav": f"data/{ASR_WAV}",
        "language": "en",
        "max_new_tokens": ASR_NEW_TOKENS,
        "tokens": result.tokens,
        "text": result.text,
        "logits": logits,
    }


CHECKS: list[tuple[str, Check]] = [
    ("link frames", link),
    ("board profiles", profiles),
    ("VAD artifact and segments", vad),
    (f"{LLM_PRESET} int4/int8 artifacts and tokens", llm),
    (f"{ASR_PRESET} int8 artifact and tokens", asr),
]
