"""The device's dependencies as aarch64 wheels, installed by the host's pip into a folder.

The versions are the host's own (read from its installed distributions), so the device runs the
same numpy, onnxruntime and tokenizers that the x86_64 reference ran. Only these three are
installed (`--no-deps`): their other requirements (huggingface_hub for tokenizers' hub download,
protobuf/flatbuffers for onnxruntime's tools, ...) are not needed to run models from files, and
the device subset proves it by importing every runtime module without them.

The accepted platform tags are every manylinux_2_x up to the root file system's glibc, as pip
itself would accept on an aarch64 bookworm machine.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
import sys
from pathlib import Path

from arm64.errors import Arm64Error

log = logging.getLogger(__name__)

DEVICE_DEPENDENCIES = ("numpy", "onnxruntime", "tokenizers")
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36  # Debian bookworm's glibc 2.36


def pins() -> list[str]:
    """`name==version` of each device dependency, as installed on this host."""
    found = []
    for name in DEVICE_DEPENDENCIES:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError as e:
            raise Arm64Error(
                "read the host's dependency versions",
                f"{name} is not installed in {sys.prefix}; run `make install`",
            ) from e
    return found


def platforms() -> list[str]:
    tags = [f"manylinux_2_{minor}_aarch64" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, "manylinux2014_aarch64"]


def install(target: Path, requirements: list[str]) -> None:
    """pip-install the aarch64 wheels of `requirements` into the folder `target`."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:"]
    for tag in platforms():
        cmd += ["--platform", tag]
    cmd += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
    cmd += ["--target", str(target), *requirements]
    log.info("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    except subprocess.TimeoutExpired as e:
        raise Arm64Error("download the aarch64 wheels", "pip gave no result in 900 s") from e
    if done.returncode != 0:
        lines = [x for x in (done.stdout + done.stderr).splitlines() if "WARNING" not in x]
        raise Arm64Error(
            "download the aarch64 wheels",
            f"pip exited {done.returncode} for {' '.join(requirements)}:\n" + "\n".join(lines[-8:]),
        )
