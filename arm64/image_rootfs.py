"""The board image's root file system: Debian bookworm arm64 with systemd and a kernel, made on
an x86_64 host without binfmt_misc and without a chroot.

How: `debootstrap --foreign --variant=minbase` downloads and verifies every package and extracts
the essential ones; the rest of its base list (systemd, the kernel, python3.11, ...) is
unpacked on the host with dpkg-deb (`rootfs.unpack_base`). No maintainer script runs. What they
would have done for a system that only has to boot into one service is done here on the host:
/etc/passwd and /etc/group from base-passwd's master files, the system users of sysusers.d, an
empty machine-id, the kernel module index and the dynamic linker cache. The guest's own tools do
it (`systemd-sysusers`, `depmod`, `ldconfig`), each run once under `qemu-aarch64-static -L ROOT`
with every path given under ROOT: qemu-user runs one aarch64 binary without binfmt as long as it
execs nothing, and a path that does not exist under the -L prefix would reach the host's, so no
tool is ever given a bare guest path to write.

The kernel's modules are cut to the closure (modules.dep) of what the board needs: the disk,
the root file system, the consoles, the V4L2 test camera (vivid), the ALSA loopback (snd-aloop)
and virtio-gpu's framebuffer. The docs, manuals and locales go too.
"""

from __future__ import annotations

import compileall
import logging
import os
import shutil
import subprocess
from pathlib import Path

from arm64 import rootfs
from arm64.errors import Arm64Error
from arm64.image_initrd import module_closure

log = logging.getLogger(__name__)

QEMU = "qemu-aarch64-static"
PACKAGES = (
    "python3.11",
    "libasound2",  # runtime.io.alsa binds libasound.so.2 with ctypes
    "systemd",
    "systemd-sysv",
    "kmod",
    "e2fsprogs",
    "linux-image-arm64",
    "busybox-static",
    "systemd-boot-efi",
)
# What the initramfs loads to mount the root file system and open the virtio console.
BOOT_MODULES = (
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "crc32c_generic",
    "ext4",
)
# What the running board loads besides (modules-load.d) or may need.
BOARD_MODULES = ("vivid", "snd-aloop", "virtio_gpu", "virtio_rng")
STRIP = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info")
# Bumped when the way the root file system is made changes, so cached copies are rebuilt.
RECIPE = 4


def build(target: Path, mirror: str) -> None:
    """Make the configured root file system in the empty folder `target`."""
    _debootstrap(target, mirror)
    rootfs.unpack_base(target)
    shutil.rmtree(target / "debootstrap", ignore_errors=True)
    for name, mode in (("proc", 0o555), ("sys", 0o555), ("run", 0o755), ("tmp", 0o1777)):
        # debootstrap --foreign links proc to the host's /proc; systemd mounts it here
        path = target / name
        if path.is_symlink():
            path.unlink()
        path.mkdir(exist_ok=True)
        path.chmod(mode)
    for apt in ("var/cache/apt/archives", "var/lib/apt/lists"):  # .debs, the 48 MB index
        shutil.rmtree(target / apt, ignore_errors=True)
        (target / apt / "partial").mkdir(parents=True)
    for dtbs in target.glob("usr/lib/linux-image-*"):  # device trees: qemu and EFI bring their own
        shutil.rmtree(dtbs)
    for folder in STRIP:
        shutil.rmtree(target / folder, ignore_errors=True)
        (target / folder).mkdir(parents=True)
    _users(target)
    kver = kernel_version(target)
    depmod = ["-b", str(target), kver]
    guest(target, "usr/sbin/depmod", depmod, argv0="depmod")  # modules.dep of every module
    _prune_modules(target, kver)
    guest(target, "usr/sbin/depmod", depmod, argv0="depmod")
    guest(target, "usr/sbin/ldconfig", ["-r", str(target)])
    _bytecode(target)
    (target / "etc/machine-id").write_text("")


