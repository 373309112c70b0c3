"""The command line under careless use: a matrix of bad invocations over every command.

Every row is an argv that must fail as the README promises: one `ocula: error:` line (and
nothing else on stderr), the documented exit code (1 a failure, 2 a usage error, 130 interrupted), no
traceback, and nothing left behind: the world folder the rows point into and the sim boards'
folder are the same, file by file, before and after. The rows cover missing, empty, wrong-type,
truncated, read-only, existing, absurd and non-UTF-8 arguments of every command; most run
`ocula.cli.main(argv)` in this process, and a sample runs the real `ocula` command (bytes that
are not UTF-8 in argv, SIGINT and SIGTERM while a flash waits on a silent line, a disk that
fills while a bundle is written). A few rows start simulated boards (in a tmp OCULA_SIM_DIR).

The read-only folder is a tmpfs remounted read-only, since chmod does not stop root: these
tests need root (or a user namespace where mount works) and say so otherwise.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from board import bundle, keys, profiles
from ocula import cli
from tests.conftest import BIN

NO_UTF8 = "\udcff\udcfe"  # what Python makes of the bytes 0xff 0xfe in argv


def _mount(args: list[str]) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(
            f"mount {' '.join(args)} failed ({r.stderr.strip()}): the read-only and full-disk "
            "rows need root to mount a tmpfs; run the tests as root (or in a container that "
            "allows mount)"
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Files the rows point at: good, empty, truncated, garbage, read-only."""
    w = tmp_path_factory.mktemp("world")
    (w / "file.txt").write_text("x\n")
    (w / "empty").write_bytes(b"")
    (w / "dir").mkdir()
    (w / "garbage.bin").write_bytes(bytes((i * 131 + 7) % 256 for i in range(4096)))
    (w / "bad.toml").write_text("[board]\nname = 1\n")
    (w / "trunc.toml").write_text(profiles.path_of("sim").read_text()[:150])
    (w / "art_trunc").mkdir()
    (w / "art_trunc" / "manifest.json").write_text('{"schema_version": 1, "kind": "ll')
    (w / "notwav.wav").write_text("not audio")
    (w / "trunc.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    priv, _ = keys.generate(w / "keys" / "dev")
    (w / "trunc.key").write_bytes(priv.read_bytes()[:40])
    (w / "pubdir").mkdir()
    (w / "pubdir" / "k.pub").mkdir()
    bundle.build(profiles.find("sim"), w / "good.bundle", {})
    data = (w / "good.bundle").read_bytes()
    (w / "trunc.bundle").write_bytes(data[: len(data) // 2])
    ro = w / "ro"
    ro.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro)])
    try:
        (ro / "file.txt").write_text("x\n")
        (ro / "dir").mkdir()
        _mount(["-o", "remount,ro", str(ro)])
        yield w
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("sim")
    mp = pytest.MonkeyPatch()
    mp.setenv("OCULA_SIM_DIR", str(d))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield d
    mp.undo()


