"""Host: turn models into quantized, validated ONNX artifacts (design.md sections 1, 3, 4)."""
