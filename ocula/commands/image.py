"""`ocula image --board PROFILE --out FILE.img [--key KEY.pub] [--size 2G] [--cache DIR]`:
a bootable Debian arm64 disk image of a board (arm64/image.py)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ocula.argtypes import Bad, key_file, out_dir, out_file

ROOT = Path(__file__).resolve().parents[2]
UNITS = {"": 1 << 20, "M": 1 << 20, "G": 1 << 30}
MIN_SIZE, MAX_SIZE = 256 << 20, 1 << 40


def disk_size(value: str) -> int:
    """`2G`, `1536M` or a number of MiB: the image's size in bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([MG]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if not match:
        raise Bad(f"{value!r}: not a size; give e.g. 2G or 1536M")
    size = int(float(match.group(1)) * UNITS[match.group(2).upper()]) // (1 << 20) << 20
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise Bad(f"{value}: must be 256M to 1024G")
    return size


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "image",
        parents=[common],
        help="build a bootable Debian arm64 disk image of a board",
        description="Build a disk image (GPT: EFI system partition with the kernel and "
        "initramfs, an ext4 root with the runtime and the agent as a systemd service on the "
        "board's serial device, an ext4 A/B slot store) from Debian bookworm packages. Needs "
        "root (file owners) and Debian's debootstrap, qemu-user-static, fdisk, dosfstools, "
        "mtools. Boot it with qemu-system-aarch64 -M virt (see the README, 'Board image').",
    )
    p.add_argument("--board", required=True, metavar="PROFILE", help="board profile name or .toml")
    p.add_argument("--out", required=True, type=out_file, metavar="FILE.img", help="the image")
    p.add_argument(
        "--key", type=key_file, metavar="KEY.pub", help="the public key the board trusts"
    )
    p.add_argument("--size", type=disk_size, default=2 << 30, help="the image's size (default 2G)")
    p.add_argument(
        "--cache",
        type=out_dir,
        default=ROOT / ".cache" / "arm64",
        metavar="DIR",
        help="where the root file system and wheels are cached (default .cache/arm64, "
        "shared with make arm64-test)",
    )
    p.set_defaults(func=_image)


def _image(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from arm64 import image

    opts = image.Options(args.board, args.out, args.size, args.cache, args.key)
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet > 0 or not console.is_terminal,
    )
    task = bar.add_task(image.STEPS[0], total=len(image.STEPS))

    def progress(index: int, title: str) -> None:
        bar.update(task, completed=index, description=title)
        if not console.is_terminal and args.quiet == 0:
            print(f"[{index + 1}/{len(image.STEPS)}] {title}", flush=True)

    with bar:
        report = image.build(opts, progress)
        bar.update(task, completed=len(image.STEPS))
    s = report.sizes_mb
    print(
        f"{report.out}: {s['image_mb']:.0f} MB image, {s['allocated_mb']:.0f} MB allocated "
        f"(root {s['root_content_mb']:.0f} MB in a {s['root_mb']:.0f} MB partition, "
        f"slot store {s['slots_mb']:.0f} MB, kernel {s['kernel_mb']:.0f} MB, "
        f"initramfs {s['initrd_mb']:.1f} MB) in {sum(report.seconds.values()):.0f} s"
        + (f"; reused the cached {' and '.join(report.reused)}" if report.reused else "")
    )
    largest = ", ".join(f"{k} {v:.0f}" for k, v in report.largest_mb.items())
    print(f"largest in the root (MB): {largest}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    return 0
