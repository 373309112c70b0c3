"""The device side on aarch64, without hardware: Ocula's runtime tested under qemu user emulation.

`python -m arm64` (what `make arm64-test` runs) does, in order:
1. checks the host tools (qemu-user-static, debootstrap) and names the apt package of a missing one;
2. builds a minimal Debian bookworm arm64 root file system with python3.11 (`rootfs.py`);
3. installs the device's three dependencies as aarch64 wheels with the host's pip (`wheels.py`);
4. stages the device install: a copy of `runtime/` beside those wheels, and measures it;
5. computes the x86_64 reference on this host (`reference.py`): artifacts and generated tokens;
6. runs `device_tests/` with the root file system's python3.11 under qemu-aarch64-static.

Steps 2 and 3 are cached under `.cache/arm64/`, in folders named by a hash of their inputs. Each is
built in a temporary folder and renamed into place only when complete, so a failed download
leaves nothing that a later run would trust.
"""
