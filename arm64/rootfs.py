"""A minimal Debian bookworm arm64 root file system with python3.11, built on an x86_64 host.

How it works, without binfmt_misc or a chroot: `debootstrap --foreign --variant=minbase` downloads
and verifies (against the host's Debian archive keyring) every package of the system and unpacks
the essential ones; python3.11 and its libraries, which the second stage would install inside a
chroot, are unpacked on the host with `dpkg-deb` instead (their maintainer scripts are not needed
to run Python). Nothing is configured; the result is only ever run with `qemu-aarch64-static -L`.

qemu-user looks every path up under the `-L` prefix first, so two empty files at
`sys/devices/system/cpu/{possible,present}` hide the host's x86 CPU lists: the cpuinfo library
inside onnxruntime otherwise crashes (SIGSEGV on import) under qemu 7.2 while parsing them, and
with empty lists it falls back cleanly.

The mirror comes from this machine's apt configuration (`/etc/apt/sources.list` and
`sources.list.d/*.list|*.sources`), or from `OCULA_DEBIAN_MIRROR`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from arm64.errors import Arm64Error

log = logging.getLogger(__name__)

SUITE = "bookworm"
PYTHON = "usr/bin/python3.11"
PACKAGES = ("python3.11",)
# Bumped when the way the root file system is made changes, so cached copies are rebuilt.
RECIPE = 1
CPU_LISTS = ("sys/devices/system/cpu/possible", "sys/devices/system/cpu/present")
APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class Source:
    """One `deb` line of the apt configuration."""

    uri: str
    suites: tuple[str, ...]
    where: str


def apt_sources(apt_dir: Path = APT_DIR) -> list[Source]:
    """The binary (`deb`) sources apt uses, in apt's order: sources.list, then sources.list.d."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    found: list[Source] = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        parse = _parse_deb822 if path.suffix == ".sources" else _parse_one_line
        found += parse(text, str(path))
    return found


def _parse_one_line(text: str, where: str) -> list[Source]:
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^]]*\]", " ", line)  # options such as [arch=amd64 signed-by=...]
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "deb":
            found.append(Source(fields[1], (fields[2],), where))
    return found


def _parse_deb822(text: str, where: str) -> list[Source]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        found += [Source(uri, suites, where) for uri in fields.get("uris", "").split()]
    return found


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The host's Debian mirror for the main archive (not -security, not -updates)."""
    override = os.environ.get("OCULA_DEBIAN_MIRROR")
    if override:
        return override
    sources = [s for s in apt_sources(apt_dir) if re.match(r"(https?|ftp|file):", s.uri)]
    main = [s for s in sources if any(re.fullmatch(r"[a-z]+", suite) for suite in s.suites)]
    for source in main:
        if SUITE in source.suites:
            return source.uri
    for source in main:
        if not source.uri.rstrip("/").endswith("-security"):
            return source.uri
    raise Arm64Error(
        "find the Debian mirror",
        f"no Debian archive in {apt_dir}/sources.list or {apt_dir}/sources.list.d/*.list|*.sources; "
        "add one there or set OCULA_DEBIAN_MIRROR=http://your.mirror/debian",
    )


def build(target: Path, mirror: str) -> None:
    """Make the root file system in the empty folder `target`."""
    step = "debootstrap the arm64 root file system"
    if os.geteuid() != 0:
        raise Arm64Error(
            step, "debootstrap needs root (it sets file owners); run as root or with sudo"
        )
    cmd = [
        "debootstrap", "--foreign", "--variant=minbase", "--arch=arm64",
        f"--include={','.join(PACKAGES)}", SUITE, str(target), mirror,
    ]  # fmt: skip
    log.info("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    except subprocess.TimeoutExpired as e:
        raise Arm64Error(step, f"debootstrap from {mirror} gave no result in 900 s") from e
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        logfile = target / "debootstrap" / "debootstrap.log"
        if logfile.is_file():
            lines += logfile.read_text(errors="replace").splitlines()[-4:]
        errors = [x for x in lines if x.startswith("E:")] or lines[-6:]
        why = "\n".join(dict.fromkeys(x.strip() for x in errors + lines[-2:]))
        raise Arm64Error(
            step,
            f"debootstrap from {mirror} exited {done.returncode}:\n{why}\n"
            "(the mirror comes from /etc/apt/sources.list*; OCULA_DEBIAN_MIRROR=URL picks another)",
        )
    unpack_base(target)
    for name in CPU_LISTS:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(b"")
    shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)
    if not (target / PYTHON).is_file():
        raise Arm64Error(step, f"the root file system has no /{PYTHON} after unpacking")


def unpack_base(target: Path) -> None:
    """Unpack what debootstrap's second stage would install (python3.11 and its libraries).

    Unpacked with `tar --keep-directory-symlink`, so a package that ships files under /lib keeps
    the merged-/usr symlink lib -> usr/lib instead of replacing it with a folder.
    """
    step = "unpack python3.11 into the root file system"
    meta = target / "debootstrap"
    try:
        base = (meta / "base").read_text().split()
        debpaths = dict(
            line.split(maxsplit=1) for line in (meta / "debpaths").read_text().splitlines() if line
        )
    except OSError as e:
        raise Arm64Error(step, f"debootstrap left no package list in {meta} ({e})") from e
    for package in base:
        if package not in debpaths:
            raise Arm64Error(step, f"debootstrap did not download {package}")
        deb = target / debpaths[package].lstrip("/")
        fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        untar = subprocess.run(
            ["tar", "-x", "--keep-directory-symlink", "-C", str(target)],
            stdin=fsys.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        if fsys.stdout is not None:
            fsys.stdout.close()
        if fsys.wait() != 0 or untar.returncode != 0:
            raise Arm64Error(step, f"could not unpack {deb.name}: {untar.stderr.strip()}")