def snapshot(*roots: Path) -> dict[str, tuple[str, int, int]]:
    """Every path under the roots with its kind, size and modification time."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st = p.lstat()
                kind = "d" if p.is_dir() else "f"
                seen[str(p)] = (kind, 0 if kind == "d" else st.st_size, st.st_mtime_ns)
    return seen


def children() -> set[int]:
    """Our live child processes (a sim board left running would show here)."""
    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
    return {p for p in pids if Path(f"/proc/{p}").exists() and _state(p) != "Z"}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def check_error(code: int, err: str, out: str, want: int) -> str:
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = err.rstrip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocula: error: "), err
    assert code == want, (code, err)
    return lines[0]


# -- the matrix ----------------------------------------------------------------------------
# (exit code, argv); "{W}" is the world folder. Grouped by command.

OUT = "{W}/new/out"  # a folder that does not exist: a failed command must not leave it

TOP = [
    (2, []),
    (2, ["frobnicate"]),
    (2, ["--bogus"]),
    (2, ["-v"]),
    (2, [NO_UTF8]),
    (2, [""]),
]

BOARD = [
    (2, ["board"]),
    (2, ["board", "frob"]),
    (2, ["board", "list", "--bogus"]),
    (2, ["board", "show"]),
    (1, ["board", "show", "nope"]),
    (1, ["board", "show", ""]),
    (1, ["board", "show", NO_UTF8]),
    (1, ["board", "show", "{W}/dir"]),
    (1, ["board", "show", "{W}/dir/"]),
    (1, ["board", "show", "{W}/file.txt"]),
    (1, ["board", "show", "{W}/bad.toml"]),
    (1, ["board", "show", "{W}/trunc.toml"]),
    (1, ["board", "show", "{W}/empty.toml"]),
    (1, ["board", "show", "{W}/nofile.toml"]),
    (1, ["board", "show", "{W}/garbage.bin"]),
    (2, ["board", "sim", "--key", "{W}/dir"]),
    (2, ["board", "sim", "--key", "{W}/nokey"]),
    (2, ["board", "sim", "--key", ""]),
    (1, ["board", "sim", "--name", "x1", "--key", "{W}/empty"]),
    (1, ["board", "sim", "--name", "x1", "--key", "{W}/garbage.bin"]),
    (1, ["board", "sim", "--name", "x1", "--key", "{W}/trunc.key"]),
    (2, ["board", "sim", "--name", "a/b"]),
    (2, ["board", "sim", "--name", ""]),
    (2, ["board", "sim", "--name", "a\nb"]),
    (2, ["board", "sim", "--name", "x" * 65]),
    (1, ["board", "sim", "--name", "x1", "--profile", "nope"]),
    (1, ["board", "sim", "--name", "x1", "--profile", "{W}/bad.toml"]),
    (1, ["board", "sim", "--profile", "{W}/dir/"]),
]

_B = ["bundle", "--board", "sim"]
BUNDLE = [
    (2, ["bundle"]),
    (2, ["bundle", "--board", "sim"]),
    (2, ["bundle", "--out", OUT]),
    (2, [*_B, "--out", ""]),
    (2, [*_B, "--out", "{W}/dir"]),
    (2, [*_B, "--out", "{W}/ro/o.bundle"]),
    (2, [*_B, "--out", "{W}/ro/file.txt"]),
    (2, [*_B, "--out", "{W}/ro/new/o.bundle"]),
    (2, [*_B, "--out", "{W}/file.txt/o.bundle"]),
    (2, [*_B, "--out", "{W}/a\nb.bundle"]),
    (2, [*_B, "--out", "{W}/a\tb.bundle"]),
    (2, [*_B, "--out", "{W}/a\x00b"]),
    (2, [*_B, "--out", OUT, "--key", "{W}/dir"]),
    (2, [*_B, "--out", OUT, "--key", "{W}/nokey"]),
    (2, [*_B, "--out", OUT, "--key", ""]),
    (1, [*_B, "--out", OUT, "--key", "{W}/trunc.key", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--key", "{W}/keys/dev.pub", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--key", "{W}/garbage.bin", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--key", "{W}/empty", "--no-glyphs"]),
    (2, [*_B, "--out", OUT, "--glyphs", "{W}/dir"]),
    (2, [*_B, "--out", OUT, "--glyphs", "{W}/nofile.npz"]),
    (1, [*_B, "--out", OUT, "--glyphs", "{W}/file.txt"]),
    (1, [*_B, "--out", OUT, "--glyphs", "{W}/empty"]),
    (1, [*_B, "--out", OUT, "--glyphs", "{W}/garbage.bin"]),
    (2, [*_B, "--out", OUT, "--glyphs", "{W}/empty", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--vad", "{W}/dir", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--vad", "{W}/file.txt", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--llm", "{W}/nodir", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--asr", "{W}/art_trunc", "--no-glyphs"]),
    (1, [*_B, "--out", OUT, "--vision", "", "--no-glyphs"]),
    (1, ["bundle", "--board", "nope", "--out", OUT, "--no-glyphs"]),
    (1, ["bundle", "--board", "{W}/bad.toml", "--out", OUT, "--no-glyphs"]),
    (1, ["bundle", "--board", "", "--out", OUT, "--no-glyphs"]),
    (2, [*_B, "--out", OUT, "--version", NO_UTF8]),
    (2, [*_B, "--out", OUT, "--version", ""]),
    (2, [*_B, "--out", OUT, "--version", "a\nb"]),
]

DEMO = [
    (2, ["demo", "--out", "{W}/file.txt"]),
    (2, ["demo", "--out", "{W}/ro/x"]),
    (2, ["demo", "--out", "{W}/ro"]),
    (2, ["demo", "--out", ""]),
    (2, ["demo", "--out", "{W}/a\nb"]),
    (2, ["demo", "--bogus"]),
]

_L = ["export", "llm", "{W}/dir", "--out", OUT]
EXPORT = [
    (2, ["export"]),
    (2, ["export", "frob"]),
    (2, ["export", "random"]),
    (2, ["export", "random", "--preset", "nope", "--out", OUT]),
    (2, ["export", "random", "--preset", "tiny-qwen2"]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", "{W}/file.txt"]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", "{W}/ro/m"]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", ""]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", OUT, "--seed", "-1"]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", OUT, "--seed", "1e3"]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", OUT, "--seed", "99999999999"]),
    (2, ["export", "random", "--preset", "tiny-qwen2", "--out", OUT, "--seed", "abc"]),
    (2, ["export", "llm"]),
    (2, ["export", "llm", "{W}/dir"]),
    (1, ["export", "llm", "{W}/nodir", "--out", OUT]),
    (1, _L),
    (1, ["export", "llm", "{W}/file.txt", "--out", OUT]),
    (1, ["export", "llm", "{W}/empty", "--out", OUT]),
    (1, ["export", "llm", "{W}/garbage.bin", "--out", OUT]),
    (2, [*_L, "--max-length", "0"]),
    (2, [*_L, "--max-length", "4"]),
    (2, [*_L, "--max-length", "1e12"]),
    (2, [*_L, "--max-length", "1000000000000"]),
    (2, [*_L, "--max-length", "-5"]),
    (2, [*_L, "--max-length", "abc"]),
    (2, [*_L, "--block-size", "0"]),
    (2, [*_L, "--block-size", "7"]),
    (2, [*_L, "--accuracy-level", "9"]),
    (2, [*_L, "--embed-bits", "99"]),
    (2, [*_L, "--quant", "int3"]),
    (2, [*_L, "--graph", "magic"]),
    (2, ["export", "llm", "{W}/dir", "--out", "{W}/ro/o"]),
    (2, ["export", "llm", "{W}/dir", "--out", "{W}/file.txt"]),
    (2, ["export", "llm", NO_UTF8, "--out", OUT]),
    (1, ["export", "asr", "{W}/dir", "--out", OUT]),
    (1, ["export", "asr", "{W}/nodir", "--out", OUT]),
    (2, ["export", "asr", "{W}/dir", "--out", OUT, "--quant", "int4"]),
    (2, ["export", "asr", "{W}/dir", "--out", OUT, "--head", "bogus"]),
    (2, ["export", "asr", "{W}/dir", "--out", "{W}/ro/a"]),
    (2, ["export", "vad"]),
    (2, ["export", "vad", "--out", "{W}/file.txt"]),
    (2, ["export", "vad", "--out", "{W}/ro/v"]),
    (2, ["export", "vad", "--out", ""]),
    (2, ["export", "vision", "--out", "{W}/ro/v"]),
    (2, ["export", "vision", "--out", "{W}/a\tb"]),
]

_F = ["fixture", "deploy", "--port"]
FIXTURE = [
    (2, ["fixture"]),
    (2, ["fixture", "deploy"]),
    (2, [*_F, "foo://x"]),
    (2, [*_F, ""]),
    (2, [*_F, "{W}/dir"]),
    (2, [*_F, "{W}/file.txt"]),
    (1, [*_F, "{W}/nodev"]),
    (2, [*_F, "{W}/nodev", "--build", "{W}/file.txt"]),
    (2, [*_F, "{W}/nodev", "--build", "{W}/ro/b"]),
    (2, [*_F, "rfc2217://host"]),
    (2, [*_F, "rfc2217://host:99999"]),
    (2, [*_F, "sim://a b"]),
]

_FL = ["flash", "{W}/good.bundle", "--port"]
FLASH = [
    (2, ["flash"]),
    (2, ["flash", "{W}/good.bundle"]),
    (2, [*_FL, ""]),
    (2, [*_FL, "foo://x"]),
    (2, [*_FL, "{W}/dir"]),
    (2, [*_FL, "{W}/file.txt"]),
    (2, [*_FL, "sim://x?profile=nope"]),
    (2, [*_FL, "sim://x?profile={W}/bad.toml"]),
    (2, [*_FL, "sim://x?profile={W}/trunc.toml"]),
    (2, [*_FL, "sim://x?key={W}/nokey"]),
    (2, [*_FL, "sim://x?key={W}/garbage.bin"]),
    (2, [*_FL, "sim://x?key={W}/dir"]),
    (2, [*_FL, "sim://x?bogus=1"]),
    (2, [*_FL, "sim://x?profile"]),
    (2, [*_FL, "sim://"]),
    (2, [*_FL, "sim://a/b"]),
    (2, [*_FL, "sim://a.b"]),
    (2, [*_FL, "sim://x?dir={W}/file.txt"]),
    (2, [*_FL, "sim://x\n"]),
    (2, [*_FL, "rfc2217://:80"]),
    (2, [*_FL, "socket://h:0"]),
    (2, [*_FL, NO_UTF8 + "://x"]),
    (2, [*_FL, "sim://x", "--baud", "0"]),
    (2, [*_FL, "sim://x", "--baud", "abc"]),
    (2, [*_FL, "sim://x", "--baud", "1e9"]),
    (2, [*_FL, "sim://x", "--deadline", "-1"]),
    (2, [*_FL, "sim://x", "--deadline", "0"]),
    (2, [*_FL, "sim://x", "--deadline", "99999999"]),
    (1, ["flash", "{W}/nofile", "--port", "sim://x"]),
    (1, ["flash", "{W}/dir", "--port", "sim://x"]),
    (1, ["flash", "{W}/file.txt", "--port", "sim://x"]),
    (1, ["flash", "{W}/trunc.bundle", "--port", "sim://x"]),
    (1, ["flash", "{W}/empty", "--port", "sim://x"]),
    (1, ["flash", "{W}/garbage.bin", "--port", "sim://x"]),
    (1, ["flash", "", "--port", "sim://x"]),
    (1, ["flash", NO_UTF8, "--port", "sim://x"]),
    (1, [*_FL, "{W}/nodev"]),
    (1, ["flash", "{W}/good.bundle\n", "--port", "sim://x"]),
    (2, [*_FL, "labgrid://"]),
]

_G = ["generate", "{W}/dir", "--prompt", "hi"]
GENERATE = [
    (2, ["generate"]),
    (2, ["generate", "{W}/dir"]),
    (2, ["generate", "{W}/dir", "--prompt", NO_UTF8]),
    (2, ["generate", "{W}/dir", "--prompt", "caf\udce9"]),
    (2, [*_G, "--max-new-tokens", "0"]),
    (2, [*_G, "--max-new-tokens", "-1"]),
    (2, [*_G, "--max-new-tokens", "1e9"]),
    (2, [*_G, "--max-new-tokens", "99999999999"]),
    (2, [*_G, "--temperature", "-1"]),
    (2, [*_G, "--temperature", "nan"]),
    (2, [*_G, "--temperature", "inf"]),
    (2, [*_G, "--top-k", "-1"]),
    (2, [*_G, "--top-p", "0"]),
    (2, [*_G, "--top-p", "2"]),
    (2, [*_G, "--top-p", "nan"]),
    (2, [*_G, "--repetition-penalty", "0"]),
    (2, [*_G, "--time-budget", "0"]),
    (2, [*_G, "--time-budget", "-1"]),
    (2, [*_G, "--threads", "0"]),
    (2, [*_G, "--threads", "99999"]),
    (2, [*_G, "--seed", "-1"]),
    (2, [*_G, "--stop", NO_UTF8]),
    (2, [*_G, "--system", "x"]),
    (2, [*_G, "--draft", "x"]),
    (2, [*_G, "--draft", NO_UTF8, "--lookup"]),
    (1, ["generate", "{W}/nodir", "--prompt", "x"]),
    (1, ["generate", "{W}/file.txt", "--prompt", "x"]),
    (1, ["generate", "{W}/art_trunc", "--prompt", "x"]),
    (1, ["generate", "", "--prompt", "x"]),
    (1, ["generate", "{W}/dir", "--prompt", "x"]),
]

_H = ["hil", "--port", "sim://x"]
HIL = [
    (2, ["hil"]),
    (2, ["hil", "--port", "foo://x"]),
    (2, ["hil", "--port", ""]),
    (2, ["hil", "--port", "{W}/dir"]),
    (2, ["hil", "--port", "labgrid://"]),
    (2, ["hil", "--port", "sim://x?profile=nope"]),
    (2, ["hil", "--port", "sim://x?profile={W}/bad.toml"]),
    (2, ["hil", "--inventory", "{W}/nofile"]),
    (2, ["hil", "--inventory", "{W}/dir"]),
    (2, [*_H, "--bundle", "{W}/nofile"]),
    (2, [*_H, "--bundle", "{W}/dir"]),
    (2, [*_H, "--report", "{W}/file.txt"]),
    (2, [*_H, "--report", "{W}/ro/r"]),
    (2, [*_H, "--soak-minutes", "-1"]),
    (2, [*_H, "--soak-minutes", "0"]),
    (2, [*_H, "--soak-minutes", "nan"]),
    (2, [*_H, "--retries", "-1"]),
    (2, [*_H, "--retries", "1000"]),
    (2, [*_H, "--key", "{W}/dir"]),
    (2, [*_H, "--fixture-port", "foo://x"]),
]

INSPECT = [
    (2, ["inspect"]),
    (1, ["inspect", "{W}/nodir"]),
    (1, ["inspect", "{W}/file.txt"]),
    (1, ["inspect", "{W}/dir"]),
    (1, ["inspect", "{W}/art_trunc"]),
    (1, ["inspect", "{W}/ro"]),
    (1, ["inspect", ""]),
    (1, ["inspect", NO_UTF8]),
    (1, ["inspect", "{W}/a\nb"]),
    (1, ["inspect", "{W}/dir\n"]),
]

KEYGEN = [
    (2, ["keygen"]),
    (2, ["keygen", ""]),
    (2, ["keygen", "{W}/dir"]),
    (2, ["keygen", "{W}/ro/k"]),
    (2, ["keygen", "{W}/ro/file.txt", "--force"]),
    (2, ["keygen", "{W}/file.txt/k"]),
    (2, ["keygen", "{W}/a\nb"]),
    (2, ["keygen", "{W}/pubdir/k"]),
    (1, ["keygen", "{W}/file.txt"]),
    (1, ["keygen", "{W}/keys/dev"]),
]

_P = ["profile", "--port", "sim://x", "--app", "requests", "--out"]
PROFILE = [
    (2, ["profile"]),
    (2, ["profile", "--port", "sim://x", "--app", "requests"]),
    (2, [*_P, "{W}/file.txt"]),
    (2, [*_P, "{W}/ro/p"]),
    (2, [*_P, ""]),
    (2, [*_P, "{W}/a\nb"]),
    (2, [*_P, OUT, "--seconds", "-1"]),
    (2, [*_P, OUT, "--seconds", "0"]),
    (2, [*_P, OUT, "--seconds", "nan"]),
    (2, [*_P, OUT, "--seconds", "inf"]),
    (2, [*_P, OUT, "--seconds", "1e9"]),
    (2, [*_P, OUT, "--seconds", "abc"]),
    (2, [*_P, OUT, "--rate", "0"]),
    (2, [*_P, OUT, "--rate", "-5"]),
    (2, [*_P, OUT, "--rate", "1e12"]),
    (2, [*_P, OUT, "--fixture-port", "foo://x"]),
    (2, ["profile", "--port", "foo://x", "--app", "requests", "--out", OUT]),
    (2, ["profile", "--port", "sim://x?profile={W}/bad.toml", "--app", "requests", "--out", OUT]),
    (2, ["profile", "--port", "sim://x", "--app", "", "--out", OUT]),
    (2, ["profile", "--port", "sim://x", "--app", NO_UTF8, "--out", OUT]),
]

_R = ["run", "look", "--port", "local"]
_RC = ["run", "captions", "--port", "local", "--models", "{W}/dir", "--audio"]
RUN = [
    (2, ["run"]),
    (2, ["run", "look"]),
    (2, ["run", "bogus", "--port", "local"]),
    (2, ["run", "look", "--port", ""]),
    (2, ["run", "look", "--port", "foo://x"]),
    (2, ["run", "look", "--port", "{W}/dir"]),
    (2, [*_R, "--duration", "-1"]),
    (2, [*_R, "--duration", "0"]),
    (2, [*_R, "--duration", "nan"]),
    (2, [*_R, "--duration", "inf"]),
    (2, [*_R, "--duration", "1e12"]),
    (2, [*_R, "--max-tokens", "0"]),
    (2, [*_R, "--max-tokens", "5000"]),
    (2, [*_R, "--max-tokens", "abc"]),
    (2, [*_R, "--trace", "{W}/dir"]),
    (2, [*_R, "--trace", "{W}/ro/t.json"]),
    (2, [*_R, "--trace", ""]),
    (2, [*_R, "--question", NO_UTF8]),
    (2, [*_R, "--source-lang", NO_UTF8]),
    (2, [*_R, "--target-lang", ""]),
    (1, [*_R, "--models", "{W}/dir", "--camera", "pattern"]),
    (1, ["run", "captions", "--port", "local", "--models", "{W}/dir", "--audio", "{W}/notwav.wav"]),
    (1, [*_RC, "{W}/trunc.wav"]),
    (1, [*_RC, "{W}/empty"]),
    (1, [*_RC, "{W}/garbage.bin"]),
    (1, [*_RC, "{W}/dir"]),
    (1, [*_RC, "{W}/nofile.wav"]),
    (1, ["run", "look", "--port", "{W}/nodev", "--duration", "1"]),
    (2, ["run", "look", "--port", "{W}/nodev", "--models", "{W}/dir"]),
    (2, ["run", "look", "--port", "sim://x", "--virtual"]),
]

_T = ["transcribe", "{W}/dir", "{W}/notwav.wav"]
TRANSCRIBE = [
    (2, ["transcribe"]),
    (2, ["transcribe", "{W}/dir"]),
    (1, _T),
    (1, ["transcribe", "{W}/nodir", "{W}/notwav.wav"]),
    (1, ["transcribe", "{W}/file.txt", "{W}/notwav.wav"]),
    (2, [*_T, "--max-new-tokens", "0"]),
    (2, [*_T, "--threads", "0"]),
    (2, [*_T, "--task", "bogus"]),
    (2, [*_T, "--language", NO_UTF8]),
    (2, [*_T, "--language", ""]),
]

ROWS = (
    TOP + BOARD + BUNDLE + DEMO + EXPORT + FIXTURE + FLASH + GENERATE + HIL + INSPECT + KEYGEN
    + PROFILE + RUN + TRANSCRIBE
)  # fmt: skip


def _id(row: tuple[int, list[str]]) -> str:
    return " ".join(a.replace("{W}/", "") for a in row[1]).encode("unicode_escape").decode()[:80]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_bad_invocation(
    row: tuple[int, list[str]],
    world: Path,
    sim_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    want, template = row
    argv = [a.replace("{W}", str(world)) for a in template]
    monkeypatch.chdir(world / "dir")
    before, kids = snapshot(world, sim_dir), children()
    code, out, err = run_main(argv, capsys)
    check_error(code, err, out, want)
    assert snapshot(world, sim_dir) == before, "the command left something behind"
    assert children() <= kids, "a child process outlived the command"


def test_the_matrix_is_large_and_covers_every_command() -> None:
    commands = {r[1][0] for r in ROWS if r[1] and not r[1][0].startswith("-")}
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) <= commands  # type: ignore[attr-defined]
    assert len(ROWS) >= 200


# -- rows that start a simulated board ---------------------------------------------------------


@pytest.mark.parametrize(
    ("want", "argv", "says"),
    [
        (1, ["flash", "{W}/good.bundle", "--port", "sim://keyed?key={W}/keys/dev.pub"], "sign"),
        (1, ["run", "look", "--port", "sim://runner", "--duration", "2"], "vision"),
    ],
    ids=["unsigned bundle to a board with a key", "app without its model"],
)
def test_bad_invocation_against_a_sim_board(
    want: int,
    argv: list[str],
    says: str,
    world: Path,
    sim_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.replace("{W}", str(world)) for a in argv]
    before, kids = snapshot(world), children()
    code, out, err = run_main(argv, capsys)
    assert says in check_error(code, err, out, want)
    assert snapshot(world) == before
    assert children() <= kids, "the sim board outlived the command"


# -- real subprocesses: argv bytes, signals, a full disk -----------------------------------------


def ocula_proc(*args: str | bytes, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "ocula"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("want", "argv"),
    [
        (2, [b"generate", b"{W}/dir", b"--prompt", b"caf\xe9"]),
        (2, [b"bundle", b"--board", b"sim", b"--out", b"{W}/o.bundle", b"--version", b"\xff"]),
        (1, [b"inspect", b"{W}/\xff\xfe"]),
        (2, [b"hil", b"--port", b"foo://x"]),
        (2, [b"bundle", b"--board", b"sim", b"--out", b"{W}/ro/o.bundle"]),
        (2, [b"keygen", b"{W}/a\nb"]),
        (2, [b"profile", b"--port", b"sim://x", b"--app", b"requests", b"--out", b"p", b"--seconds", b"-1"]),
    ],
    ids=["latin-1 prompt", "latin-1 version", "undecodable path", "unknown port scheme", "read-only out", "newline in key path", "negative seconds"],
)  # fmt: skip
def test_real_command(want: int, argv: list[bytes], world: Path, sim_dir: Path) -> None:
    w = os.fsencode(world)
    before = snapshot(world, sim_dir)
    proc = ocula_proc(*[a.replace(b"{W}", w) for a in argv])
    out, err = proc.communicate(timeout=120)
    check_error(proc.returncode, err.decode("utf-8", "replace"), out.decode(), want)
    assert snapshot(world, sim_dir) == before


def _wait_readable(fd: int, seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            return os.read(fd, 4096)
    pytest.fail(f"nothing arrived within {seconds} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_while_a_flash_waits_on_a_silent_line(
    sig: signal.Signals, world: Path, sim_dir: Path
) -> None:
    """Ctrl-C (or a service manager's SIGTERM) once the flash has spoken to a board that never
    answers: exit 130, one line, the port released, nothing written."""
    master, slave = pty.openpty()
    try:
        before = snapshot(world, sim_dir)
        proc = ocula_proc("flash", str(world / "good.bundle"), "--port", os.ttyname(slave))
        try:
            assert _wait_readable(master, 60)  # the host's first frame: it is waiting now
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        line = check_error(proc.returncode, err.decode(), out.decode(), 130)
        assert line == "ocula: error: interrupted"
        assert snapshot(world, sim_dir) == before
    finally:
        os.close(master)
        os.close(slave)


def test_a_disk_that_fills_while_a_bundle_is_written(world: Path, tmp_path: Path) -> None:
    """ENOSPC half-way: one line naming the bundle and the disk, no temporary left, and an
    existing bundle at that path is kept as it was."""
    small = tmp_path / "small"
    small.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)])
    try:
        (small / "o.bundle").write_bytes(b"the previous bundle")
        before = snapshot(small)
        r = subprocess.run(
            [str(BIN / "ocula"), "bundle", "--board", "sim", "--no-glyphs", "--out",
             str(small / "o.bundle")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        line = check_error(r.returncode, r.stderr, r.stdout, 1)
        assert "o.bundle" in line and "No space left on device" in line
        assert snapshot(small) == before
        assert (small / "o.bundle").read_bytes() == b"the previous bundle"
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_interrupted_bundle_write_leaves_no_temporary(tmp_path: Path) -> None:
    """Ctrl-C while the bundle's bytes are written: the temporary and the folders made for it
    are removed."""
    out = tmp_path / "a" / "b" / "o.bundle"
    with pytest.raises(KeyboardInterrupt), bundle._atomic(out) as fh:
        fh.write(b"x" * 1000)
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_relative_out_means_the_folder_the_user_is_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocula.argtypes import out_dir, out_file

    monkeypatch.chdir(tmp_path)
    assert out_dir("prof") == tmp_path / "prof"
    assert out_file("x/../o.bundle") == tmp_path / "o.bundle"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
