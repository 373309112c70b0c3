"""`ocula export` and `ocula inspect` as a user runs them: bad input gives one line and a
non-zero exit, and leaves the output folder as it was."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from tests.artifacts import asr_artifact, hf_model, llm_artifact
from tests.conftest import run_ocula


def _one_line_error(r, code: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert r.code == code, (r.code, r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.startswith("ocula: error:")]
    assert len(lines) == 1, r.err
    assert "Traceback" not in r.err
    return lines[0]


def _folder(tmp_path: Path, preset: str, name: str = "model") -> Path:
    dst = tmp_path / name
    shutil.copytree(hf_model(preset), dst)
    return dst


def test_source_missing(tmp_path: Path) -> None:
    r = run_ocula("export", "llm", str(tmp_path / "nope"), "--out", str(tmp_path / "a"))
    assert "no such file or folder" in _one_line_error(r)
    assert not (tmp_path / "a").exists()


def test_folder_without_config(tmp_path: Path) -> None:
    src = _folder(tmp_path, "tiny-qwen2")
    (src / "config.json").unlink()
    r = run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a"))
    assert "no config.json" in _one_line_error(r)


def test_unsupported_architecture(tmp_path: Path) -> None:
    src = _folder(tmp_path, "tiny-qwen2")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (src / "config.json").write_text(json.dumps(cfg))
    line = _one_line_error(run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a")))
    assert "'mamba' is not supported" in line and "qwen2, qwen3, llama" in line


def test_truncated_safetensors(tmp_path: Path) -> None:
    src = _folder(tmp_path, "tiny-qwen2")
    w = src / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    line = _one_line_error(run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a")))
    assert "truncated safetensors" in line


def test_corrupt_safetensors_header(tmp_path: Path) -> None:
    src = _folder(tmp_path, "tiny-qwen2")
    w = src / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[8:16] = b"\xff" * 8
    w.write_bytes(bytes(data))
    line = _one_line_error(run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a")))
    assert "corrupt safetensors" in line


@pytest.mark.parametrize("config", [b"[1, 2]", b"[" * 100_000, b"\xff\xfe{}"])
def test_a_config_json_that_is_not_one(tmp_path: Path, config: bytes) -> None:
    src = _folder(tmp_path, "tiny-qwen2")
    (src / "config.json").write_bytes(config)
    line = _one_line_error(run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a")))
    assert "config.json: not" in line


@pytest.mark.parametrize(
    "header", [b"[" * 100_000 + b"]" * 100_000, b'{"w": 3}', b'{"w": {"data_offsets": "x"}}']
)
def test_safetensors_header_that_is_not_one(tmp_path: Path, header: bytes) -> None:
    src = _folder(tmp_path, "tiny-qwen2")
    w = src / "model.safetensors"
    w.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    line = _one_line_error(run_ocula("export", "llm", str(src), "--out", str(tmp_path / "a")))
    assert "corrupt safetensors" in line


@pytest.mark.parametrize("content", [b"GGUF\x03\x00\x00\x00" + b"\x00" * 20, b"not a gguf at all"])
def test_corrupt_gguf(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "model.gguf"
    f.write_bytes(content)
    line = _one_line_error(run_ocula("export", "llm", str(f), "--out", str(tmp_path / "a")))
    assert "GGUF" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quant", "int3"], "--quant int3: unknown"),
        (["--block-size", "48"], "--block-size 48: not allowed"),
        (["--max-length", "4"], "--max-length 4"),
        (["--graph", "magic"], "--graph magic"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    r = run_ocula("export", "llm", str(hf_model("tiny-qwen2")), "--out", str(tmp_path / "a"), *args)
    assert message in _one_line_error(r, code=2)


def test_asr_quant_int4_refused(tmp_path: Path) -> None:
    r = run_ocula(
        "export",
        "asr",
        str(hf_model("tiny-whisper")),
        "--out",
        str(tmp_path / "a"),
        "--quant",
        "int4",
    )
    assert "not available for ASR" in _one_line_error(r, code=2)


def test_asr_fp32_export_has_the_rescore_head_and_transcribes_as_the_logits_head(
    tmp_path: Path,
) -> None:
    """`--quant fp32` writes the re-scoring head by default (the manifest and `ocula inspect`
    say so): the same greedy transcription as the logits head (`--head fp32`)."""
    speech = Path(__file__).parent / "data" / "speech_short.wav"
    src = str(hf_model("tiny-whisper"))
    r = run_ocula("export", "asr", src, "--out", str(tmp_path / "r"), "--quant", "fp32")
    assert r.code == 0, r.err
    assert "decoder head  rescore8 (greedy token out, no logits" in r.out
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["asr"]["extra"]["decoder_head"] == "rescore8"
    assert (
        "decoder head  rescore8 (greedy token out, no logits)"
        in run_ocula("inspect", str(tmp_path / "r")).out
    )
    logits = asr_artifact("tiny-whisper", quant="fp32", head="fp32")
    assert "decoder head  logits (logits out)" in run_ocula("inspect", str(logits)).out
    texts = []
    for art in (tmp_path / "r", logits):
        t = run_ocula("transcribe", str(art), str(speech), "--json")
        assert t.code == 0, t.err
        texts.append([s["tokens"] for s in json.loads(t.out)["segments"]])
    assert texts[0] == texts[1] and texts[0][0]
    r = run_ocula("export", "asr", src, "--out", str(tmp_path / "q"), "--head", "rescore8")
    assert "use it with --quant fp32" in _one_line_error(r, code=2)


def test_existing_folder_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    r = run_ocula("export", "llm", str(hf_model("tiny-qwen2")), "--out", str(out))
    assert "not an Ocula artifact" in _one_line_error(r) and "--force" in r.err
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]


def test_asr_model_to_llm_and_reverse(tmp_path: Path) -> None:
    r = run_ocula("export", "llm", str(hf_model("tiny-whisper")), "--out", str(tmp_path / "a"))
    assert "use 'ocula export asr'" in _one_line_error(r)
    r = run_ocula("export", "asr", str(hf_model("tiny-qwen3")), "--out", str(tmp_path / "a"))
    assert "use 'ocula export llm'" in _one_line_error(r)


def test_unknown_board(tmp_path: Path) -> None:
    r = run_ocula(
        "export",
        "llm",
        str(hf_model("tiny-qwen2")),
        "--out",
        str(tmp_path / "a"),
        "--board",
        "moon",
    )
    assert "moon" in _one_line_error(r)


def test_inspect_rejects_a_manifest_that_fails_its_schema(tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(llm_artifact("tiny-qwen2", "int4"), art)
    data = json.loads((art / "manifest.json").read_text())
    data["llm"]["layers"] = "two"
    (art / "manifest.json").write_text(json.dumps(data))
    line = _one_line_error(run_ocula("inspect", str(art)))
    assert "llm.layers: expected an integer" in line


def test_inspect_catches_a_corrupt_file(tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(llm_artifact("tiny-qwen2", "int4"), art)
    with open(art / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert "sha256" in _one_line_error(run_ocula("inspect", str(art)))


def test_inspect_summarizes(tmp_path: Path) -> None:
    r = run_ocula("inspect", str(asr_artifact("tiny-whisper", "int8")))
    assert r.code == 0, r.err
    assert "MatMulInteger x" in r.out and "MatMulNBits x" in r.out
    assert "validation    passed" in r.out
    for board in ("ar1-ref", "rpi5", "sim"):
        assert board in r.out


def test_export_llm_end_to_end_with_board(tmp_path: Path) -> None:
    out = tmp_path / "art"
    r = run_ocula(
        "export", "llm", str(hf_model("tiny-qwen3")), "--out", str(out), "--quant", "int4",
        "--max-length", "256", "--board", "ar1-ref",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "validation    passed" in r.out and "board ar1-ref" in r.out and "timings" in r.out
    for step in ("load", "export (fused, int4)", "validate"):  # fused is the default graph
        assert step in r.err
    from runtime.manifest import load_manifest

    m = load_manifest(out)
    assert m.extra["board_fit"]["fits"] is True and m.extra["board_fit"]["board"] == "ar1-ref"
    # a second export replaces the artifact without --force
    r = run_ocula(
        "export", "llm", str(hf_model("tiny-qwen3")), "--out", str(out), "--quant", "fp32",
        "--max-length", "256", "--no-validate",
    )  # fmt: skip
    assert r.code == 0, r.err
    m = load_manifest(out)
    assert m.graphs["decoder"].quantization.scheme == "fp32" and m.validation is None


def test_export_random_cli_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        r = run_ocula(
            "export", "random", "--preset", "tiny-whisper", "--out", str(d), "--seed", "3"
        )
        assert r.code == 0, r.err
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_truncated_real_gguf(tmp_path: Path) -> None:
    from export.fidelity import smollm2_gguf

    cut = tmp_path / "cut.gguf"
    with open(smollm2_gguf(), "rb") as f:
        cut.write_bytes(f.read(50_000_000))
    line = _one_line_error(run_ocula("export", "llm", str(cut), "--out", str(tmp_path / "a")))
    assert "corrupt or truncated GGUF" in line
    assert not (tmp_path / "a").exists()
