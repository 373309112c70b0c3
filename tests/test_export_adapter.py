"""Fine-tuned checkpoints: a LoRA adapter trained here is merged at export, and the artifact
follows the adapter (the merged PyTorch model's greedy tokens), not the base.

The adapter is trained for a few steps towards a fixed answer: enough to move the tiny model's
greedy tokens away from the base's, which is all the test needs to tell the two apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from export.adapter import adapter_digest
from export.llm import LlmOptions, export_llm
from runtime.engine.llm import GenerationConfig, Llm
from runtime.manifest import load_manifest
from tests.artifacts import hf_model

PROMPT = [5, 17, 42, 9]
TARGET = [101, 7, 333, 64, 250, 12, 90, 180, 3, 77, 211, 45]
N = len(TARGET)


def _greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n,
        do_sample=False,
        min_new_tokens=n,
        pad_token_id=0,
    )
    return [int(t) for t in out[0, len(prompt) :]]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> tuple[Path, Path]:
    """(base folder, adapter folder): a LoRA on tiny-qwen2, trained a few steps towards
    answering PROMPT with TARGET."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = hf_model("tiny-qwen2")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "up_proj"])
    peft_model = get_peft_model(model, lora)
    seq = torch.tensor([PROMPT + TARGET])
    labels = seq.clone()
    labels[0, : len(PROMPT)] = -100
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(20):
        loss = peft_model(input_ids=seq, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 1.0, losses  # the adapter learned something
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(folder)
    return base, folder


def test_the_artifact_follows_the_adapter_not_the_base(adapter, tmp_path: Path) -> None:
    from peft import PeftModel

    base, folder = adapter
    out = tmp_path / "art"
    m = export_llm(
        str(base), out, LlmOptions(quant="fp32", graph="fused", max_length=64, adapter=folder)
    )
    assert m.validation is not None and m.validation.passed
    assert m.extra["adapter"]["sha256"] == adapter_digest(folder)
    assert m.extra["adapter"]["rank"] == 8
    assert json.loads((out / "manifest.json").read_text())["extra"]["adapter"]["targets"] == [
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]

    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    base_tokens = _greedy(base_model, PROMPT, N)
    merged = (
        PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), folder
        )
        .merge_and_unload()
        .eval()
    )
    merged_tokens = _greedy(merged, PROMPT, N)
    assert base_tokens != merged_tokens, "the adapter did not change the model's answer"

    llm = Llm.from_artifact(out)
    gen = llm.start(PROMPT, GenerationConfig(max_new_tokens=N))
    while not gen.done:
        gen.step()
    assert gen.tokens[:N] == merged_tokens
    assert load_manifest(out).extra["adapter"]["sha256"] == adapter_digest(folder)


def test_a_bad_adapter_is_refused_in_one_line(adapter, tmp_path: Path) -> None:
    base, folder = adapter
    cases = {
        "missing": (tmp_path / "nope", "not a folder"),
        "empty": (tmp_path / "empty", "no adapter_config.json"),
        "other-targets": (tmp_path / "other", "are not modules of this"),
        "not-lora": (tmp_path / "ia3", "only LoRA adapters"),
    }
    (tmp_path / "empty").mkdir()
    for name, kind in (("other", "LORA"), ("ia3", "IA3")):
        d = tmp_path / name
        d.mkdir()
        cfg = json.loads((folder / "adapter_config.json").read_text())
        cfg["peft_type"] = kind
        if name == "other":
            cfg["target_modules"] = ["c_attn"]
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        (d / "adapter_model.safetensors").write_bytes(
            (folder / "adapter_model.safetensors").read_bytes()
        )
    for name, (path, words) in cases.items():
        out = tmp_path / f"out-{name}"
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "ocula"),
                "export",
                "llm",
                str(base),
                "--out",
                str(out),
                "--quant",
                "fp32",
                "--adapter",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 1, (name, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert lines[-1].startswith("ocula: error:") and words in lines[-1], (name, run.stderr)
        assert "Traceback" not in run.stderr
        assert not out.exists()
