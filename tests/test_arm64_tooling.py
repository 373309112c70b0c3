"""The aarch64 emulation tooling on the host: the mirror found in apt's configuration, missing
tools named by their apt package, failed downloads leaving no cache a later run would trust,
the parity checks, and the decisive test models they rely on.

The device subset itself runs under qemu in `make arm64-test`; these tests need no qemu. One
drives a real debootstrap against a dead mirror: `make test` installs the Debian package, and
without it the test fails naming the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arm64 import install, rootfs, wheels
from arm64.cache import build_once, key_of
from arm64.errors import Arm64Error

ROOT = Path(__file__).resolve().parent.parent
DEAD_MIRROR = "http://127.0.0.1:9/debian"  # the discard port: nothing listens, refused at once


def write_apt(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def test_mirror_from_a_deb822_file_skips_disabled_security_and_unknown_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCULA_DEBIAN_MIRROR", raising=False)
    apt = write_apt(
        tmp_path,
        {
            "sources.list.d/old.list.disabled-by-farm": "deb http://wrong.example/debian bookworm main\n",
            "sources.list.d/debian.sources": (
                "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n"
                "Types: deb\n# a comment\nURIs: http://sec.example/debian-security\n"
                "Suites: bookworm-security\nComponents: main\n\n"
                "Types: deb-src deb\nURIs: http://mirror.example/debian\n"
                "Suites: bookworm bookworm-updates\nComponents: main\n"
            ),
        },
    )
    assert rootfs.debian_mirror(apt) == "http://mirror.example/debian"


def test_mirror_from_a_one_line_sources_list_with_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCULA_DEBIAN_MIRROR", raising=False)
    apt = write_apt(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb-src http://src.example/debian bookworm main\n"
                "deb http://security.example/debian-security bookworm-security main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian trixie main\n"
            )
        },
    )
    # No bookworm entry: the host's main archive serves bookworm too.
    assert rootfs.debian_mirror(apt) == "http://one.example/debian"


def test_this_machines_mirror_is_one_apt_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCULA_DEBIAN_MIRROR", raising=False)
    assert rootfs.debian_mirror() in [s.uri for s in rootfs.apt_sources()]


def test_no_mirror_says_where_it_looked_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCULA_DEBIAN_MIRROR", raising=False)
    with pytest.raises(Arm64Error, match="OCULA_DEBIAN_MIRROR") as e:
        rootfs.debian_mirror(write_apt(tmp_path, {}))
    assert str(tmp_path / "apt") in str(e.value) and e.value.step == "find the Debian mirror"


def test_missing_tools_are_named_with_their_apt_package(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    done = subprocess.run(
        [sys.executable, "-m", "arm64", "--cache", str(tmp_path / "cache")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("arm64: FAILED at step 'check the host tools'"), lines
    assert "qemu-aarch64-static (apt-get install qemu-user-static)" in lines[-1]
    assert "debootstrap (apt-get install debootstrap)" in lines[-1]
    assert not (tmp_path / "cache").exists()


def test_a_failed_build_leaves_nothing_and_the_next_run_rebuilds(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "half.deb").write_bytes(b"\x00" * 100)
        raise Arm64Error("download", "connection reset")

    with pytest.raises(Arm64Error, match="connection reset"):
        build_once(tmp_path, "rootfs", "k1", broken)
    assert list(tmp_path.iterdir()) == []

    built: list[Path] = []
    folder, reused = build_once(tmp_path, "rootfs", "k1", built.append)
    assert (folder.name, reused, len(built)) == ("rootfs-k1", False, 1)
    assert build_once(tmp_path, "rootfs", "k1", built.append) == (folder, True)
    # A leftover of a run that was killed is never read, and removed by the next build.
    (tmp_path / ".tmp-rootfs-k2-dead").mkdir()
    folder2, _ = build_once(tmp_path, "rootfs", "k2", built.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder2.name]


def test_cache_keys_follow_the_inputs() -> None:
    assert key_of({"a": 1, "b": [2]}) == key_of({"b": [2], "a": 1})
    assert key_of({"pins": ["numpy==2.4.6"]}) != key_of({"pins": ["numpy==2.4.5"]})


def test_a_failed_wheel_download_names_the_step_and_leaves_no_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip with no index and an empty wheel folder: the download fails as it would offline.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    (tmp_path / "no-wheels").mkdir()
    cache = tmp_path / "cache"
    pins = wheels.pins()
    with pytest.raises(Arm64Error, match="pip exited") as e:
        build_once(cache, "site", "k", lambda t: wheels.install(t, pins))
    assert e.value.step == "download the aarch64 wheels"
    assert "numpy" in str(e.value)
    assert list(cache.iterdir()) == []


def test_pins_are_the_host_versions_of_the_three_device_dependencies() -> None:
    import numpy
    import onnxruntime
    import tokenizers

    assert wheels.pins() == [
        f"numpy=={numpy.__version__}",
        f"onnxruntime=={onnxruntime.__version__}",
        f"tokenizers=={tokenizers.__version__}",
    ]


def test_a_dead_mirror_fails_the_debootstrap_step_and_leaves_no_cache(tmp_path: Path) -> None:
    """A real debootstrap (`make test` installs the Debian package) against a mirror that
    refuses at once; without root, the step says that it needs root."""
    # /usr/sbin is not on a normal user's PATH
    if not shutil.which("debootstrap", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"):
        pytest.fail("debootstrap is not installed: apt-get install debootstrap (make test does)")
    cache = tmp_path / "cache"
    expected = (
        "debootstrap from http://127\\.0\\.0\\.1:9/debian" if os.geteuid() == 0 else "needs root"
    )
    with pytest.raises(Arm64Error, match=expected) as e:
        build_once(cache, "rootfs", "k", lambda t: rootfs.build(t, DEAD_MIRROR))
    assert e.value.step == "debootstrap the arm64 root file system"
    assert list(cache.iterdir()) == []


def test_the_lean_device_install_keeps_what_the_runtime_loads(tmp_path: Path) -> None:
    site = tmp_path / "site"
    files = {
        "numpy/__init__.py": 10,
        "numpy/typing/__init__.py": 10,  # imported by runtime modules: kept
        "numpy/_core/tests/test_x.py": 100_000,
        "numpy/f2py/__init__.py": 100_000,
        "numpy.libs/libscipy_openblas64_.so": 500_000,
        "onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-aarch64-linux-gnu.so": 400_000,
        "onnxruntime/capi/libonnxruntime.so.1.32.0": 400_000,
        "onnxruntime/transformers/fusion.py": 100_000,
        "onnxruntime/__init__.pyi": 100,
        "tokenizers-0.22.2.dist-info/METADATA": 10,
        "bin/f2py": 10,
    }
    for rel, size in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(b"x" * size)
    runtime = tmp_path / "runtime"
    (runtime / "__pycache__").mkdir(parents=True)
    (runtime / "__init__.py").write_bytes(b"y" * 30)
    (runtime / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"z" * 999)
    lean = tmp_path / "device"
    install.stage(runtime, site, lean)
    kept = sorted(str(p.relative_to(lean)) for p in lean.rglob("*") if p.is_file())
    assert kept == [
        "runtime/__init__.py",
        "site/numpy.libs/libscipy_openblas64_.so",
        "site/numpy/__init__.py",
        "site/numpy/typing/__init__.py",
        "site/onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-aarch64-linux-gnu.so",
        "site/tokenizers-0.22.2.dist-info/METADATA",
    ]
    sizes = install.measure(site, lean)
    assert sizes["device_total_mb"] == 0.9  # 500_000 + 400_000 + 70 bytes
    assert sizes["native_libraries_mb"] == 0.9
    assert sizes["pip_wheels_mb"] == 1.6
    assert next(iter(sizes["largest_files_mb"])) == "numpy.libs/libscipy_openblas64_.so"


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_token_parity_wants_equal_tokens_and_notes_the_margin_and_the_difference() -> None:
    from arm64.device_tests.parity import check_tokens, margin, min_margin

    x86 = [[0.0, 1.0, 0.99], [2.0, 0.0, 0.5], [0.0, 0.0, 3.0]]  # step 0: 1 beats 2 by 0.01
    assert margin(x86[1]) == 1.5 and min_margin(x86) == pytest.approx((0.01, 0))
    tokens = [1, 0, 2]
    ctx = Notes()
    arm = [[v + 0.0005 for v in row] for row in x86[:2]] + [[0.0, 0.001, 3.0]]
    check_tokens(ctx, "same", tokens, arm, tokens, x86, tol=0.005)
    assert ctx.notes == [
        "same: 3/3 tokens equal; max |logit diff| vs x86_64 1.00e-03; "
        "min top-1/top-2 margin on x86_64 0.010 (step 0), 10x the difference"
    ]
    # Parting at a near tie is a failure now: the test models are decisive.
    tie = [[0.0, 0.98, 0.995], [0.0, 0.0, 5.0]]
    with pytest.raises(
        AssertionError,
        match=r"differ from x86_64 at step 0 \(x86_64 decided it by a margin of 0\.0100",
    ):
        check_tokens(Notes(), "tie", [2, 2], tie, tokens, x86, tol=0.05)
    # A run that ended early (EOS) differs too.
    with pytest.raises(AssertionError, match="at step 2"):
        check_tokens(Notes(), "short", tokens[:2], arm[:2], tokens, x86, tol=0.05)
    with pytest.raises(AssertionError, match=r"logits differ from x86_64 by 1\.00e-03 > 0\.0005"):
        check_tokens(Notes(), "tight", tokens, arm, tokens, x86, tol=0.0005)


def test_draw_margin_redoes_the_engines_seeded_draws() -> None:
    import numpy as np

    from arm64.device_tests.parity import check_sampled, draw_margin
    from runtime.engine.llm.sampling import Sampler, SamplingParams

    rng = np.random.default_rng(5)
    rows = [(rng.standard_normal(50) * 2).astype(np.float32) for _ in range(40)]
    for k in (0, 8):
        sampler = Sampler(SamplingParams(temperature=0.8, top_k=k, seed=99), 50)
        tokens = [sampler(row) for row in rows]
        as_lists = [[float(x) for x in row] for row in rows]
        gap = draw_margin(as_lists, tokens, 99, 0.8, k)
        assert 0 < gap < 0.5
        wrong = [(tokens[0] + 1) % 50, *tokens[1:]]
        with pytest.raises(AssertionError, match=r"step 0: numpy's choice .* picks"):
            draw_margin(as_lists, wrong, 99, 0.8, k)
    # Two equally likely tokens: the draw u chooses token 0 below 0.5, at distance min(u, 0.5 - u).
    u = np.random.default_rng(7).random()
    token = 0 if u < 0.5 else 1
    assert draw_margin([[1.0, 1.0]], [token], 7, 1.0) == pytest.approx(min(abs(u - 0.5), u, 1 - u))
    ctx = Notes()
    check_sampled(ctx, "s", [token], [[1.0, 1.0]], [token], [[1.0, 1.0 + 1e-3]], 0.1, 1.0)
    assert "draws at least 1.00e-01 from a token boundary" in ctx.notes[0]
    assert "moves by at most 2.00e-03" in ctx.notes[0]
    with pytest.raises(AssertionError, match="differ from x86_64 at step 0"):
        check_sampled(Notes(), "s", [1 - token], [[1.0, 1.0]], [token], [[1.0, 1.0]], 0.1, 1.0)


def test_tiny_presets_recite_from_the_recital_prompt_decisively() -> None:
    """The premise of the exact parity checks: from the corpus's first sentence the tiny LLM and
    the tiny Whisper (on any audio) produce the corpus's opening, each decision by a top-1/top-2
    margin far wider than the logits differ across architectures (`parity.TOLERANCE`)."""
    from arm64.device_tests.asr_probe import transcribe_with_logits
    from arm64.device_tests.llm_probe import generate_with_logits
    from arm64.device_tests.parity import DECISIVE, TOLERANCE, min_margin
    from export.random import recital_prompt, training_text
    from runtime.engine.asr import Whisper
    from runtime.engine.audio import read_wav
    from runtime.engine.llm import GenerationConfig, Llm
    from tests.artifacts import asr_artifact, llm_artifact

    prompt = recital_prompt()
    opening = training_text()
    assert opening.startswith(prompt + " ")
    llm = Llm.from_artifact(llm_artifact("tiny-qwen2", "int4", "fused"))
    _, text, rows = generate_with_logits(llm, prompt, GenerationConfig(24))
    assert (prompt + text) == opening[: len(prompt + text)], text
    assert min_margin(rows)[0] >= DECISIVE * TOLERANCE["llm-int4"]
    whisper = Whisper.from_artifact(asr_artifact("tiny-whisper", "int8", head="fp32"))
    audio = read_wav(ROOT / "tests" / "data" / "speech_short.wav", whisper.sample_rate)
    result, rows = transcribe_with_logits(whisper, audio, language="en", max_new_tokens=24)
    assert opening.startswith(result.text), result.text
    assert min_margin(rows)[0] >= DECISIVE * TOLERANCE["asr-int8"]
