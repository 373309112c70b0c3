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
from tests.cli_rows import ROWS
from tests.conftest import BIN


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


def test_profile_with_a_relative_out_as_the_readme_shows(tmp_path: Path, sim_dir: Path) -> None:
    """`ocula profile --port sim://sim --app requests --out prof`: the board's work folder is
    handed to other processes, so a relative --out must mean the user's folder."""
    r = subprocess.run(
        [str(BIN / "ocula"), "profile", "--port", "sim://rel", "--app", "requests", "--out",
         "prof", "--seconds", "0.5"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "prof" / "index.html").is_file()
    assert f"report: {tmp_path / 'prof' / 'index.html'}" in r.stdout


def test_a_relative_out_means_the_folder_the_user_is_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocula.argtypes import out_dir, out_file

    monkeypatch.chdir(tmp_path)
    assert out_dir("prof") == tmp_path / "prof"
    assert out_file("x/../o.bundle") == tmp_path / "o.bundle"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
