"""The link's speed: bulk throughput on a bare pty, efficiency at 921600 baud, recovery after a cut.

The host end runs in this process; the device end is a separate Python process (as on a real
board), reading a pty path. Peers, side by side in one run, alternating, medians of REPEAT:
- `raw`: bytes written straight into the pty and counted on the other side (the ceiling: no
  framing, no checks, no recovery);
- `framed`: `framing.encode` per message and a `Decoder` on the other side (COBS + CRC only:
  what the link costs over the codec);
- `link`: `Endpoint.send` of each message and one request at the end (reliable, windowed);
- `link-rpc`: `Endpoint.request` per 32 KiB message, waiting for each reply (how the flasher
  talks: one put, one answer).
At 921600 baud the cable (`hil.cable`, 8N1: 10 bits per byte) paces the line, and efficiency is
payload bytes per second / (baud / 10). Recovery: the line is cut while requests flow and
restored; the figure is the time from the restore to the first reply after it.
"""

from __future__ import annotations

import contextlib
import os
import select
import statistics
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

REPEAT = 3
ROOT = Path(__file__).resolve().parents[1]
MSG = 32 * 1024

DEVICE = r"""
import os, sys, tty
from runtime.link import framing
from runtime.link.endpoint import Endpoint
mode, path, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
try:
    tty.setraw(fd)
except Exception:
    pass
os.write(1, b"ready\n")
if mode == "raw" or mode == "framed":
    dec = framing.Decoder(1 << 20)
    got = 0
    while got < total:
        data = os.read(fd, 65536)
        got += len(data) if mode == "raw" else sum(len(p) for p in dec.feed(data))
    os.write(fd, b"\x00done\x00")
else:
    ep = Endpoint(fd, max_payload=int(sys.argv[4]))
    state = {"got": 0}
    def handle(msg):
        if msg == b"?":
            return str(state["got"]).encode()
        state["got"] += len(msg)
        return b"k" if mode != "link" else None
    ep.serve(handle, stop=lambda: False, tick=0.5)
"""


def _device(mode: str, path: str, total: int, frame: int = 1024) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DEVICE, mode, path, str(total), str(frame)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    if proc.stdout.readline() != b"ready\n":
        raise RuntimeError(f"the device process for {mode} did not start")
    return proc


def _host_port(path: str | None, fd: int | None) -> Any:
    if fd is not None:
        return fd
    import serial

    return serial.Serial(path, baudrate=921600, timeout=0.05, write_timeout=30)


def _run(mode: str, host_end: Any, device_path: str, total: int, frame: int = 1024) -> float:
    """Seconds to move `total` payload bytes host -> device with `mode`."""
    from runtime.link import framing
    from runtime.link.endpoint import Endpoint

    proc = _device(mode, device_path, total, frame)
    payload = os.urandom(MSG)
    fd = host_end if isinstance(host_end, int) else host_end.fileno()
    try:
        start = time.perf_counter()
        if mode in ("raw", "framed"):
            data = payload if mode == "raw" else framing.encode(payload)
            sent = 0
            view = memoryview(data)
            while sent < total:
                off = 0
                while off < len(view):
                    try:
                        off += os.write(fd, view[off:])
                    except BlockingIOError:
                        select.select([], [fd], [], 1.0)
                sent += MSG
            buf = b""
            while b"done" not in buf:
                select.select([fd], [], [], 5.0)
                with contextlib.suppress(BlockingIOError):
                    buf += os.read(fd, 4096)
            return time.perf_counter() - start
        ep = Endpoint(host_end, max_payload=frame, name="bench-host")
        try:
            ep.connect(timeout=10)
            start = time.perf_counter()
            for _ in range(total // MSG):
                if mode == "link":
                    ep.send(payload)
                else:
                    ep.request(payload, timeout=30)
            reply = ep.request(b"?", timeout=60)
            elapsed = time.perf_counter() - start
            if int(reply) != total:
                raise RuntimeError(f"{mode}: device got {int(reply)} of {total} bytes")
            return elapsed
        finally:
            ep.close()
    finally:
        proc.kill()
        proc.wait()


def _pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def bulk_unthrottled(total: int = 16 << 20) -> dict[str, Any]:
    modes = [("raw", 1024), ("framed", 1024), ("link", 1024), ("link", 4096), ("link-rpc", 1024)]
    times: dict[str, list[float]] = {f"{m}/{f}": [] for m, f in modes}
    for _ in range(REPEAT):
        for mode, frame in modes:  # alternating
            master, slave, path = _pty()
            try:
                times[f"{mode}/{frame}"].append(_run(mode, master, path, total, frame))
            finally:
                os.close(master)
                os.close(slave)
    mbps = {k: total / statistics.median(v) / 1e6 for k, v in times.items()}
    out: dict[str, Any] = {"payload_MB": total / 1e6}
    for key, value in mbps.items():
        out[key.replace("/1024", "")] = {
            "MB_s": round(value, 2),
            "vs_raw": round(value / mbps["raw/1024"], 3),
        }
    return out


def efficiency_921600(total: int = 384 * 1024) -> dict[str, Any]:
    from hil.cable import Cable

    line = 921600 / 10
    modes = ["raw", "link", "link-rpc"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(REPEAT):
        for mode in modes:
            with Cable(baud=921600) as cable:
                port = _host_port(cable.a, None)
                try:
                    times[mode].append(_run(mode, port, cable.b, total))
                finally:
                    port.close()
    out: dict[str, Any] = {"payload_kB": total / 1000, "line_Bps": line, "target": 0.95}
    for mode, ts in times.items():
        eff = total / statistics.median(ts) / line
        out[mode] = {"efficiency": round(eff, 4), "payload_kBps": round(eff * line / 1000, 1)}
    return out


def recovery_after_cut(
    cuts: tuple[float, ...] = (0.73, 2.31, 5.17, 1.49, 3.91, 0.61, 7.07),
) -> dict[str, Any]:
    """Requests of 4 KiB flow at 921600 baud; the line is cut, then restored. The cut lengths
    are not multiples of the retransmission period, so the restore falls at any phase of it."""
    from hil.cable import Cable
    from runtime.link.endpoint import Endpoint

    resume: list[float] = []
    with Cable(baud=921600) as cable:
        port = _host_port(cable.a, None)
        proc = _device("link-rpc", cable.b, 0)
        ep = Endpoint(port, name="bench-host")
        try:
            ep.connect(timeout=10)
            payload = os.urandom(4096)
            for length in cuts:
                done: list[float] = []
                stop = threading.Event()

                def traffic(done: list[float] = done, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        ep.request(payload, timeout=30)
                        done.append(time.monotonic())

                worker = threading.Thread(target=traffic)
                worker.start()
                time.sleep(0.5)  # let traffic flow before the cut (a benchmark may wait)
                cable.cut()
                time.sleep(length)
                cable.restore()
                restored = time.monotonic()
                while not [t for t in done if t > restored]:
                    time.sleep(0.005)
                stop.set()
                worker.join()
                resume.append(min(t for t in done if t > restored) - restored)
        finally:
            ep.close()
            port.close()
            proc.kill()
            proc.wait()
    return {
        "cuts_s": list(cuts),
        "resume_s": [round(r, 3) for r in resume],
        "median_s": round(statistics.median(resume), 3),
        "max_s": round(max(resume), 3),
        "target_s": 1.0,
    }


def run(out_dir: Path) -> dict[str, Any]:
    return {
        "bulk_unthrottled_pty": bulk_unthrottled(),
        "efficiency_921600": efficiency_921600(),
        "recovery_after_cut_921600": recovery_after_cut(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(Path("bench/out")), indent=2))
