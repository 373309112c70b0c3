"""Run every benchmark suite in bench/ and write bench/out/*.json.

Each suite is a module `bench/bench_*.py` with `run(out_dir) -> dict`; suites measure Ocula and
its peers side by side in one process run, alternating, and report medians and ratios.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench


def main(argv: list[str]) -> int:
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    wanted = set(argv)
    suites = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")]
    if wanted:
        unknown = wanted - set(suites)
        if unknown:
            print(
                f"bench: error: unknown suite(s) {sorted(unknown)}; have {suites}", file=sys.stderr
            )
            return 2
        suites = [s for s in suites if s in wanted]
    if not suites:
        print("bench: no suites yet")
        return 0
    for name in suites:
        print(f"== {name}", flush=True)
        result = importlib.import_module(f"bench.{name}").run(out)
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
