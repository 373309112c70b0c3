"""`ocula inspect DIR`: a readable summary of an artifact's manifest.

Model, quantization per graph, files and sizes, validation figures, and the fit to every known
board (artifact size and estimated memory vs each profile's budget). The files are verified
against their sha256 unless --no-verify.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="summarize an artifact: model, quantization, files, validation, board fit",
        description="Read DIR/manifest.json (schema-checked, files verified) and summarize it.",
    )
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the manifest and board fit as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
    p.set_defaults(func=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from runtime.manifest import load_manifest

    m = load_manifest(args.dir, verify_files=not args.no_verify)
    fits = _fits(m)
    if args.json:
        print(json.dumps({"manifest": m.to_dict(), "boards": fits}, indent=2))
        return 0
    mb = m.total_bytes / (1 << 20)
    print(f"{args.dir}: {m.kind} artifact '{m.name}' (schema {m.schema_version}, {m.created_by})")
    print(f"  source        {m.source.format} {m.source.id}")
    if m.llm is not None:
        i = m.llm
        print(
            f"  model         {i.architecture}, {i.layers} layers, {i.heads} heads / {i.kv_heads} kv "
            f"heads x {i.head_dim}, hidden {i.hidden_size}, vocab {i.vocab_size}, "
            f"max length {i.max_length}"
        )
        kv = i.kv
        shared = "shared past/present buffer" if kv and kv.shared_buffer else "past + new = present"
        print(f"  graph         {i.graph_kind}; KV {kv.shape if kv else '?'} {shared}")
        print(f"  eos ids       {i.eos_token_ids}")
    if m.asr is not None:
        a = m.asr
        print(
            f"  model         whisper, {a.encoder_layers}+{a.decoder_layers} layers, d_model "
            f"{a.d_model}, {a.decoder_heads} heads, vocab {a.vocab_size}"
        )
        langs = (
            f"{len(a.language_token_ids)} languages"
            if a.multilingual
            else f"{a.language or 'one language'} only (no language or task tokens)"
        )
        print(
            f"  features      {a.sample_rate} Hz, n_fft {a.n_fft}, hop {a.hop_length}, "
            f"{a.n_mels} mel bins, {a.chunk_length_s} s chunks; {langs}"
        )
        head = a.extra.get("decoder_head", "logits")
        what = "greedy token out, no logits" if head == "rescore8" else "logits out"
        print(f"  decoder head  {head} ({what})")
    for role, g in m.graphs.items():
        q = g.quantization
        detail = [q.scheme]
        if q.bits:
            detail.append(f"{q.bits}-bit")
        if q.block_size:
            detail.append(f"block {q.block_size}")
        if q.symmetric is not None:
            detail.append("symmetric" if q.symmetric else "asymmetric")
        if q.embed_bits:
            detail.append(f"embedding table {q.embed_bits}-bit")
        if q.accuracy_level is not None:
            detail.append(f"accuracy level {q.accuracy_level}")
        ops = ", ".join(f"{k} x{v}" for k, v in q.ops.items()) or "none"
        flt = ", ".join(f"{k} x{v}" for k, v in q.float_ops.items()) or "none"
        print(f"  {role:<13} {', '.join(detail)}; quantized ops: {ops}; float weight ops: {flt}")
    print(f"  files         {len(m.files)}, {mb:.1f} MiB")
    for f in m.files:
        print(f"    {f.path:<32} {f.size / (1 << 20):9.2f} MiB  {f.role}")
    v = m.validation
    if v is None:
        print("  validation    none (exported with --no-validate)")
    else:
        shown = {k: x for k, x in v.metrics.items() if k not in ("failures", "audio")}
        print(f"  validation    {'passed' if v.passed else 'FAILED'} vs {v.reference}")
        print("                " + ", ".join(f"{k} {_fmt(x)}" for k, x in shown.items()))
    print("  boards")
    for f in fits:
        verdict = "fits" if f["fits"] else "DOES NOT FIT"
        print(
            f"    {f['board']:<10} {verdict:<13} artifact {f['artifact_mb']}/{f['max_artifact_mb']} MiB, "
            f"memory ~{f['rss_mb']}/{f['max_rss_mb']} MiB (weights {f['weights_mb']}, "
            f"KV {f['kv_mb']}, activations {f['activations_mb']})"
        )
    return 0


def _fits(m: Any) -> list[dict[str, Any]]:
    from board import profiles
    from export.budget import estimate

    out = []
    for name in profiles.names():
        fit = estimate(m, profiles.find(name))
        out.append(fit.as_dict())
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
