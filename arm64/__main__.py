"""`python -m arm64 [--cache DIR] [-k FILTER]`: the device test subset on aarch64 under qemu.

Prints one line per step; a failure prints `arm64: FAILED at step '...'` with the cause and
exits 1. The device runner's last line is `N passed, M failed`. Figures of the run (install
size, import time under emulation) go to stdout and to `CACHE/report.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from arm64 import install, reference, rootfs, wheels
from arm64.cache import build_once, key_of
from arm64.errors import Arm64Error

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TESTS = Path(__file__).resolve().parent / "device_tests"
QEMU = "qemu-aarch64-static"
TOOLS = {QEMU: "qemu-user-static", "debootstrap": "debootstrap", "dpkg-deb": "dpkg", "tar": "tar"}
DEVICE_TIMEOUT_S = 1200  # the subset takes ~20 s; a hang under emulation must not eat the CI run
# onnxruntime's cpuinfo reports the empty CPU lists on every import, then falls back.
CPUINFO_NOISE = re.compile(r"^(Error in cpuinfo:|onnxruntime (cpuid_info )?warning:.*cpuinfo)")
# Prints: modules, seconds to import the three dependencies, seconds to import everything.
IMPORT_PROBE = """\
import importlib, pkgutil, time
t0 = time.perf_counter()
import numpy, onnxruntime, tokenizers
t1 = time.perf_counter()
import runtime
names = [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
for name in names:
    importlib.import_module(name)
print(len(names), t1 - t0, time.perf_counter() - t0)
"""


def say(text: str) -> None:
    print(f"arm64: {text}", flush=True)


class Run:
    def __init__(self, cache: Path, name_filter: str, verbose: bool) -> None:
        self.cache = cache
        self.verbose = verbose
        self.name_filter = name_filter
        self.work = cache / "run"
        self.report: dict[str, Any] = {}
        self.steps = 0
        self.current = ""

    def step(self, title: str) -> None:
        self.steps += 1
        self.current = title
        say(f"[{self.steps}] {title}")

    def tools(self) -> None:
        self.step("check the host tools")
        missing = [
            f"{tool} (apt-get install {pkg})"
            for tool, pkg in TOOLS.items()
            if not shutil.which(tool)
        ]
        if missing:
            raise Arm64Error("check the host tools", "missing " + ", ".join(missing))

    def rootfs(self) -> Path:
        self.step("build the Debian bookworm arm64 root file system")
        mirror = rootfs.debian_mirror()
        key = key_of(
            {
                "mirror": mirror,
                "suite": rootfs.SUITE,
                "packages": rootfs.PACKAGES,
                "recipe": rootfs.RECIPE,
            }
        )
        t0 = time.perf_counter()
        folder, reused = build_once(
            self.cache, "rootfs", key, lambda tmp: rootfs.build(tmp, mirror)
        )
        say(
            f"    {'reused' if reused else 'built'} {folder} (mirror {mirror}, {time.perf_counter() - t0:.0f} s)"
        )
        return folder

    def site(self) -> Path:
        self.step("install the device's dependencies as aarch64 wheels")
        pins = wheels.pins()
        key = key_of(
            {"pins": pins, "platforms": wheels.platforms(), "python": wheels.PYTHON_VERSION}
        )
        t0 = time.perf_counter()
        folder, reused = build_once(self.cache, "site", key, lambda tmp: wheels.install(tmp, pins))
        say(
            f"    {'reused' if reused else 'installed'} {' '.join(pins)} in {folder} ({time.perf_counter() - t0:.0f} s)"
        )
        return folder

    def stage(self, site: Path) -> Path:
        self.step("stage the device install (runtime/ + aarch64 wheels, lean) and measure it")
        shutil.rmtree(self.work, ignore_errors=True)
        device = self.work / "device"
        install.stage(ROOT / "runtime", site, device)
        sizes = install.measure(site, device)
        self.report["install"] = sizes
        parts = ", ".join(f"{k} {v}" for k, v in sizes["parts_mb"].items())
        say(
            f"    device install {sizes['device_total_mb']} MB without models ({parts}); "
            f"native libraries {sizes['native_libraries_mb']} MB; "
            f"the wheels as pip installed them {sizes['pip_wheels_mb']} MB"
        )
        return device

    def host_reference(self) -> None:
        self.step("compute the x86_64 reference on this host")
        t0 = time.perf_counter()
        # Exporters print progress of their own; it belongs to -v, not to the CI log.
        with contextlib.redirect_stdout(sys.stdout if self.verbose else io.StringIO()):
            expect = reference.prepare(self.work)
        say(f"    {', '.join(sorted(expect))} ({time.perf_counter() - t0:.0f} s)")

    def qemu(self, fs: Path, device: Path, args: list[str]) -> tuple[list[str], dict[str, str]]:
        """The command and environment that run the root file system's python3.11 under qemu.

        The host's PYTHON* and OPENBLAS_* variables are left out: they describe this x86_64
        machine (OPENBLAS_CORETYPE names an x86 core), not the device."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OPENBLAS_"))}
        env["PYTHONPATH"] = f"{device}:{device / 'site'}"
        env["PYTHONNOUSERSITE"] = "1"
        return [QEMU, "-L", str(fs), str(fs / rootfs.PYTHON), *args], env

    def device_tests(self, fs: Path, device: Path) -> None:
        title = "run the device tests on aarch64 under qemu"
        self.step(title)
        args = [str(DEVICE_TESTS / "run.py"), str(self.work), self.name_filter]
        cmd, env = self.qemu(fs, device, args)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        watchdog = threading.Timer(DEVICE_TIMEOUT_S, proc.kill)
        watchdog.start()
        assert proc.stdout is not None
        hidden = 0
        last = ""
        try:
            for line in proc.stdout:
                if CPUINFO_NOISE.match(line):
                    hidden += 1
                    continue
                summary = re.fullmatch(r"\d+ passed, \d+ failed", line.strip())
                print(line.rstrip() if summary else f"    {line.rstrip()}", flush=True)
                last = line.strip() or last
            code = proc.wait()
        finally:
            watchdog.cancel()
        took = time.perf_counter() - t0
        self.report["device_tests_s"] = round(took, 1)
        if hidden:
            say(f"    ({hidden} lines of onnxruntime's cpuinfo fallback hidden: empty CPU lists)")
        if took >= DEVICE_TIMEOUT_S:
            raise Arm64Error(title, f"no result after {DEVICE_TIMEOUT_S} s; stopped (last: {last})")
        if code < 0 or code >= 128:
            signal = -code if code < 0 else code - 128
            raise Arm64Error(
                title, f"python3.11 under qemu died with signal {signal} after {took:.0f} s"
            )
        if code != 0:
            raise Arm64Error(title, f"{last} (see the FAIL lines above)")
        say(f"    {last} in {took:.0f} s")

    def import_time(self, fs: Path, device: Path) -> None:
        """Medians of 3 fresh processes each (bytecode already compiled by the tests)."""
        title = "measure the import time of runtime under emulation"
        self.step(title)

        def median(args: list[str], emulated: bool = True) -> tuple[float, ...]:
            """(wall seconds, then the numbers the probe printed), the run with median wall."""
            runs = []
            for _ in range(3):
                cmd, env = self.qemu(fs, device, args)
                if not emulated:
                    cmd, env = [sys.executable, *args], dict(os.environ)
                t0 = time.perf_counter()
                try:
                    done = subprocess.run(
                        cmd, env=env, cwd=device, capture_output=True, text=True, timeout=300
                    )
                except subprocess.TimeoutExpired as e:
                    raise Arm64Error(title, f"{' '.join(args)[:60]!r}: no result in 300 s") from e
                wall = time.perf_counter() - t0
                if done.returncode != 0:
                    last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                    raise Arm64Error(title, f"{' '.join(args)[:60]!r}: {last}")
                runs.append((wall, *(float(x) for x in done.stdout.split())))
            return sorted(runs)[1]

        start_s, *_ = median(["-c", "pass"])
        _, count, deps_s, all_s = median(["-c", IMPORT_PROBE])
        _, _, _, native_s = median(["-c", IMPORT_PROBE], emulated=False)
        modules = int(count)
        self.report["import"] = {
            "modules": modules,
            "python_start_s": round(start_s, 2),
            "import_dependencies_s": round(deps_s, 2),
            "import_all_s": round(all_s, 2),
            "import_all_native_x86_s": round(native_s, 3),
        }
        say(
            f"    python3.11 start {start_s:.1f} s; import numpy+onnxruntime+tokenizers "
            f"{deps_s:.1f} s; all {modules} runtime modules (dependencies included) {all_s:.1f} s "
            f"emulated, {native_s:.2f} s native x86_64 (medians of 3)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arm64", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "arm64",
        help="cache folder (default: .cache/arm64)",
    )
    parser.add_argument(
        "-k", dest="name_filter", default="", help="run only device tests whose name contains this"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each command")
    args = parser.parse_args(argv)
    # Library warnings (exporters, transformers) would read as this tool's; -v shows them all.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s"
    )
    if not args.verbose:
        warnings.simplefilter("ignore")
    run = Run(args.cache.resolve(), args.name_filter, args.verbose)
    t0 = time.perf_counter()
    try:
        run.tools()
        fs = run.rootfs()
        site = run.site()
        device = run.stage(site)
        run.host_reference()
        run.device_tests(fs, device)
        run.import_time(fs, device)
    except Arm64Error as e:
        say(f"FAILED at {e}")
        return 1
    except Exception:  # a bug in this tool or an unforeseen failure: keep the traceback
        traceback.print_exc(file=sys.stdout)
        say(f"FAILED at step '{run.current}': unexpected error (traceback above)")
        return 1
    run.report["total_s"] = round(time.perf_counter() - t0, 1)
    (run.cache / "report.json").write_text(json.dumps(run.report, indent=1))
    say(
        f"all steps passed in {run.report['total_s']:.0f} s (figures in {run.cache / 'report.json'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
