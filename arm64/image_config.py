"""What makes the Debian root file system an Ocula board: the files written into its /etc.

Texts are functions of the board profile so they can be read and tested without building
anything. The rules they keep:
- the kernel and systemd speak on the virtio console (hvc0, a log file on the host), never on
  the agent's UART; no getty runs anywhere (the serial and virtual-terminal getty templates are
  masked, logind makes no autovt), so nothing but the agent ever opens the UART;
- the A/B slot store is its own ext4 file system at /var/lib/ocula, checked (e2fsck -p) and
  mounted by the initramfs, not by fstab: udev is masked (under emulation its coldplug held
  the boot for 10-14 s), and without it systemd's device units never appear, so an fstab
  line would wait for one forever. Its options: data=ordered (ext4's
  default, stated: file data reaches the disk before the metadata that points at it, so a
  renamed-over file is never seen with garbage; a missing fsync stays visible, which is what
  the power-cut tests are for), errors=remount-ro (a damaged store stops taking writes instead
  of being damaged further), nodev,nosuid (it holds data, not devices or set-uid programs; not
  noexec, as a slot's native libraries are mapped executable); a store e2fsck cannot repair
  stops the boot (the board powers off, saying why on the console) rather than letting the
  agent write into the root's empty mount point;
- the agent is a systemd service that waits for its store, restarts whenever it exits, and runs
  exactly the command a sim board runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arm64.errors import Arm64Error
from runtime.profile import Profile

ROOT_LABEL = "ocula-root"
SLOTS_LABEL = "ocula-slots"
ESP_LABEL = "OCULA-ESP"
STORE = "/var/lib/ocula"
SLOTS_OPTIONS = "rw,data=ordered,errors=remount-ro,nodev,nosuid"
# The kernel and systemd log on whichever console the agent does not serve: the virtio console
# (hvc0) when the agent has the PL011, the PL011 (ttyAMA0) when it has the virtio console.
VIRTIO_CONSOLE = "/dev/hvc0"


def cmdline(device: str) -> str:
    console = "ttyAMA0" if device == VIRTIO_CONSOLE else "hvc0"
    return f"root=LABEL={ROOT_LABEL} rw console={console} quiet"


HOSTNAME = "ocula"
# Loaded at boot by systemd-modules-load: the test camera, the ALSA loopback, the display.
LOAD_MODULES = ("vivid", "snd-aloop", "virtio-gpu")
# systemd units that cannot help a board that only runs the agent: logins (no D-Bus, no
# logind, no getty anywhere) and udev (initramfs-tools pulls it in; devtmpfs makes every node
# the agent opens, and its coldplug was a third of the boot under emulation).
MASK = (
    "systemd-logind.service",
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "getty-static.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "proc-sys-fs-binfmt_misc.automount",
)


def serial_device(profile: Profile) -> str:
    """The profile's UART as a device path, checked: the agent serves it."""
    device = profile.serial.device
    if not device.startswith("/dev/") or len(device) <= len("/dev/"):
        raise Arm64Error(
            "read the board profile",
            f"board {profile.board.name!r} has serial.device = {device!r}, not a device path; "
            "an image needs the UART the agent serves, e.g. /dev/ttyAMA0 (see board/profiles/qemu.toml)",
        )
    if profile.board.arch != "aarch64":
        raise Arm64Error(
            "read the board profile",
            f"board {profile.board.name!r} is {profile.board.arch}; this image is Debian arm64 "
            "(aarch64) only",
        )
    return device


def agent_unit(device: str) -> str:
    return f"""\
[Unit]
Description=Ocula boot ROM and agent on {device}
After=local-fs.target
RequiresMountsFor={STORE}

[Service]
Environment=PYTHONPATH=/opt/ocula:/opt/ocula/site PYTHONNOUSERSITE=1
ExecStart=/usr/bin/python3.11 -m runtime.agent.boot --store {STORE} --port {device}
Restart=always
RestartSec=1
StandardOutput=journal

[Install]
WantedBy=multi-user.target
"""


