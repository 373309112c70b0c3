"""Ocula's on-device runtime.

Runs on the glasses' SoC: it depends only on numpy, onnxruntime, tokenizers and the stdlib
(design.md section 2; import-linter enforces it in `make lint`).
"""

__version__ = "0.1.0"
