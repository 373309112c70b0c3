"""A full-system board: the `ocula image` disk booted under qemu-system-aarch64 (`qemu://NAME`).

A qemu board has a name and a folder `$OCULA_QEMU_DIR/NAME` (default `~/.cache/ocula/qemu/NAME`)
holding its flash, `disk.img`, a copy of the image it was first started from, so a second command
finds what the first one flashed, like a sim board's store. The kernel, initramfs and command line
are copied out of the image's boot partition once (`boot/`). Inside, the image's systemd starts
the boot ROM and agent on the profile's serial device: a virtio console (/dev/hvc0; the qemu
profile's) or the PL011 UART (/dev/ttyAMA0, which qemu feeds one byte per main-loop turn: about
23 KB/s under TCG); the kernel and systemd log on the other one, kept in `console.log`, never
on the agent's line.

The UART is a pseudo-terminal whose master this process keeps and hands to each qemu it starts
(`-add-fd`), so the port survives the board's power cuts and boots, as a sim board's does. The
disk is served by `hil.cutdisk` over NBD: what the guest wrote but did not flush lives only in
that server's memory, and `power_cut()` (SIGKILL to qemu, then a cut of the disk) loses it, as a
board losing power loses its page cache and its flash's write cache. `reset()` kills qemu but
keeps the disk's pending writes (a reset line does not cut the flash's power).

`start()` returns once the agent answers `hello` (the boot takes tens of seconds under TCG:
`OCULA_QEMU_BOOT_S`, default 300). qemu runs with KVM where the host is aarch64 and /dev/kvm is
usable, else TCG with `-cpu cortex-a72` (`-cpu max` emulates pointer authentication and boots
3.4x slower). qemu and the disk server die with the process that started them (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import time
import tty
from pathlib import Path
from typing import Any

from hil import simlock
from hil.errors import PortError

__all__ = ["QemuBoard", "qemu_dir"]

log = logging.getLogger(__name__)

UART = "/dev/ttyAMA0"  # the virt machine's PL011
VIRTIO_CONSOLE = "/dev/hvc0"  # the first virtconsole
QEMU = "qemu-system-aarch64"
BOOT_S = 300.0
MEMORY_MB = 1024
CPUS = 2
_PR_SET_PDEATHSIG = 1


def qemu_dir() -> Path:
    env = os.environ.get("OCULA_QEMU_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ocula" / "qemu"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def accelerator() -> list[str]:
    """KVM on an aarch64 host that lets us use it, else TCG on every host core."""
    if platform.machine() in ("aarch64", "arm64") and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "cortex-a72"]


class QemuBoard:
    """One emulated board; not started until `start()`."""

    def __init__(
        self,
        name: str,
        image: Path | None = None,
        base: Path | None = None,
        memory_mb: int = MEMORY_MB,
        cpus: int = CPUS,
    ) -> None:
        if not name.replace("-", "_").isidentifier():
            raise PortError(f"qemu://{name}: a board name is letters, digits, '-' and '_'")
        self.name = name
        self.root = (base or qemu_dir()) / name
        self.image = image
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.disk_path = self.root / "disk.img"
        self.socket = self.root / "disk.sock"
        self.console_log = self.root / "console.log"
        self.qemu_log = self.root / "qemu.log"
        self.info: dict[str, Any] = {}
        self.profile = "qemu"
        self.serial = VIRTIO_CONSOLE
        self.proc: subprocess.Popen[bytes] | None = None
        self.disk: Any = None  # hil.cutdisk.CutDisk while started
        self.port = ""
        self.boot_s: float | None = None  # qemu start to the agent's first hello, last boot
        self._master = self._slave = -1
        self._lock = -1
        self._booted_at = 0.0

    # -- the board's flash and boot files -------------------------------------------------------

    def provision(self) -> None:
        """Give the board its flash (a copy of the image) and boot files, once."""
        if not self.disk_path.exists():
            if self.image is None:
                raise PortError(
                    f"qemu://{self.name} has no disk yet ({self.disk_path}): give it an image, "
                    f"qemu://{self.name}?image=FILE.img (`ocula image --board qemu --out FILE.img`)"
                )
            if not self.image.is_file():
                raise PortError(f"qemu://{self.name}: image {self.image}: no such file")
        if shutil.which(QEMU) is None:
            raise PortError(
                f"qemu://{self.name}: {QEMU} is not installed; "
                "apt install qemu-system-arm (or run `make qemu-test`, which installs it)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.disk_path.exists():
            assert self.image is not None
            tmp = self.disk_path.with_suffix(".img.part")
            try:
                subprocess.run(
                    ["cp", "--sparse=always", "--reflink=auto", str(self.image), str(tmp)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            except subprocess.CalledProcessError as exc:
                tmp.unlink(missing_ok=True)
                raise PortError(
                    f"qemu://{self.name}: cannot copy {self.image} to {self.root}: "
                    f"{exc.stderr.strip()}; free space there or set OCULA_QEMU_DIR"
                ) from None
            os.replace(tmp, self.disk_path)
            shutil.rmtree(self.root / "boot", ignore_errors=True)
        elif self.image is not None and self.image.stat().st_size != self.disk_path.stat().st_size:
            log.warning(
                "qemu://%s keeps its own disk %s; remove it to start again from %s",
                self.name,
                self.disk_path,
                self.image,
            )
        self._boot_files()

    def _boot_files(self) -> None:
        from arm64.errors import Arm64Error
        from arm64.image import boot_files

        try:
            files = boot_files(self.disk_path, self.root / "boot")
        except Arm64Error as exc:
            raise PortError(f"qemu://{self.name}: {self.disk_path}: {exc}") from exc
        self.kernel, self.initrd, self.cmdline = files.kernel, files.initrd, files.cmdline
        self.info = dict(files.info)
        serial = self.info.get("serial_device", UART)
        if serial not in (UART, VIRTIO_CONSOLE):
            raise PortError(
                f"qemu://{self.name}: the image was built for board "
                f"{self.info.get('profile', '?')!r}, whose agent listens on {serial}; a qemu board "
                f"serves {VIRTIO_CONSOLE} or {UART}: build the image with `ocula image --board qemu`"
            )
        self.serial = serial
        self.profile = str(self.info.get("profile", "qemu"))

    # -- power ----------------------------------------------------------------------------------

    def start(self, wait: bool = True) -> QemuBoard:
        self.provision()
        if self._lock < 0:
            self._lock = simlock.take(self.root, self.name)
        try:
            if self._master < 0:
                self._master, self._slave = os.openpty()
                tty.setraw(self._slave)
                self.port = os.ttyname(self._slave)
            if self.disk is None:
                from hil.cutdisk import CutDisk

                self.disk = CutDisk(self.disk_path, self.socket).start()
            self.boot()
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def command(self) -> list[str]:
        drive = f"file=nbd+unix:///?socket={self.socket},format=raw,if=virtio,cache=writeback"
        return [
            QEMU, "-M", "virt", *accelerator(), "-smp", str(self.cpus), "-m", str(self.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none", "-nic", "none",
            "-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.cmdline,
            "-drive", drive,
            "-add-fd", f"fd={self._master},set=1",
            "-chardev", "serial,id=agent,path=/dev/fdset/1",
            "-chardev", f"file,id=log,path={self.console_log},append=on",
            # the agent's line on its device, the kernel's log on the other
            "-serial", "chardev:log" if self.serial == VIRTIO_CONSOLE else "chardev:agent",
            "-device", "virtio-serial-device",
            "-device", f"virtconsole,chardev={'agent' if self.serial == VIRTIO_CONSOLE else 'log'}",
            "-device", "virtio-gpu-pci",
        ]  # fmt: skip

    def boot(self) -> None:
        """Power on: start qemu (the guest boots the committed slot through its ROM)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        cmd = self.command()
        with open(self.qemu_log, "ab") as log_file:
            self.proc = subprocess.Popen(
                cmd,
                pass_fds=(self._master,),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # prctl only, before exec
            )
        self._booted_at = time.monotonic()
        log.debug("qemu board %s booting (pid %d) on %s", self.name, self.proc.pid, self.port)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Seconds from power on until the agent answered `hello`; PortError (with the console's
        last lines) when qemu exits or the agent stays silent for `timeout`."""
        import serial

        from board.client import Board
        from board.errors import BoardError

        limit = (
            timeout if timeout is not None else float(os.environ.get("OCULA_QEMU_BOOT_S", BOOT_S))
        )
        deadline = time.monotonic() + limit
        # not exclusive: the host's own port may be open on the same pty (a power cycle)
        client = Board(
            lambda: serial.Serial(self.port, timeout=0.05), name=f"qemu://{self.name}", timeout=3.0
        )
        try:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise PortError(
                        f"qemu://{self.name}: qemu exited while booting; {self.qemu_log}:\n"
                        + _tail(self.qemu_log)
                    )
                try:
                    client.request("hello")
                    break
                except BoardError:
                    if time.monotonic() > deadline:
                        raise PortError(
                            f"qemu://{self.name}: no answer from the agent {limit:.0f} s after "
                            f"power on (raise OCULA_QEMU_BOOT_S on a loaded host); the console, "
                            f"{self.console_log}:\n" + _tail(self.console_log)
                        ) from None
                    time.sleep(0.5)
        finally:
            client.close()
        self.boot_s = time.monotonic() - self._booted_at
        return self.boot_s

    def _kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def power_cut(self, torn: bool = False) -> int:
        """Kill qemu wherever the guest is, then lose what it wrote and did not flush (with
        `torn`, a seeded half of it survives, sector by sector); the sectors lost."""
        self._kill()
        if self.disk is None:
            return 0
        before = self.disk.status().dropped
        return int(self.disk.cut(torn=torn).dropped - before)

    def reset(self) -> None:
        """The reset line: the guest's memory is lost, the disk's pending writes are kept."""
        self._kill()
        self.boot()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Power off: like pulling the plug, except that the disk keeps what reached it."""
        self._kill()
        if self.disk is not None:
            from hil.cutdisk import CutDiskError

            try:
                self.disk.stop()
            except CutDiskError as exc:  # stopping anyway: say it, release the rest
                log.error("qemu://%s: the disk server did not stop cleanly: %s", self.name, exc)
                self.disk.kill()
            self.disk = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if self._lock >= 0:
            simlock.release(self._lock)
            self._lock = -1

    def __enter__(self) -> QemuBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        return json.dumps({"name": self.name, "root": str(self.root), **self.info})
