"""The CTranslate2 reader (`export.ctranslate2`): hostile headers are refused before anything is
allocated, cut files are named, and a model written the way CTranslate2's converter writes it
(fused q/k/v, zero key bias, tied projection, int8 weights with per-row scales) reads back to
the Hugging Face Whisper state dict it came from."""

from __future__ import annotations

import shutil
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from export.ctranslate2 import DTYPES, load_whisper, read_model_bin, whisper_state_dict
from export.errors import ExportError
from tests.artifacts import hf_model
from tests.speech import tiny_en_folder


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<H", len(b) + 1) + b + b"\0"


def _write(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """model.bin as CTranslate2's model_spec._serialize writes it (binary version 6)."""
    out = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name in sorted(variables):
        v = np.array(variables[name], order="C")  # keeps 0-d scalars 0-d
        out += [_string(name), struct.pack("<B", v.ndim)]
        out += [struct.pack("<I", d) for d in v.shape]
        out += [struct.pack("<B", DTYPES.index(v.dtype.name)), struct.pack("<I", v.nbytes)]
        out.append(v.tobytes())
    out.append(struct.pack("<I", len(aliases)))
    for a, t in aliases.items():
        out += [_string(a), _string(t)]
    path.write_bytes(b"".join(out))


def _header(count: int, name: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    b = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<I", 3)]
    b += [struct.pack("<I", count), _string(name), struct.pack("<B", len(shape))]
    b += [struct.pack("<I", d) for d in shape] + [struct.pack("<B", 0), struct.pack("<I", nbytes)]
    return b"".join(b)


def test_a_header_that_asks_for_gigabytes_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(_header(1, "encoder/conv1/weight", (16384, 16384), 1 << 30))
    tracemalloc.start()
    with pytest.raises(ExportError, match="needs 1073741824 bytes, the file has 0 left"):
        read_model_bin(f)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20
    f.write_bytes(_header(4_000_000_000, "x", (1,), 4))
    with pytest.raises(ExportError, match="variables cannot fit"):
        read_model_bin(f)
    f.write_bytes(_header(1, "x", (3, 3), 4))
    with pytest.raises(ExportError, match="4 bytes for shape"):
        read_model_bin(f)
    f.write_bytes(struct.pack("<I", 99) + b"\0" * 64)
    with pytest.raises(ExportError, match="binary version 99"):
        read_model_bin(f)


def test_a_cut_model_is_named_and_the_cli_says_one_line(tmp_path: Path, ocula) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "cut"
    shutil.copytree(tiny_en_folder(), folder, ignore=shutil.ignore_patterns("model.bin"))
    with open(tiny_en_folder() / "model.bin", "rb") as fh:
        (folder / "model.bin").write_bytes(fh.read(3_000_000))
    with pytest.raises(ExportError, match="truncated"):
        read_model_bin(folder / "model.bin")
    r = ocula("export", "asr", str(folder), "--out", str(tmp_path / "out"))
    assert r.code == 1 and r.err.startswith("ocula: error: ") and "truncated" in r.err
    assert r.err.count("\n") == 1 and not (tmp_path / "out").exists()


def _to_ct2(sd: dict[str, torch.Tensor], int8: bool) -> dict[str, np.ndarray]:
    """The converter's names (WhisperLoader), from a Hugging Face Whisper state dict."""
    t = {k: v.detach().float().numpy() for k, v in sd.items()}
    out: dict[str, np.ndarray] = {}

    def lin(dst: str, parts: list[str]) -> None:
        w = np.concatenate([t[f"{p}.weight"] for p in parts])
        bias = [t.get(f"{p}.bias", np.zeros(t[f"{p}.weight"].shape[0], np.float32)) for p in parts]
        if int8:
            scale = 127.0 / np.abs(w).max(axis=1)
            out[f"{dst}/weight"] = np.round(w * scale[:, None]).astype(np.int8)
            out[f"{dst}/weight_scale"] = scale.astype(np.float32)
        else:
            out[f"{dst}/weight"] = w.astype(np.float16)
        out[f"{dst}/bias"] = np.concatenate(bias).astype(np.float16)

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = t[f"{src}.weight"], t[f"{src}.bias"]

    for side in ("encoder", "decoder"):
        h = f"model.{side}"
        n = 1 + max(int(k.split(".")[3]) for k in t if k.startswith(f"{h}.layers."))
        for i in range(n):
            c, s = f"{side}/layer_{i}", f"{h}.layers.{i}"
            a = f"{s}.self_attn"
            lin(f"{c}/self_attention/linear_0", [f"{a}.q_proj", f"{a}.k_proj", f"{a}.v_proj"])
            lin(f"{c}/self_attention/linear_1", [f"{a}.out_proj"])
            norm(f"{c}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            if side == "decoder":
                a = f"{s}.encoder_attn"
                lin(f"{c}/attention/linear_0", [f"{a}.q_proj"])
                lin(f"{c}/attention/linear_1", [f"{a}.k_proj", f"{a}.v_proj"])
                lin(f"{c}/attention/linear_2", [f"{a}.out_proj"])
                norm(f"{c}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
            lin(f"{c}/ffn/linear_0", [f"{s}.fc1"])
            lin(f"{c}/ffn/linear_1", [f"{s}.fc2"])
            norm(f"{c}/ffn/layer_norm", f"{s}.final_layer_norm")
        out[f"{side}/position_encodings/encodings"] = t[f"{h}.embed_positions.weight"]
        norm(f"{side}/layer_norm", f"{h}.layer_norm")
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"] = t[f"model.encoder.{conv}.weight"]
        out[f"encoder/{conv}/bias"] = t[f"model.encoder.{conv}.bias"]
    out["decoder/embeddings/weight"] = t["model.decoder.embed_tokens.weight"]
    return out


@pytest.mark.parametrize("int8", [False, True])
def test_a_converted_model_reads_back_to_its_state_dict(tmp_path: Path, int8: bool) -> None:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(hf_model("tiny-whisper"))
    sd = model.state_dict()
    heads = model.config.encoder_attention_heads
    variables = _to_ct2(sd, int8)
    variables["encoder/num_heads"] = np.array(heads, np.int16)
    variables["decoder/num_heads"] = np.array(model.config.decoder_attention_heads, np.int16)
    variables["decoder/activation"] = np.array(3, np.int8)
    _write(
        tmp_path / "model.bin",
        variables,
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    got, facts = whisper_state_dict(read_model_bin(tmp_path / "model.bin"), tmp_path)
    assert facts["encoder_layers"] == model.config.encoder_layers
    assert facts["tie_word_embeddings"] and facts["encoder_attention_heads"] == heads
    want = {k: v.float().numpy() for k, v in sd.items()}
    assert set(got) == set(want)
    for k, v in want.items():
        tol = np.abs(v).max() / 127 if int8 and k.endswith("weight") and v.ndim == 2 else 2e-3
        np.testing.assert_allclose(
            got[k], v, atol=max(tol, 1e-6) + 1e-3 * np.abs(v).max(), err_msg=k
        )


def test_the_real_tiny_en_folder_maps_to_hugging_face(tmp_path: Path) -> None:
    model, fe, hf = load_whisper(tiny_en_folder(), tmp_path)
    assert model.config.vocab_size == 51864 and model.generation_config.is_multilingual is False
    assert model.generation_config.forced_decoder_ids == [[1, 50362]]
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert (hf / "tokenizer.json").is_file() and (hf / "preprocessor_config.json").is_file()
    assert fe.feature_size == model.config.num_mel_bins == 80
