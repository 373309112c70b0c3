"""`ocula profile --port PORT --app APP --out DIR`: latency and power report of one app."""

from __future__ import annotations

import argparse
from typing import Any

from ocula.argtypes import integer, label, number, out_dir, port


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "profile",
        parents=[common],
        help="latency + power report of an app on a board (HTML, PNG, CSV, Perfetto trace)",
        description="Sample the board's power with the rig fixture (simulated for sim:// boards) "
        "while the app runs, synchronise samples and trace through marker edges, and write "
        "power.csv, power.png, trace.json (with a power counter track), power.json, index.html.",
    )
    p.add_argument(
        "--port", required=True, type=port, metavar="PORT", help="the board (sim://sim, /dev/...)"
    )
    p.add_argument(
        "--app",
        required=True,
        type=label,
        help="an app the board runs, or 'requests' (the agent itself)",
    )
    p.add_argument("--out", required=True, type=out_dir, metavar="DIR", help="report folder")
    p.add_argument(
        "--seconds",
        type=number(0, 86400, low_open=True),
        default=3.0,
        help="how long to run (default 3)",
    )
    p.add_argument(
        "--fixture-port", type=port, metavar="PORT", help="the rig fixture (real boards)"
    )
    p.add_argument(
        "--rate", type=integer(1, 1_000_000), default=2000, metavar="HZ", help="power sample rate"
    )
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from hil.profiling import profile

    r = profile(args.port, args.app, args.out, args.seconds, args.fixture_port, args.rate)
    c = r["clock"]
    print(
        f"{args.app} on {r['board']}: {r['samples']} samples, mean {r['mean_power_w']:.3f} W, "
        f"{r['energy_j']:.3f} J; clock offset {c['offset_us'] / 1e6:.6f} s, drift "
        f"{c['drift_ppm']:.1f} ppm ({c['method']}, max residual {c['residual_max_us']:.0f} us)"
    )
    for name, s in r["spans"].items():
        print(
            f"  {name:<12} n={s['count']:<5} {s['mean_energy_j'] * 1e3:9.3f} mJ each, "
            f"{s['mean_power_w']:.3f} W mean ({s['coverage']:.0%} of samples present)"
            + (f", {s['incomplete']} spans over gaps" if s["incomplete"] else "")
        )
    if r["gaps"]:
        print(f"  {len(r['gaps'])} gaps in the sample stream (not interpolated; see power.json)")
    print(f"report: {args.out / 'index.html'}")
    return 0
