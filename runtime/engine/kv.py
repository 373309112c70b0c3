"""KV caches held in place: one buffer per layer and kind, bound as both past and present.

Ocula's decoder graphs (the fused LLM graph, Whisper's decoder) take each layer's past keys and
values and write the new rows into the same tensor, so the runtime allocates one buffer per
layer and kind at the cache's full length, once, and binds it as the graph's past input and
its present output (the same OrtValue): a step appends in place and nothing is copied or
rebound. `names` spells the graph's tensor names from the manifest's templates, `allocate`
makes the zeroed buffers, `bind` binds them to an IO binding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

__all__ = ["allocate", "bind", "names"]


def names(template: str, layers: int, kinds: Sequence[str] = ("key", "value")) -> list[str]:
    """`template` (with {layer} and {kind}) for every layer and kind, layer-major."""
    return [template.format(layer=i, kind=k) for i in range(layers) for k in kinds]


def allocate(
    count: int, shape: tuple[int, ...], dtype: type[np.floating[Any]] = np.float32
) -> tuple[list[np.ndarray], list[ort.OrtValue]]:
    """`count` buffers of `shape`, zeroed (attention never reads past the cache's length, but
    a NaN left in an unused row must not leak through a 0 * NaN), and their OrtValues, which
    share the arrays' memory."""
    arrays = [np.zeros(shape, dtype) for _ in range(count)]
    return arrays, [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]


def bind(
    binding: ort.IOBinding,
    pasts: Sequence[str],
    presents: Sequence[str],
    values: Sequence[ort.OrtValue],
) -> None:
    """Bind each buffer as its layer's past input and present output."""
    for past, present, value in zip(pasts, presents, values, strict=True):
        binding.bind_ortvalue_input(past, value)
        binding.bind_ortvalue_output(present, value)
