"""`ocula image` on the host, without booting: the initramfs archive (read back by a reader
written here from the format's specification), the kernel module closure, the board's /etc
texts for a profile, the disk layout and a real small disk made and read back with the same
tools (sfdisk, mkfs.vfat, mtools, mkfs.ext4, e2fsck), and the CLI's refusals, each one
`ocula: error:` line with nothing written.

Booting the image is `make qemu-test`'s job (a boot takes ~30 s under emulation).
"""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from arm64 import image_config, image_disk
from arm64.errors import Arm64Error
from arm64.image_disk import MIB
from arm64.image_initrd import Cpio, module_closure
from board import profiles

ROOT = Path(__file__).resolve().parent.parent


def read_newc(data: bytes) -> list[tuple[str, int, bytes, int, int]]:
    """(name, mode, data, rdevmajor, rdevminor) of each entry up to the trailer, checking the
    magic and the 4-byte alignment of every header and body."""
    entries, pos = [], 0
    while True:
        assert pos % 4 == 0
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmajor, rminor, namesize = (fields[1], fields[6], fields[9], fields[10], fields[11])  # fmt: skip
        name_at = pos + 110
        name = data[name_at : name_at + namesize - 1].decode()
        assert data[name_at + namesize - 1] == 0
        body = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, data[body : body + filesize], rmajor, rminor))
        pos = body + filesize + (-filesize % 4)


