"""`ocula image`: a bootable Debian arm64 disk image of an Ocula board, from Debian packages.

Steps (each reported to a progress callback): check the host, build or reuse the cached root
file system (image_rootfs, keyed by its inputs like arm64-test's), build or reuse the aarch64
wheels (shared with arm64-test), copy the root file system to a work folder and make it this
board's (runtime + wheels in /opt/ocula, /etc from image_config, services enabled by the guest's
systemctl), write the initramfs (image_initrd), and lay out the disk (image_disk). The image is
written beside OUT and renamed into place at the end, so OUT is either complete or untouched.

The kernel boots directly (`qemu -kernel/-initrd`, files from `boot_files`) or through
systemd-boot on the ESP (a generic EFI arm64 board or qemu with UEFI firmware).
"""

from __future__ import annotations

import compileall
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arm64 import image_config, image_disk, image_initrd, image_rootfs, install, rootfs, wheels
from arm64.cache import build_once, key_of
from arm64.errors import Arm64Error
from arm64.image_disk import MIB, BootFiles, boot_files
from board import profiles

__all__ = ["BootFiles", "Options", "Report", "boot_files", "build"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
# Bumped when what goes into the image changes (the root file system has its own RECIPE).
RECIPE = 1
TOOLS = {
    "debootstrap": "debootstrap",
    "dpkg-deb": "dpkg",
    "tar": "tar",
    "cp": "coreutils",
    image_rootfs.QEMU: "qemu-user-static",
    **image_disk.TOOLS,
}
# The V4L2 backend's library (pure Python, not in Debian bookworm), pinned; the ALSA backend
# needs only libasound2 from Debian (ctypes).
DEVICE_EXTRAS = ("linuxpy==0.25.0", "typing_extensions==4.16.0")
SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootaa64.efi"
STEPS = (
    "check the host",
    "root file system",
    "aarch64 wheels",
    "board files",
    "initramfs",
    "disk image",
)
Progress = Callable[[int, str], None]


@dataclass(frozen=True)
class Options:
    board: str  # a profile name or .toml path
    out: Path
    size: int  # bytes
    cache: Path
    key: Path | None = None


@dataclass
class Report:
    out: Path
    sizes_mb: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    largest_mb: dict[str, float] = field(default_factory=dict)


def check_host(opts: Options) -> None:
    """Every refusal that needs no work: tools, root, the profile, the key, free space."""
    step = "check the host"
    missing = [f"{t} (apt-get install {p})" for t, p in TOOLS.items() if shutil.which(t) is None]
    if missing:
        raise Arm64Error(step, "missing " + ", ".join(missing))
    if os.geteuid() != 0:
        raise Arm64Error(
            step,
            "building an image needs root (debootstrap and mkfs.ext4 -d keep the files' owners); "
            "run it as root or with sudo",
        )
    image_config.serial_device(profiles.find(opts.board))
    if opts.key is not None:
        from board import keys

        keys.load_public_raw(opts.key)
    rootfs.debian_mirror()
    for where, need in ((opts.out.parent, 600 * MIB), (opts.cache, 1500 * MIB)):
        probe = next(p for p in (where, *where.parents) if p.exists())
        free = shutil.disk_usage(probe).free
        if free < need:
            raise Arm64Error(
                step,
                f"{probe} has {free / MIB:.0f} MiB free, the image needs about {need / MIB:.0f} "
                "MiB there; free some space or choose another --out/--cache",
            )


def build(opts: Options, progress: Progress | None = None) -> Report:
    """Make the image `opts.out`; the Report holds sizes (MB) and step times (s)."""
    say = progress or (lambda _i, _title: None)
    report = Report(opts.out)
    clock = time.perf_counter()

    def done(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.seconds[name] = round(now - clock, 1)
        clock = now

    say(0, STEPS[0])
    check_host(opts)
    profile = profiles.find(opts.board)
    device = image_config.serial_device(profile)
    done("check")
    say(1, STEPS[1])
    fs = _rootfs(opts.cache, report)
    done("rootfs")
    say(2, STEPS[2])
    site = _site(opts.cache, report)
    extras = _extras(opts.cache)
    done("wheels")
    say(3, STEPS[3])
    work = opts.cache / "image-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        stage = work / "root"
        image_disk.run(
            "copy the root file system", ["cp", "-a", "--reflink=auto", str(fs), str(stage)]
        )
        _board_files(stage, device, site, extras)
        store = work / "store"
        _provision(store, opts)
        kver = image_rootfs.kernel_version(stage)
        esp = _take_kernel(stage, kver, work, device)
        done("board")
        say(4, STEPS[4])
        initrd = image_initrd.build(stage, kver, image_rootfs.BOOT_MODULES)
        (work / "initrd.img").write_bytes(initrd)
        esp["initrd.img"] = work / "initrd.img"
        done("initramfs")
        say(5, STEPS[5])
        _disk(opts, profile, device, stage, store, esp, work, report)
        done("disk")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _rootfs(cache: Path, report: Report) -> Path:
    mirror = rootfs.debian_mirror()
    key = key_of(
        {
            "mirror": mirror,
            "suite": rootfs.SUITE,
            "packages": image_rootfs.PACKAGES,
            "modules": [image_rootfs.BOOT_MODULES, image_rootfs.BOARD_MODULES],
            "recipe": image_rootfs.RECIPE,
        }
    )
    folder, reused = build_once(
        cache, "image-rootfs", key, lambda tmp: image_rootfs.build(tmp, mirror)
    )
    if reused:
        report.reused.append("root file system")
    return folder


def _site(cache: Path, report: Report) -> Path:
    pins = wheels.pins()
    key = key_of({"pins": pins, "platforms": wheels.platforms(), "python": wheels.PYTHON_VERSION})
    folder, reused = build_once(cache, "site", key, lambda tmp: wheels.install(tmp, pins))
    if reused:
        report.reused.append("wheels")
    return folder


def _extras(cache: Path) -> Path:
    key = key_of({"pins": DEVICE_EXTRAS, "python": wheels.PYTHON_VERSION})
    folder, _ = build_once(
        cache, "image-extras", key, lambda tmp: wheels.install(tmp, list(DEVICE_EXTRAS))
    )
    return folder


def _board_files(stage: Path, device: str, site: Path, extras: Path) -> None:
    """/opt/ocula (runtime + lean wheels + linuxpy, compiled), /etc, and the services."""
    opt = stage / "opt/ocula"
    install.stage(ROOT / "runtime", site, opt)
    shutil.copytree(extras, opt / "site", dirs_exist_ok=True, ignore=shutil.ignore_patterns("bin"))
    if sys.version_info[:2] == (3, 11):  # the guest's Python is 3.11: same bytecode
        compileall.compile_dir(opt, quiet=2, stripdir=str(stage), prependdir="/", workers=1)
    image_config.write_etc(stage, device)
    for args in image_config.systemctl_args(device):
        image_rootfs.guest(stage, "usr/bin/systemctl", [f"--root={stage}", *args])


def _provision(store: Path, opts: Options) -> None:
    """The slot store as a sim board's provision() leaves it: board.toml (+ trusted.pub)."""
    store.mkdir()
    (store / "board.toml").write_bytes(profiles.path_of(opts.board).read_bytes())
    if opts.key is not None:
        from board import keys

        (store / "trusted.pub").write_bytes(keys.load_public_raw(opts.key))


def _take_kernel(stage: Path, kver: str, work: Path, device: str) -> dict[str, Path]:
    """Move the kernel out of the root's /boot to the ESP's files (it boots from there)."""
    kernel = stage / f"boot/vmlinuz-{kver}"
    if not kernel.is_file():
        raise Arm64Error(
            "find the kernel", f"no {kernel.relative_to(stage)} in the root file system"
        )
    shutil.move(kernel, work / "vmlinuz")
    for name in (f"System.map-{kver}", f"initrd.img-{kver}"):
        (stage / "boot" / name).unlink(missing_ok=True)
    files = {"vmlinuz": work / "vmlinuz"}
    if (stage / SYSTEMD_BOOT).is_file():
        files["EFI/BOOT/BOOTAA64.EFI"] = stage / SYSTEMD_BOOT
        (work / "loader.conf").write_text("default ocula.conf\ntimeout 0\n")
        (work / "ocula.conf").write_text(
            "title Ocula board (Debian arm64)\nlinux /vmlinuz\ninitrd /initrd.img\n"
            f"options {image_config.cmdline(device)}\n"
        )
        files["loader/loader.conf"] = work / "loader.conf"
        files["loader/entries/ocula.conf"] = work / "ocula.conf"
    return files


def _tree(path: Path) -> tuple[int, int]:
    """(bytes as 4 KiB blocks, entries) of a folder, as an ext4 copy of it would take."""
    size = entries = 0
    for p in path.rglob("*"):
        entries += 1
        st = p.lstat()
        size += -(-st.st_size // 4096) * 4096 if not p.is_dir() else 4096
    return size, entries


def _disk(
    opts: Options,
    profile: Any,
    device: str,
    stage: Path,
    store: Path,
    esp: dict[str, Path],
    work: Path,
    report: Report,
) -> None:
    root_bytes, entries = _tree(stage)
    esp_bytes = sum(p.stat().st_size for p in esp.values()) + 64 * 1024
    parts = image_disk.layout(opts.size, esp_bytes, root_bytes)
    sizes = {
        "image_mb": round(opts.size / 1e6, 1),
        "esp_mb": round(parts[0].size / 1e6, 1),
        "root_mb": round(parts[1].size / 1e6, 1),
        "slots_mb": round(parts[2].size / 1e6, 1),
        "root_content_mb": round(root_bytes / 1e6, 1),
        "kernel_mb": round(esp["vmlinuz"].stat().st_size / 1e6, 1),
        "initrd_mb": round(esp["initrd.img"].stat().st_size / 1e6, 1),
    }
    (work / "ocula-image.json").write_text(
        image_config.image_info(profile, device, RECIPE * 1000 + image_rootfs.RECIPE, sizes)
    )
    esp["ocula-image.json"] = work / "ocula-image.json"
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = opts.out.with_name(f".{opts.out.name}.partial")
    try:
        image_disk.make(tmp, parts, esp, stage, store, inodes=entries * 13 // 10 + 8192)
        tmp.rename(opts.out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report.sizes_mb = sizes
    report.sizes_mb["allocated_mb"] = round(opts.out.stat().st_blocks * 512 / 1e6, 1)
    report.largest_mb = _largest(stage)


def _largest(stage: Path) -> dict[str, float]:
    """What dominates the root file system: its biggest folders two levels under /usr, /opt."""
    found = {}
    for top in ("usr/lib", "usr/share", "usr/bin", "opt/ocula/site", "opt/ocula", "boot"):
        for sub in (stage / top).iterdir() if (stage / top).is_dir() else ():
            if sub.is_dir() and not sub.is_symlink():
                found[f"/{sub.relative_to(stage)}"] = _tree(sub)[0]
    top5 = sorted(found.items(), key=lambda kv: -kv[1])[:6]
    return {k: round(v / 1e6, 1) for k, v in top5}
