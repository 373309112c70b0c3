"""The values an LLM export's options take, in one import-free place: the CLI checks them
without loading onnx, and the graph builders take the same tuples."""

from __future__ import annotations

KV_DTYPES = ("float32", "float16")  # the KV cache's element type
ACTIVATIONS = ("float", "q8")  # q8: activations rounded to llama.cpp's Q8 grid before MatMul
