"""`.npy` arrays from bytes, the header checked before numpy allocates anything.

`numpy.load` trusts a header: a 100-byte file that says shape (10**9,) makes numpy allocate
the array before it reads (from a file object) or fails with a MemoryError. `parse_npy` reads
the header itself (numpy's own header parser, which bounds the header's size), refuses dtypes
of another kind, object arrays, Fortran order and more than `most` elements, requires the
bytes that follow to be exactly the array, and returns a read-only view of them (no copy).
Errors are raised as `error(message)` so that each reader raises its module's own error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.lib.format as npformat
import numpy.typing as npt

__all__ = ["parse_npy"]


def parse_npy(
    raw: bytes,
    where: str,
    error: Callable[[str], Exception],
    *,
    kinds: str,
    most: int,
    max_ndim: int = 2,
) -> npt.NDArray[Any]:
    """The array in `raw` (the bytes of a `.npy` file) if its dtype kind is one of `kinds`
    (numpy's letters: i, u, f, U) and it holds at most `most` elements."""
    f = io.BytesIO(raw)
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            raise error(f"{where}: .npy format version {version} is not one this reader takes")
    except ValueError as exc:
        raise error(f"{where}: not a .npy array ({exc})") from exc
    if dtype.kind not in kinds or dtype.hasobject or len(shape) > max_ndim or fortran:
        raise error(f"{where}: an array of {dtype} {shape}, not what this file holds")
    count = math.prod(shape)
    if count > most or dtype.itemsize > 1 << 20:
        raise error(f"{where}: {shape} of {dtype} is more than this file holds ({most} at most)")
    if count * dtype.itemsize != len(raw) - f.tell():
        raise error(f"{where}: the header says {shape} of {dtype}, the file holds other bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=f.tell()).reshape(shape)
