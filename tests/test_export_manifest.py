"""The artifact manifest schema: round trip, validation on read, file verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.manifest import (
    SCHEMA_VERSION,
    Graph,
    KvLayout,
    LlmInfo,
    Manifest,
    ManifestError,
    Quantization,
    Source,
    TokenizerInfo,
    file_entry,
    load_manifest,
)


def _artifact(d: Path) -> Manifest:
    (d / "model.onnx").write_bytes(b"onnx-bytes" * 100)
    (d / "tokenizer.json").write_text("{}")
    m = Manifest(
        kind="llm",
        name="t",
        source=Source(id="x", format="random"),
        files=[file_entry(d, "model.onnx", "model"), file_entry(d, "tokenizer.json", "tokenizer")],
        graphs={
            "decoder": Graph(
                file="model.onnx",
                inputs=["input_ids"],
                outputs=["logits"],
                quantization=Quantization(scheme="int4", bits=4, ops={"MatMulNBits": 3}),
            )
        },
        tokenizer=TokenizerInfo(files=["tokenizer.json"], chat_template="{{ x }}"),
        llm=LlmInfo(
            architecture="qwen2",
            graph_kind="optimum",
            layers=2,
            heads=4,
            kv_heads=2,
            head_dim=8,
            hidden_size=32,
            vocab_size=100,
            max_length=64,
            eos_token_ids=[1, 2],
            kv=KvLayout(
                shape=["batch", "kv_heads", "past", "head_dim"],
                dtype="float32",
                past="past_key_values.{layer}.{kind}",
                present="present.{layer}.{kind}",
                shared_buffer=False,
            ),
        ),
    )
    m.write(d)
    return m


def test_round_trip(tmp_path: Path) -> None:
    m = _artifact(tmp_path)
    back = load_manifest(tmp_path)
    assert back == m
    assert back.schema_version == SCHEMA_VERSION
    assert back.llm is not None and back.llm.kv is not None
    assert back.llm.kv.shape == ["batch", "kv_heads", "past", "head_dim"]


def _edit(d: Path, fn) -> None:  # type: ignore[no-untyped-def]
    data = json.loads((d / "manifest.json").read_text())
    fn(data)
    (d / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this runtime"),
        (lambda d: d.update(format="other"), "not an Ocula artifact"),
        (lambda d: d["llm"].update(layers="two"), "llm.layers: expected an integer"),
        (lambda d: d["llm"].update(layer=2), "unknown key(s) layer"),
        (lambda d: d["llm"].pop("vocab_size"), "missing required key 'llm.vocab_size'"),
        (lambda d: d.update(kind="robot"), "kind 'robot'"),
        (lambda d: d["files"][0].update(path="../x"), "must be relative"),
        (lambda d: d["graphs"]["decoder"].update(file="nope.onnx"), "not in 'files'"),
        (lambda d: d["llm"].update(kv=None), "llm.kv"),
    ],
)
def test_schema_errors(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    _artifact(tmp_path)
    _edit(tmp_path, edit)
    with pytest.raises(ManifestError, match=_re(message)):
        load_manifest(tmp_path)


def _re(s: str) -> str:
    import re

    return re.escape(s)


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    _artifact(tmp_path)
    p = tmp_path / "model.onnx"
    data = bytearray(p.read_bytes())
    data[10] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="corrupt"):
        load_manifest(tmp_path)
    load_manifest(tmp_path, verify_files=False)
    p.write_bytes(bytes(data[:-5]))
    with pytest.raises(ManifestError, match="truncated"):
        load_manifest(tmp_path)
    p.unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(tmp_path)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not an Ocula artifact"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
