"""The two Whisper graphs, written as small torch modules over the model's own weights.

    encoder.onnx   input_features [1, n_mels, frames]
                   -> cross.{i}.key / cross.{i}.value [1, heads, frames/2, head_dim] per decoder layer
    decoder.onnx   input_ids [1, S], cross.{i}.key/value, past.{i}.key/value [1, heads, P, head_dim]
                   -> logits [1, S, vocab], present.{i}.key/value [1, heads, P + S, head_dim]

The encoder graph also applies every decoder layer's cross-attention K and V projections, so
the cross K/V are computed once per utterance and the decoder never sees the encoder states.
One decoder graph serves the prompt (P = 0, S = prompt length) and every step (S = 1): positions
are P .. P+S-1, read from the past's shape, and a causal mask covers the S new rows. There is
no If node (optimum's merged decoder has one, and quantize_dynamic silently skips its
branches). Parity with the Hugging Face model is checked by `export.asr` on every export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CrossKV(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.layers = model.model.decoder.layers
        self.heads = model.config.decoder_attention_heads

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.encoder(input_features).last_hidden_state
        out = []
        for layer in self.layers:
            a = layer.encoder_attn
            out.append(_heads(a.k_proj(h), self.heads))
            out.append(_heads(a.v_proj(h), self.heads))
        return tuple(out)


class Decoder(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        d = model.model.decoder
        self.d = d
        self.heads = model.config.decoder_attention_heads
        self.n = len(d.layers)
        self.lm = model.proj_out

    def forward(self, input_ids: torch.Tensor, *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cross, past = kv[: 2 * self.n], kv[2 * self.n :]
        s = input_ids.shape[1]
        p = past[0].shape[2]
        pos = torch.arange(s, dtype=torch.int64) + p
        x = self.d.embed_tokens(input_ids) + self.d.embed_positions.weight[pos].unsqueeze(0)
        rows = pos.unsqueeze(1)
        total = torch.arange(p + s, dtype=torch.int64).unsqueeze(0)
        mask = torch.where(total > rows, float("-inf"), 0.0)  # [S, P+S]
        presents = []
        for i, layer in enumerate(self.d.layers):
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = _heads(a.q_proj(h) * a.scaling, self.heads)
            k = torch.cat([past[2 * i], _heads(a.k_proj(h), self.heads)], dim=2)
            v = torch.cat([past[2 * i + 1], _heads(a.v_proj(h), self.heads)], dim=2)
            presents += [k, v]
            x = x + a.out_proj(_merge(_attend(q, k, v, mask)))
            c = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _heads(c.q_proj(h) * c.scaling, self.heads)
            x = x + c.out_proj(_merge(_attend(q, cross[2 * i], cross[2 * i + 1], None)))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = self.d.layer_norm(x)
        return (self.lm(x), *presents)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    w = q @ k.transpose(2, 3)
    if mask is not None:
        w = w + mask
    return torch.softmax(w, dim=-1) @ v


def names(layers: int) -> tuple[list[str], list[str], list[str]]:
    """(cross names, past names, present names) in graph order."""
    cross = [f"cross.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    past = [f"past.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    present = [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    return cross, past, present


def export(model: Any, encoder_path: str, decoder_path: str, n_mels: int, frames: int) -> None:
    layers = model.config.decoder_layers
    heads = model.config.decoder_attention_heads
    hd = model.config.d_model // heads
    cross, past, present = names(layers)
    feats = torch.zeros(1, n_mels, frames)
    with torch.no_grad():
        torch.onnx.export(
            CrossKV(model),
            (feats,),
            encoder_path,
            input_names=["input_features"],
            output_names=cross,
            opset_version=17,
            dynamo=False,
        )
        ck = CrossKV(model)(feats)
        ids = torch.zeros(1, 2, dtype=torch.int64)
        pk = [torch.zeros(1, heads, 3, hd) for _ in past]
        dyn: dict[str, dict[int, str]] = {"input_ids": {1: "sequence"}, "logits": {1: "sequence"}}
        dyn.update({n: {2: "past"} for n in past})
        dyn.update({n: {2: "total"} for n in present})
        torch.onnx.export(
            Decoder(model),
            (ids, *ck, *pk),
            decoder_path,
            input_names=["input_ids", *cross, *past],
            output_names=["logits", *present],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )
