"""`ocula run APP --port local|PORT ...`: run captions, translate or look, and report.

With a board's port (a serial device, `sim://NAME`, `rfc2217://HOST:PORT`, `labgrid://PLACE`:
any kind in `hil.ports.KINDS`) the board's agent runs the app on its own devices with the
models of its installed bundle: this host sends the `run` request with the app options
(languages, tokens, question), waits for the run to end and prints the board's counters and
latency percentiles; `--trace FILE` fetches the board's trace;
`--audio WAV` and `--camera IMAGE` send a clip first, which the board uses as its microphone
(played in real time) and camera (every frame).
With `--port local` the app runs on this host with file-backed devices: `--audio` a WAV paced in
real time (or `alsa:DEVICE`), `--camera` an image, a folder of images, `pattern` or
`v4l2:/dev/videoN`, `--display` a folder for the virtual display's PNG frames and preview (or
`fb:/dev/fbN`). Models come from `--models DIR`, a folder of artifacts (one subfolder each, as
`ocula export` writes them). `--virtual` runs the same code in simulated time: as fast as the
machine computes, with every figure in compute time. At the end it prints the counters, the
latency percentiles and the energy estimate; `--trace FILE` writes the Chrome trace-event JSON
(open it in https://ui.perfetto.dev) and `--json` prints the report for scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from ocula.argtypes import http_url, in_file, integer, label, number, out_file, port_or_local, text
from runtime.errors import OculaError, UsageError

APPS = ("captions", "translate", "look")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run an app (captions | translate | look) on this host or a board",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_app_arguments(p)
    p.set_defaults(func=_run)


def add_app_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP", choices=APPS, help="captions | translate | look")
    p.add_argument(
        "--port", required=True, type=port_or_local, help="'local' (this host) or a board port"
    )
    p.add_argument(
        "--models",
        type=Path,
        help="folder of artifacts (default ./artifacts; --port local only)",
    )
    p.add_argument("--board", default="sim", help="board profile (default sim)")
    p.add_argument(
        "--audio", help="WAV file, or alsa:DEVICE (with a board port: a WAV clip it plays)"
    )
    p.add_argument(
        "--camera",
        help="image, folder of images, 'pattern', or v4l2:/dev/videoN (with a board port: an image)",
    )
    p.add_argument("--display", help="folder for the virtual display, or fb:/dev/fbN")
    p.add_argument("--trace", type=out_file, help="write the Chrome trace-event JSON here")
    p.add_argument(
        "--duration",
        type=number(0, 7 * 86400, low_open=True),
        default=60.0,
        help="stop after S seconds (default 60)",
    )
    p.add_argument("--source-lang", type=label, default="en", help="spoken language (default en)")
    p.add_argument(
        "--target-lang", type=label, default="zh", help="translation language (default zh)"
    )
    p.add_argument(
        "--question",
        type=text,
        help="look: what to ask about the text read (default: translate it)",
    )
    p.add_argument(
        "--max-tokens", type=integer(1, 4096), default=48, help="LLM tokens per answer (default 48)"
    )
    p.add_argument(
        "--max-length",
        type=integer(16, 1 << 20),
        default=None,
        metavar="N",
        help="tokens the LLM's KV cache holds, prompts and answers (default: the board "
        "profile's budget.llm_max_tokens)",
    )
    p.add_argument("--once", action="store_true", help="look: answer one frame, then stop")
    p.add_argument(
        "--virtual", action="store_true", help="simulated time: as fast as compute allows"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--remote",
        type=http_url,
        metavar="URL",
        help="an OpenAI-compatible endpoint (e.g. http://127.0.0.1:8080/v1) that answers while it "
        "is up; the board's own model takes over when it is not (default: the profile's [remote])",
    )
    p.add_argument(
        "--remote-model", type=label, default=None, help="the model name to ask the endpoint for"
    )
    p.add_argument(
        "--remote-key-file",
        type=in_file,
        help="file holding the endpoint's API key (--port local; a board reads its profile's)",
    )


def _run(args: argparse.Namespace) -> int:
    if args.port == "local":
        report, trace = run_local(args)
    else:
        report, trace = run_board(args)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, ensure_ascii=False, default=str))
    else:
        print_report(report)
        if trace:
            print(f"\ntrace: {trace} (open in https://ui.perfetto.dev)")
    # an app that failed (to start, or its work: every failed speech segment) fails the run
    return 0 if report.apps and not report.failures else 1


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "source_lang": args.source_lang,
        "target_lang": args.target_lang,
        "max_tokens": args.max_tokens,
        "once": args.once,
    }
    if args.question:
        options["question"] = args.question
    if args.remote:
        options["remote"] = args.remote
    if args.remote_model:
        options["remote_model"] = args.remote_model
    if args.max_length is not None:
        options["max_length"] = args.max_length
    return options


def run_board(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """Run the app on the board at `args.port` over the link; fetch its trace if asked."""
    from board.client import Board
    from hil.transport import open_port
    from runtime.apps import Report

    host_only = [
        f"--{name.replace('_', '-')}"
        for name in ("display", "models", "remote_key_file")
        if getattr(args, name) is not None
    ] + (["--virtual"] if args.virtual else [])
    if host_only:
        raise UsageError(
            f"{', '.join(host_only)}: a board runs the app on its own devices with the models "
            f"of its installed bundle; drop {'it' if len(host_only) == 1 else 'them'}, or run "
            "on this host with --port local (a board takes --audio WAV and --camera IMAGE)"
        )
    client = Board(lambda: open_port(args.port), name=args.port, timeout=args.duration + 120)
    try:
        hello, _ = client.call("hello")
        board = hello.get("board", "?")
        request = {"app": args.app, "seconds": args.duration, "options": _options(args)}
        from hil.boardio import inject_clip

        for device in ("audio", "camera"):
            if getattr(args, device) is not None:
                where = f"{args.port}: board {board}"
                request[device] = inject_clip(client, Path(getattr(args, device)), where, device)
        reply, _ = client.call("run", request)
        if not reply.get("ok"):
            raise OculaError(
                f"{args.port}: board {board} did not run {args.app}: {reply.get('error')}"
            )
        trace = _fetch_trace(client, args, reply["trace"], board) if args.trace else None
    finally:
        client.close()
    metrics = {"counters": reply.get("counters", {}), "latency_s": reply.get("latency_s", {})}
    report = Report(
        duration_s=float(reply.get("seconds", 0.0)),
        apps=[args.app],
        failures=dict(reply.get("failures", {})),
        notes=[f"ran on board {board} at {args.port}", *reply.get("notes", [])],
        metrics=metrics,
        energy_j={},
        total_energy_j=float(reply.get("energy_j", 0.0)),
        app_summaries={args.app: reply.get("summary", {})},
    )
    return report, trace


def _fetch_trace(client: Any, args: argparse.Namespace, name: str, board: str) -> Path:
    from hil.boardio import fetch_trace
    from ocula.atomic import write_bytes

    path: Path = args.trace
    data = fetch_trace(client, name, f"{args.port}: board {board}")
    return write_bytes(path, data, "trace")


def run_local(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """Build the devices and the host from the arguments, run, write the trace."""
    from board import profiles
    from ocula.atomic import write_bytes
    from ocula.glyphatlas import cached_atlas
    from runtime.apps import AppOptions, Devices, Host, Models, make_app
    from runtime.io import open_audio, open_camera, open_display
    from runtime.io.glyphs import GlyphAtlas
    from runtime.sched import MonotonicClock, VirtualClock

    profile = profiles.find(args.board)
    clock = VirtualClock() if args.virtual else MonotonicClock()
    atlas = GlyphAtlas.load(cached_atlas(28))
    devices = Devices()
    try:
        if args.audio:
            devices.audio = open_audio(args.audio, profile.audio.rate, clock)
        if args.camera:
            devices.camera = open_camera(args.camera)
        if args.display:
            d = profile.display
            devices.display = open_display(
                args.display, d.width or 480, d.height or 640, d.colour, d.bits
            )
    except OculaError:
        for dev in (devices.audio, devices.camera, devices.display):
            if dev is not None:
                dev.close()
        raise
    options = AppOptions(
        source_lang=args.source_lang,
        target_lang=args.target_lang,
        question=args.question,
        max_tokens=args.max_tokens,
        max_length=args.max_length,
        once=args.once,
        remote=args.remote or "",
        remote_model=args.remote_model or "",
        remote_key_file=str(args.remote_key_file or ""),
    )
    models = Models.scan(args.models or Path("artifacts"))
    host = Host(profile, clock, devices, atlas, models, options)
    host_log = logging.getLogger("runtime.apps.host")
    said_here = _DropCannotRun()  # the one app's failure is this command's error line: say it once
    host_log.addFilter(said_here)
    try:
        added = host.add(make_app(args.app))
    finally:
        host_log.removeFilter(said_here)
    if not added:
        host.close()
        raise host.errors[args.app]
    report = host.run(args.duration)
    trace = None
    if args.trace:
        meta = {"board": profile.name, "app": args.app, "virtual": args.virtual}
        trace = write_bytes(args.trace, json.dumps(host.trace.to_json(meta)).encode(), "trace")
    return report, trace


class _DropCannotRun(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "cannot run" not in str(record.msg)


def print_report(report: Any) -> None:
    m = report.metrics
    print(f"ran {', '.join(report.apps) or 'no app'} for {report.duration_s:.1f} s")
    for name, error in report.failures.items():
        print(f"  {name}: FAILED: {error}")
    for app, summary in report.app_summaries.items():
        for key in ("captions", "translations", "read", "answers"):
            for line in summary.get(key, [])[:6]:
                print(f"  {app} {key[:-1] if key.endswith('s') else key}: {line[:100]!r}")
    print("\ncounters")
    keys = [
        "audio.dropped_samples",
        "late.display",
        "ticks.display",
        "camera.stale_frames",
        "captions.retracted_words",
        "display.scroll_jumps",
        "display.missing_glyphs",
        "memory.over_budget",
        "governor.changes",
    ]
    counters = m["counters"]
    for k in keys + sorted(k for k in counters if k.startswith("errors.")):
        if k in counters or k in keys[:3]:
            print(f"  {k:<32} {counters.get(k, 0)}")
    lat = {k: v for k, v in m["latency_s"].items() if not k.startswith("wait.")}
    if lat:
        print("\nlatency (s)                         p50      p90      p99    count")
        for k, v in lat.items():
            print(
                f"  {k:<32} {v['p50']:7.3f}  {v['p90']:7.3f}  {v['p99']:7.3f}  {int(v['count']):6d}"
            )
    if report.energy_j:
        print(
            f"\nenergy (estimate from the board's power model): {report.total_energy_j:.2f} J total"
        )
        for k, v in sorted(report.energy_j.items(), key=lambda kv: -kv[1])[:6]:
            print(f"  {k:<32} {v:.3f} J")
    for note in report.notes:
        print(f"note: {note}")