def _debootstrap(target: Path, mirror: str) -> None:
    step = "debootstrap the board's root file system"
    cmd = [
        "debootstrap", "--foreign", "--variant=minbase", "--arch=arm64",
        f"--include={','.join(PACKAGES)}",
    ]  # fmt: skip
    cache = os.environ.get("OCULA_DEBOOTSTRAP_CACHE")  # a folder of .debs, to speed up rebuilds
    if cache:
        cmd.append(f"--cache-dir={Path(cache).resolve()}")
    cmd += [rootfs.SUITE, str(target), mirror]
    log.info("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    except subprocess.TimeoutExpired as e:
        raise Arm64Error(step, f"debootstrap from {mirror} gave no result in 1800 s") from e
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        errors = [x for x in lines if x.startswith("E:")] or lines[-4:]
        raise Arm64Error(
            step,
            f"debootstrap from {mirror} exited {done.returncode}: {' '.join(errors)} "
            "(the mirror comes from /etc/apt/sources.list*; OCULA_DEBIAN_MIRROR=URL picks another)",
        )


def guest(root: Path, binary: str, args: list[str], argv0: str | None = None) -> str:
    """Run one of the root file system's aarch64 programs under qemu-user; its stdout."""
    cmd = [QEMU, "-L", str(root), "-0", argv0 or Path(binary).name]
    cmd += [str(inside(root, binary)), *args]
    log.info("running %s", " ".join(cmd))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_LOG_LEVEL": "err"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=300)
    if done.returncode != 0:
        raise Arm64Error(
            f"run the guest's {Path(binary).name}",
            f"{' '.join(cmd[3:])} exited {done.returncode}: {done.stderr.strip()[-400:]}",
        )
    return done.stdout


def inside(root: Path, relpath: str) -> Path:
    """`root/relpath` with its symbolic links followed inside `root` (`usr/sbin/depmod` is a
    link to /bin/kmod, which on the host would be the host's)."""
    path = root
    for hops, part in enumerate(Path(relpath).parts):
        path = path / part
        for _ in range(40):
            if not path.is_symlink():
                break
            target = os.readlink(path)
            path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
        else:
            raise Arm64Error("run a guest tool", f"too many symbolic links at {relpath} ({hops})")
    return path


def _users(root: Path) -> None:
    """What base-passwd's postinst and systemd's sysusers would write."""
    for name in ("passwd", "group"):
        master = root / f"usr/share/base-passwd/{name}.master"
        if not master.is_file():
            raise Arm64Error("write the system users", f"base-passwd left no {master}")
        shutil.copyfile(master, root / "etc" / name)
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).touch(mode=0o640)
    guest(root, "usr/bin/systemd-sysusers", [f"--root={root}"])


def kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "usr/lib/modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise Arm64Error(
            "find the kernel", f"expected one kernel in {root}/usr/lib/modules, found {versions}"
        )
    return versions[0]


def _prune_modules(root: Path, kver: str) -> None:
    """Keep the closure of BOOT_MODULES + BOARD_MODULES; remove every other module."""
    folder = root / "usr/lib/modules" / kver
    dep = (folder / "modules.dep").read_text()
    builtin = (folder / "modules.builtin").read_text()
    keep = set(module_closure(dep, builtin, [*BOOT_MODULES, *BOARD_MODULES]))
    for path in (folder / "kernel").rglob("*"):
        if path.is_file() and str(path.relative_to(folder)) not in keep:
            path.unlink()
    for path in sorted((folder / "kernel").rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _bytecode(root: Path) -> None:
    """Compile the guest's Python library once here, as Debian's py3compile would on install,
    so the board's first boot does not spend minutes of emulated time writing __pycache__.
    The host's 3.11 writes the same bytecode (the format is fixed within a minor version)."""
    import sys

    if sys.version_info[:2] != (3, 11):
        log.info("host Python is not 3.11; the guest compiles its library on first use")
        return
    for lib in ("usr/lib/python3.11", "usr/lib/python3/dist-packages"):
        if (root / lib).is_dir():
            compileall.compile_dir(
                root / lib, quiet=2, stripdir=str(root), prependdir="/", workers=1
            )