def test_cpio_round_trip_of_every_entry_kind() -> None:
    archive = Cpio()
    archive.dir("bin")
    archive.file("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3 + b"x", 0o755)
    archive.file("init", b"#!/bin/busybox sh\n", 0o755)
    archive.file("empty", b"")
    archive.symlink("bin/sh", "busybox")
    archive.char("dev/console", 5, 1)
    data = archive.finish()
    assert len(data) % 512 == 0
    got = read_newc(data)
    assert [e[0] for e in got] == ["bin", "bin/busybox", "init", "empty", "bin/sh", "dev/console"]
    kinds = [stat.S_IFMT(e[1]) for e in got]
    assert kinds == [stat.S_IFDIR, stat.S_IFREG, stat.S_IFREG, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR]  # fmt: skip
    assert got[1][2] == b"\x7fELF" + bytes(range(256)) * 3 + b"x"
    assert stat.S_IMODE(got[1][1]) == 0o755
    assert got[3][2] == b""
    assert got[4][2] == b"busybox"
    assert got[5][3:] == (5, 1)


def test_initramfs_bytes_are_reproducible(tmp_path: Path) -> None:
    def make() -> bytes:
        archive = Cpio()
        archive.file("init", b"x" * 1001, 0o755)
        return gzip.compress(archive.finish(), mtime=0)

    assert make() == make()


DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/sound/drivers/snd-aloop.ko: kernel/sound/core/snd-pcm.ko kernel/sound/core/snd-timer.ko kernel/sound/core/snd.ko kernel/sound/soundcore.ko
kernel/sound/core/snd-pcm.ko: kernel/sound/core/snd-timer.ko kernel/sound/core/snd.ko kernel/sound/soundcore.ko
kernel/sound/core/snd-timer.ko: kernel/sound/core/snd.ko kernel/sound/soundcore.ko
kernel/sound/core/snd.ko: kernel/sound/soundcore.ko
kernel/sound/soundcore.ko:
kernel/drivers/virtio/virtio_mmio.ko.xz:
kernel/crypto/unrelated.ko:
"""
BUILTIN = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/tty/serial/amba-pl011.ko\n"


def test_module_closure_loads_dependencies_first_once_each() -> None:
    order = module_closure(DEP, BUILTIN, ["snd_aloop", "ext4", "snd-pcm"])
    names = [Path(p).name for p in order]
    assert sorted(names) == sorted(
        ["soundcore.ko", "snd.ko", "snd-timer.ko", "snd-pcm.ko", "snd-aloop.ko",
         "crc16.ko", "mbcache.ko", "jbd2.ko", "ext4.ko"]
    )  # fmt: skip
    for module, deps in [(line.split(":")[0], line.split(":")[1].split()) for line in DEP.splitlines()]:  # fmt: skip
        if module in order:
            assert all(order.index(d) < order.index(module) for d in deps), module
    assert "kernel/crypto/unrelated.ko" not in order


def test_module_closure_skips_builtins_takes_compressed_names_and_refuses_unknown() -> None:
    assert module_closure(DEP, BUILTIN, ["virtio", "amba_pl011"]) == []
    assert module_closure(DEP, BUILTIN, ["virtio-mmio"]) == [
        "kernel/drivers/virtio/virtio_mmio.ko.xz"
    ]
    with pytest.raises(Arm64Error, match="no module 'vivid'"):
        module_closure(DEP, BUILTIN, ["ext4", "vivid"])


def test_board_files_follow_the_profile() -> None:
    qemu = image_config.serial_device(profiles.find("qemu"))
    assert qemu == "/dev/hvc0"  # the qemu profile serves the agent on a virtio console
    unit = image_config.agent_unit(qemu)
    assert (
        "ExecStart=/usr/bin/python3.11 -m runtime.agent.boot --store /var/lib/ocula "
        "--port /dev/hvc0\n"
    ) in unit
    assert "Environment=PYTHONPATH=/opt/ocula:/opt/ocula/site" in unit
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    assert "RequiresMountsFor=/var/lib/ocula" in unit
    rpi = image_config.serial_device(profiles.find("rpi5"))
    assert "--port /dev/ttyACM0" in image_config.agent_unit(rpi)
    masked = image_config.systemctl_args(rpi)[-1]
    assert masked[0] == "mask"
    assert {"serial-getty@ttyACM0.service", "serial-getty@.service", "getty@.service"} <= set(
        masked
    )
    fstab = image_config.fstab()
    assert "LABEL=ocula-root / ext4 rw,errors=remount-ro 0 0" in fstab
    options = image_config.SLOTS_OPTIONS.split(",")
    assert {"data=ordered", "errors=remount-ro", "nodev", "nosuid"} <= set(options)
    # the kernel logs on the console the agent does not serve
    assert "console=hvc0" in image_config.cmdline("/dev/ttyAMA0")
    assert "console=ttyAMA0" in image_config.cmdline("/dev/hvc0")


def test_a_profile_without_a_uart_or_of_another_arch_is_refused() -> None:
    with pytest.raises(Arm64Error, match=r"serial\.device = 'sim://sim', not a device path"):
        image_config.serial_device(profiles.find("sim"))


def test_written_etc_and_the_initramfs_agree_on_the_store(tmp_path: Path) -> None:
    from arm64.image_initrd import INIT

    image_config.write_etc(tmp_path, "/dev/ttyAMA0")
    assert (tmp_path / "var/lib/ocula").is_dir()
    assert (tmp_path / "etc/modules-load.d/ocula.conf").read_text().split() == [
        "vivid", "snd-aloop", "virtio-gpu"
    ]  # fmt: skip
    assert 'capture.pcm "plughw:Loopback,1,0"' in (tmp_path / "etc/asound.conf").read_text()
    assert "NAutoVTs=0" in (tmp_path / "etc/systemd/logind.conf.d/ocula.conf").read_text()
    assert f"mount -t ext4 -o {image_config.SLOTS_OPTIONS} " in INIT
    assert "findfs LABEL=ocula-slots" in INIT and "@" not in INIT.replace("$@", "")


def test_layout_fits_the_size_or_names_the_least_size() -> None:
    parts = image_disk.layout(2048 * MIB, 40 * MIB, 350 * MIB)
    assert [p.name for p in parts] == ["esp", "ocula-root", "ocula-slots"]
    assert parts[0].start == MIB and all(p.start % MIB == 0 and p.size % MIB == 0 for p in parts)
    for a, b in itertools.pairwise(parts):
        assert a.start + a.size == b.start
    assert parts[2].start + parts[2].size + image_disk.GPT_TAIL == 2048 * MIB
    assert parts[1].size >= 350 * MIB * 5 // 4
    with pytest.raises(
        Arm64Error, match=r"--size 512M is too small: .* at least 696M .*give --size 768M"
    ):
        image_disk.layout(512 * MIB, 40 * MIB, 350 * MIB)


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, (
        f"missing {missing}: apt-get install "
        + " ".join(sorted({image_disk.TOOLS.get(t, t) for t in missing}))
        + " (make qemu-test installs them)"
    )


def test_a_small_disk_is_made_and_its_boot_files_read_back(tmp_path: Path) -> None:
    need("sfdisk", "mkfs.vfat", "mcopy", "mmd", "mkfs.ext4", "e2fsck")
    stage, store = tmp_path / "root", tmp_path / "store"
    (stage / "etc").mkdir(parents=True)
    (stage / "etc/hostname").write_text("ocula\n")
    store.mkdir()
    (store / "board.toml").write_text("[board]\n")
    kernel, initrd, info = tmp_path / "k", tmp_path / "i", tmp_path / "j"
    kernel.write_bytes(os.urandom(300_000))
    initrd.write_bytes(os.urandom(70_000))
    info.write_text('{"cmdline": "root=LABEL=ocula-root rw", "profile": "qemu"}')
    esp = {"vmlinuz": kernel, "initrd.img": initrd, "ocula-image.json": info,
           "loader/entries/ocula.conf": info}  # fmt: skip
    parts = image_disk.layout(512 * MIB, 1 * MIB, 1 * MIB)
    out = tmp_path / "d.img"
    image_disk.make(out, parts, esp, stage, store, inodes=64)
    assert out.stat().st_size == 512 * MIB
    table = image_disk.read_table(out)
    assert [p["name"] for p in table] == ["esp", "ocula-root", "ocula-slots"]
    got = image_disk.boot_files(out, tmp_path / "boot")
    assert got.kernel.read_bytes() == kernel.read_bytes()
    assert got.initrd.read_bytes() == initrd.read_bytes()
    assert got.cmdline == "root=LABEL=ocula-root rw" and got.info["profile"] == "qemu"
    for part in parts[1:]:
        check = subprocess.run(
            ["e2fsck", "-fn", f"{out}?offset={part.start}"], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        label = subprocess.run(
            ["e2label", f"{out}?offset={part.start}"], capture_output=True, text=True
        )
        assert label.stdout.strip() == part.name


def run_cli(args: list[str], env: dict[str, str] | None = None, user: int | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    cmd = [sys.executable, "-m", "ocula.cli", "image", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=ROOT, timeout=60)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocula: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("size", "why"),
    [("2X", "not a size"), ("100M", "must be 256M to 1024G"), ("-1G", "not a size")],
)
def test_a_bad_size_is_one_line_and_writes_nothing(tmp_path: Path, size: str, why: str) -> None:
    out = tmp_path / "new" / "q.img"
    done = run_cli(["--board", "qemu", "--out", str(out), f"--size={size}"])
    assert done.returncode == 2
    assert why in one_error_line(done)
    assert not (tmp_path / "new").exists()


def test_missing_tools_are_named_with_their_packages(tmp_path: Path) -> None:
    out = tmp_path / "new" / "q.img"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    done = run_cli(
        ["--board", "qemu", "--out", str(out), "--cache", str(tmp_path / "cache")],
        env={"PATH": str(bin_dir)},
    )
    assert done.returncode == 1
    line = one_error_line(done)
    for tool, package in [("debootstrap", "debootstrap"), ("mkfs.vfat", "dosfstools"),
                          ("mcopy", "mtools"), ("qemu-aarch64-static", "qemu-user-static"),
                          ("sfdisk", "fdisk")]:  # fmt: skip
        assert f"{tool} (apt-get install {package})" in line
    assert not (tmp_path / "new").exists() and not (tmp_path / "cache").exists()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder another user can write into (pytest's own are private to this one)."""
    folder = Path(tempfile.mkdtemp(prefix="ocula-image-test-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_non_root_user_is_refused_before_any_work(open_tmp: Path) -> None:
    """Every tool is present (stand-ins: only their presence is checked first)."""
    tmp_path = open_tmp
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    from arm64.image import TOOLS

    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which("true") or "/bin/true")
    out = tmp_path / "new" / "q.img"
    user = 65534 if os.geteuid() == 0 else None
    done = run_cli(
        ["--board", "qemu", "--out", str(out), "--cache", str(tmp_path / "cache")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        user=user,
    )
    assert done.returncode == 1
    assert "needs root" in one_error_line(done)
    assert not (tmp_path / "new").exists() and not (tmp_path / "cache").exists()
