"""The disk image: a GPT with an EFI system partition, the root and the A/B slot store, made
in a plain file without loop devices or root-only mounts.

`truncate` makes the sparse file, `sfdisk` writes the partition table, and each file system is
made in place at its partition's offset: `mkfs.ext4 -d FOLDER -E offset=` copies a folder in,
`mkfs.vfat --offset` + mtools' `mcopy -i FILE@@OFFSET` fill the ESP. `boot_files` reads the
kernel, initramfs and ocula-image.json back out of the ESP the same way (mtools only).

Layout (1 MiB aligned): ESP (vmlinuz, initrd.img, ocula-image.json, systemd-boot), root
(LABEL=ocula-root, sized from its content), slots (LABEL=ocula-slots, the rest of --size).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arm64.errors import Arm64Error
from arm64.image_config import ESP_LABEL, ROOT_LABEL, SLOTS_LABEL

MIB = 1 << 20
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"  # Linux root (ARM-64)
DATA_TYPE = "0FC63DAF-8483-4772-8E79-3D69DE477DE4"  # Linux file system
MIN_SLOTS = 128 * MIB  # two slots of a small bundle, their chunks and the boot state
GPT_TAIL = MIB  # the backup GPT at the end, rounded to the alignment
# Tools that build or read the image, and the Debian package of each.
TOOLS = {
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "truncate": "coreutils",
}


@dataclass(frozen=True)
class Part:
    name: str
    type: str
    start: int  # bytes
    size: int  # bytes


@dataclass(frozen=True)
class BootFiles:
    kernel: Path
    initrd: Path
    cmdline: str
    info: dict[str, Any]


def _mib_up(n: int) -> int:
    return -(-n // MIB) * MIB


def layout(total: int, esp_content: int, root_content: int) -> list[Part]:
    """ESP, root and slots for a `total`-byte disk; an error naming the least size that fits.

    The ESP gets its content + 25 % (at least 64 MiB, where FAT's overhead stops mattering);
    root its content + 25 % + 64 MiB (journal, inode tables, room for logs); slots the rest,
    at least MIN_SLOTS."""
    esp = max(64 * MIB, _mib_up(esp_content * 5 // 4))
    root = _mib_up(root_content * 5 // 4 + 64 * MIB)
    need = MIB + esp + root + MIN_SLOTS + GPT_TAIL
    if total < need:
        raise Arm64Error(
            "lay out the disk",
            f"--size {total / MIB:.0f}M is too small: the image needs at least {need / MIB:.0f}M "
            f"(ESP {esp // MIB} MiB, root {root // MIB} MiB, slot store {MIN_SLOTS // MIB} MiB); "
            f"give --size {-(-need // (256 * MIB)) * 256}M or more",
        )
    slots = (total - GPT_TAIL - MIB - esp - root) // MIB * MIB
    return [
        Part("esp", ESP_TYPE, MIB, esp),
        Part(ROOT_LABEL, ROOT_TYPE, MIB + esp, root),
        Part(SLOTS_LABEL, DATA_TYPE, MIB + esp + root, slots),
    ]


def sfdisk_script(parts: list[Part]) -> str:
    lines = ["label: gpt"]
    for p in parts:
        lines.append(
            f"start={p.start // SECTOR}, size={p.size // SECTOR}, type={p.type}, name={p.name}"
        )
    return "\n".join(lines) + "\n"


def run(step: str, cmd: list[str], stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=False, timeout=600
        )
    except FileNotFoundError as e:
        package = TOOLS.get(cmd[0], "?")
        raise Arm64Error(step, f"{cmd[0]} is not installed (apt-get install {package})") from e
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise Arm64Error(step, f"{cmd[0]} exited {done.returncode}: {' '.join(why)}")
    return done.stdout


def make(
    out: Path, parts: list[Part], esp_files: dict[str, Path], stage: Path, store: Path, inodes: int
) -> None:
    """Write the disk image `out` (replaced): the table, the ESP with `esp_files` (name on the
    ESP -> host file), the root file system from the folder `stage` and the slot store from
    the folder `store`."""
    esp, root, slots = parts
    out.unlink(missing_ok=True)
    run(
        "make the disk file", ["truncate", "-s", str(slots.start + slots.size + GPT_TAIL), str(out)]
    )
    run("write the partition table", ["sfdisk", "-q", str(out)], sfdisk_script(parts))
    run(
        "make the EFI system partition",
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            ESP_LABEL,
            f"--offset={esp.start // SECTOR}",
            str(out),
            str(esp.size // 1024),
        ],
    )
    image = f"{out}@@{esp.start}"
    folders: set[str] = set()
    for name in esp_files:
        folders.update(str(p) for p in Path(name).parents if str(p) != ".")
    for folder in sorted(folders, key=len):
        run("fill the EFI system partition", ["mmd", "-i", image, f"::/{folder}"])
    for name, src in esp_files.items():
        run("fill the EFI system partition", ["mcopy", "-o", "-i", image, str(src), f"::/{name}"])
    _mkfs_ext4(out, root, stage, inodes)
    _mkfs_ext4(out, slots, store, None)


def _mkfs_ext4(out: Path, part: Part, folder: Path, inodes: int | None) -> None:
    cmd = ["mkfs.ext4", "-q", "-F", "-L", part.name, "-m", "1", "-E", f"offset={part.start}"]
    if inodes:
        cmd += ["-N", str(inodes)]
    cmd += ["-d", str(folder), str(out), f"{part.size // 1024}k"]
    run(f"make the {part.name} file system", cmd)


def read_table(image: Path) -> list[dict[str, Any]]:
    text = run("read the partition table", ["sfdisk", "--json", str(image)])
    return list(json.loads(text)["partitiontable"]["partitions"])


def boot_files(image: Path, dest: Path) -> BootFiles:
    """Copy vmlinuz, initrd.img and ocula-image.json out of the image's ESP into `dest`."""
    step = f"read the boot files of {image}"
    if not image.is_file():
        raise Arm64Error(step, "no such image; make one with 'ocula image'")
    for tool in ("sfdisk", "mcopy"):
        if shutil.which(tool) is None:
            raise Arm64Error(step, f"{tool} is not installed (apt-get install {TOOLS[tool]})")
    table = read_table(image)
    esp = [p for p in table if p.get("type", "").upper() == ESP_TYPE]
    if not esp:
        raise Arm64Error(step, "the image has no EFI system partition; is it an 'ocula image'?")
    start = int(esp[0]["start"]) * SECTOR
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd.img", "ocula-image.json"):
        run(step, ["mcopy", "-o", "-n", "-i", f"{image}@@{start}", f"::/{name}", str(dest / name)])
    info = json.loads((dest / "ocula-image.json").read_text())
    return BootFiles(dest / "vmlinuz", dest / "initrd.img", str(info["cmdline"]), info)
