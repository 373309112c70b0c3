"""The one ONNX graph writer under Ocula's two model kinds.

`GraphWriter` collects nodes and initializers with unique, readable names and knows which
operators are onnxruntime's contrib ones (domain com.microsoft). It has the pieces both
graphs are made of: a float MatMul with its bias, the four layer norms (LayerNorm and RMS
norm, each with or without the residual add fused in), renaming a node's output to a graph
output, and the model itself. The decoder-only LLM graph (`export.fused.graph`) and the two
Whisper graphs (`export.asr_graphs`) are descriptions on top: which weights go where, in
which order, and the model kind's own pieces (quantized MatMulNBits weights and the tied
head for the LLM; the convolutions, cross-attention and the re-scoring head for Whisper).

Every op's output is named `{node}/out` (or `{node}/out{i}` for several); `rename` makes a
produced name a graph output's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS = "com.microsoft"

# The contrib operators Ocula's graphs use (domain com.microsoft); all others are ONNX's.
CONTRIB = frozenset(
    {
        "BiasGelu",
        "FusedMatMul",
        "GatherBlockQuantized",
        "Gelu",
        "GroupQueryAttention",
        "MatMulNBits",
        "MultiHeadAttention",
        "QuickGelu",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
    }
)
# The fused norms' second and third outputs (mean, inverse std) that no graph reads.
_SKIP_NORMS = ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization")


class GraphWriter:
    """Nodes and initializers being written: `const` adds an initializer, `op` a node."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any
    ) -> list[str]:
        """A node named `name`; returns its output names."""
        outputs = [f"{name}/out{i}" if n_out > 1 else f"{name}/out" for i in range(n_out)]
        domain = MS if op_type in CONTRIB else ""
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=name, domain=domain, **attrs)
        )
        return outputs

    def op1(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """A node with one output; returns its name."""
        return self.op(op_type, inputs, name, **attrs)[0]

    def matmul(self, x: str, weight_t: str, name: str, bias: str | None = None) -> str:
        """x @ W.T (+ b), for the initializer `weight_t` holding W.T [K, N]."""
        y = self.op1("MatMul", [x, weight_t], name)
        return y if bias is None else self.op1("Add", [y, bias], name + "/bias")

    def layer_norm(self, x: str, gamma: str, eps: float, name: str, beta: str | None = None) -> str:
        """LayerNorm(x) with `beta`, RMS norm (SimplifiedLayerNormalization) without."""
        if beta is None:
            return self.op1("SimplifiedLayerNormalization", [x, gamma], name, axis=-1, epsilon=eps)
        return self.op1("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=eps)

    def skip_norm(
        self,
        x: str,
        skip: str,
        gamma: str,
        eps: float,
        name: str,
        beta: str | None = None,
        bias: str | None = None,
    ) -> tuple[str, str]:
        """(norm(x + skip + bias), x + skip + bias): LayerNorm with `beta`, RMS norm without."""
        if beta is None:
            ins = [x, skip, gamma]
            kind = "SkipSimplifiedLayerNormalization"
        else:
            ins = [x, skip, gamma, beta, *([bias] if bias is not None else [])]
            kind = "SkipLayerNormalization"
        out = self.op(kind, ins, name, n_out=4, epsilon=eps)
        return out[0], out[3]

    def rename(self, produced: str, final: str) -> None:
        """Make the node producing `produced` write `final` (a graph output name) instead,
        and its readers read that."""
        for n in self.nodes:
            for j, o in enumerate(n.output):
                if o == produced:
                    n.output[j] = final
            for j, i in enumerate(n.input):
                if i == produced:
                    n.input[j] = final

    def model(
        self,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        name: str,
        opset: int,
        ir_version: int,
        producer: str = "",
    ) -> onnx.ModelProto:
        for n in self.nodes:
            if n.op_type in _SKIP_NORMS:
                n.output[1] = ""
                n.output[2] = ""
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)]
        m = helper.make_model(graph, opset_imports=opsets, producer_name=producer)
        m.ir_version = ir_version
        return m
