"""Read a Hugging Face folder's safetensors weights by name, as float32 numpy arrays.

All `*.safetensors` files of the folder are indexed (single or sharded checkpoints); tensors
are read one at a time, when the graph core asks, so peak memory stays near one copy of the
weights. bfloat16 and float16 tensors are widened to float32 through torch, which safetensors'
numpy reader cannot do for bfloat16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.fused.errors import FusedError


class SafetensorsWeights:
    """Callable: `weights(name) -> np.ndarray` (float32)."""

    def __init__(self, model_dir: Path) -> None:
        from safetensors import safe_open

        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise FusedError(
                f"{model_dir}: no *.safetensors weights; save the model with "
                "save_pretrained(safe_serialization=True)"
            )
        self._handles: dict[str, Any] = {}
        for path in files:
            try:
                handle = safe_open(str(path), framework="pt")
                names = list(handle.keys())
            except Exception as e:  # safetensors raises its own untyped errors on bad headers
                raise FusedError(f"{path}: unreadable safetensors file ({e}); re-save it") from e
            for name in names:
                self._handles[name] = handle

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def __call__(self, name: str) -> np.ndarray:
        handle = self._handles.get(name)
        if handle is None:
            raise FusedError(f"weight {name!r} is missing from the checkpoint")
        try:
            tensor = handle.get_tensor(name)
        except Exception as e:
            raise FusedError(f"weight {name!r}: could not be read ({e}); file truncated?") from e
        array: np.ndarray = tensor.float().numpy()
        return array