def fstab() -> str:
    return f"""\
# <file system>  <mount point>  <type>  <options>  <dump>  <pass>
LABEL={ROOT_LABEL} / ext4 rw,errors=remount-ro 0 0
# LABEL={SLOTS_LABEL} is checked and mounted at {STORE} by the initramfs ({SLOTS_OPTIONS})
"""


# `default` captures what the host plays into the loopback's playback side (hw:Loopback,0,0):
# the loopback hands it over on the capture side of its device 1. `plug` converts rate and
# channels, so the board's 16 kHz mono reads work whatever the player opened the loop with.
ASOUND_CONF = """\
pcm.!default {
    type asym
    capture.pcm "plughw:Loopback,1,0"
    playback.pcm "plughw:Loopback,0,0"
}
ctl.!default {
    type hw
    card Loopback
}
"""

LOGIND_CONF = "[Login]\nNAutoVTs=0\nReserveVT=0\n"

# Boot with `ocula.analyze` on the kernel command line to get systemd-analyze's figures and a
# probe of the camera, microphone and display on the console log once the boot has finished
# (off by default: it costs a few seconds of CPU).
ANALYZE_UNIT = """\
[Unit]
Description=Print boot figures and a device probe on the console (ocula.analyze)
ConditionKernelCommandLine=ocula.analyze
After=multi-user.target ocula-agent.service

[Service]
ExecStart=/bin/sh /usr/local/lib/ocula/analyze.sh
Environment=PYTHONPATH=/opt/ocula:/opt/ocula/site
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console

[Install]
WantedBy=multi-user.target
"""
ANALYZE_SH = """\
systemctl is-system-running --wait
systemd-analyze
systemd-analyze blame | head -25
systemd-analyze critical-chain ocula-agent.service
ls /dev/video0 /dev/fb0 /dev/snd
cat /proc/asound/cards
python3.11 - <<'EOF'
import time
from linuxpy.video.device import Device
from runtime.io.alsa import AlsaSource
mic = AlsaSource("default", 16000, 1)
frames = 0
for _ in range(50):
    frames += len(mic.read(time.monotonic()))
    time.sleep(0.01)
print("alsa default capture: read", frames, "frames through libasound; overruns", mic.overruns)
mic.close()
with Device("/dev/video0") as camera:
    print("v4l2 /dev/video0:", camera.info.card)
EOF
"""


def write_etc(stage: Path, device: str) -> None:
    """Every /etc file of the board; the services are enabled and masked by systemctl after."""
    etc = stage / "etc"
    files = {
        "hostname": f"{HOSTNAME}\n",
        "hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n",
        "fstab": fstab(),
        "asound.conf": ASOUND_CONF,
        "modules-load.d/ocula.conf": "".join(f"{m}\n" for m in LOAD_MODULES),
        "systemd/logind.conf.d/ocula.conf": LOGIND_CONF,
        "systemd/system/ocula-agent.service": agent_unit(device),
        "systemd/system/ocula-analyze.service": ANALYZE_UNIT,
        "../usr/local/lib/ocula/analyze.sh": ANALYZE_SH,
    }
    for name, text in files.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(text)
    (stage / STORE.lstrip("/")).mkdir(parents=True, exist_ok=True)


def systemctl_args(device: str) -> list[list[str]]:
    """The `systemctl --root` calls that enable the agent and keep gettys off every console."""
    tty = Path(device).name
    return [
        ["set-default", "multi-user.target"],
        ["enable", "ocula-agent.service", "ocula-analyze.service"],
        ["mask", *MASK, f"serial-getty@{tty}.service", "getty@tty1.service"],
    ]


def image_info(profile: Profile, device: str, recipe: int, sizes: dict[str, Any]) -> str:
    """ocula-image.json on the ESP: what a host needs to boot the image without opening it."""
    info = {
        "profile": profile.board.name,
        "serial_device": device,
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "cmdline": cmdline(device),
        "recipe": recipe,
        "sizes": sizes,
    }
    return json.dumps(info, indent=1, sort_keys=True) + "\n"
