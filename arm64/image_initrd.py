"""The board's initramfs, written on the host: busybox, the boot modules and a short /init.

The archive is a gzip'd "newc" cpio (the format the kernel unpacks, see the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst) written here in Python, so neither
a cpio binary nor a chroot is needed. Every entry has owner root, mtime 0 and a fixed inode
number order, so the same inputs give the same bytes.

/init mounts proc, sys and devtmpfs, loads the modules in dependency order, waits up to 10 s for
`root=` (a device path, or LABEL=/UUID= through busybox findfs), mounts it read-write and
switch_roots into `init=` (default /sbin/init, systemd). Before that it checks the A/B slot
store with the root's own `e2fsck -p` and mounts it at /var/lib/ocula (image_config says why
here and not in fstab). Any failure is said on the console and
the board powers off, so a host waiting on it sees qemu exit rather than a hang.
"""

from __future__ import annotations

import gzip
import io
import stat
from collections.abc import Iterable
from pathlib import Path

from arm64.errors import Arm64Error
from arm64.image_config import SLOTS_LABEL, SLOTS_OPTIONS, STORE

TRAILER = "TRAILER!!!"
# @FIELD@s come from image_config.
INIT = """\
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "ocula initramfs: $*; powering off"; sleep 1; poweroff -f; }
while read -r module; do
    insmod "/lib/modules/$module" || fail "cannot load $module"
done < /lib/modules/load-order
# the console (hvc0) exists only now that virtio_console is loaded: the kernel found none for us
exec </dev/console >/dev/console 2>&1
root=LABEL=ocula-root
init=/sbin/init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        init=*) init="${arg#init=}" ;;
    esac
done
device=
tries=0
while [ -z "$device" ] && [ $tries -lt 100 ]; do
    case "$root" in
        LABEL=*|UUID=*) device=$(findfs "$root" 2>/dev/null) ;;
        *) [ -b "$root" ] && device=$root ;;
    esac
    [ -n "$device" ] || { sleep 0.1; tries=$((tries + 1)); }
done
[ -n "$device" ] || fail "no root file system $root after 10 s"
mount -t ext4 -o rw "$device" /newroot || fail "cannot mount $device ($root)"
store=$(findfs LABEL=@SLOTS_LABEL@ 2>/dev/null) || fail "no slot store (LABEL=@SLOTS_LABEL@)"
mount -t devtmpfs devtmpfs /newroot/dev
mount -t proc proc /newroot/proc
chroot /newroot /sbin/e2fsck -p "$store"
[ $? -lt 4 ] || fail "the slot store $store has errors e2fsck -p cannot repair"
umount /newroot/proc
mount -t ext4 -o @SLOTS_OPTIONS@ "$store" /newroot@STORE@ || fail "cannot mount $store"
umount -l /dev  # lazily: the console stays open on it until systemd takes over
umount /proc /sys
exec switch_root /newroot "$init"
"""
for _field, _value in (
    ("SLOTS_LABEL", SLOTS_LABEL),
    ("SLOTS_OPTIONS", SLOTS_OPTIONS),
    ("STORE", STORE),
):
    INIT = INIT.replace(f"@{_field}@", _value)


def module_name(path: str) -> str:
    """`kernel/sound/drivers/snd-aloop.ko[.xz]` -> `snd_aloop` (modprobe treats - and _ alike)."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def module_closure(dep_text: str, builtin_text: str, wanted: Iterable[str]) -> list[str]:
    """The modules.dep paths of `wanted` and everything they depend on, dependencies first.

    A wanted module built into the kernel (modules.builtin) needs nothing; one that is neither
    is an error naming it."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in dep_text.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[module_name(path)] = (path.strip(), rest.split())
    builtin = {module_name(line) for line in builtin_text.split()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen:
            return
        seen.add(name)
        path, needs = deps[name]
        for dep in needs:
            visit(module_name(dep), (*chain, name))
        order.append(path)

    for want in wanted:
        name = module_name(want)
        if name in deps:
            visit(name, ())
        elif name not in builtin:
            raise Arm64Error(
                "choose the kernel modules",
                f"the kernel has no module {want!r} (not in modules.dep nor modules.builtin)",
            )
    return order


class Cpio:
    """A newc cpio archive built in memory, written in order with a trailer."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (
            self.ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data),
            0, 0, rdev[0], rdev[1], len(encoded), 0,
        )  # fmt: skip
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + encoded)
        self.out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry(TRAILER, 0)
        self.out.write(b"\0" * (-self.out.tell() % 512))
        return self.out.getvalue()


def build(root: Path, kver: str, modules: Iterable[str]) -> bytes:
    """The gzip'd initramfs for the root file system `root` (busybox from busybox-static)."""
    busybox = root / "usr/bin/busybox"
    if not busybox.is_file():
        busybox = root / "bin/busybox"
    if not busybox.is_file():
        raise Arm64Error("build the initramfs", f"no busybox in {root} (busybox-static)")
    folder = root / "usr/lib/modules" / kver
    order = module_closure(
        (folder / "modules.dep").read_text(), (folder / "modules.builtin").read_text(), modules
    )
    archive = Cpio()
    for name in ("bin", "dev", "lib", "lib/modules", "newroot", "proc", "sys"):
        archive.dir(name)
    archive.char("dev/console", 5, 1)
    archive.char("dev/null", 1, 3, 0o666)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT.encode(), 0o755)
    names = []
    for path in order:
        name = Path(path).name
        archive.file(f"lib/modules/{name}", (folder / path).read_bytes())
        names.append(name)
    archive.file("lib/modules/load-order", "".join(f"{n}\n" for n in names).encode())
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)
