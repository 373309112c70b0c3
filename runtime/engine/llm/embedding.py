"""The token lookup done by the runtime: rows of the quantized table read from the artifact.

A fused artifact whose manifest describes `graphs.decoder.extra["embedding"]` takes the rows
of its embedding table (`embed_codes`, uint8 [1, S, k_blocks, blob]: the packed codes as
stored; `embed_scales`, float32 [1, S, k_blocks, 1]) instead of token ids, and dequantizes
them itself with GatherBlockQuantized's arithmetic. Its table (the bytes the tied head's
MatMulNBits chunks view in the external data file) is not a graph initializer, so onnxruntime
never maps it: a memory-mapped table becomes resident a page-cache folio (up to 2 MB) around
every row looked up, which on real text is the whole table held a second time beside the
head's prepacked copy. Here each lookup reads only its rows, with `os.preadv` straight into
the bound input buffers at the offsets the manifest records. Greedy tokens and logits are
bit-identical to the in-graph lookup (tests/test_fused_graph.py, tests/test_engine_llm.py).

Why the graph dequantizes: a decode step's lookup runs right after a graph run has swept the
CPU caches, when each numpy call costs 10-25 us; the two reads are all the Python work left.
The file stays open for the `TableLookup`'s life.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.engine.errors import ArtifactError, EngineUsageError
from runtime.manifest import Manifest

__all__ = ["EmbeddingLayout", "TableLookup", "table_lookup"]

F32 = npt.NDArray[np.float32]
_PREADV = getattr(os, "preadv", None)  # absent on Windows


@dataclass(frozen=True)
class EmbeddingLayout:
    """Where the table is and how it is coded (the manifest's `embedding` entry)."""

    codes_input: str  # graph input: the rows' packed codes
    scales_input: str  # graph input: their scales
    file: str  # relative to the artifact folder
    rows: int  # vocabulary size
    hidden: int  # embedding width (the table's rows are padded to whole blocks)
    bits: int  # 4 or 8
    block_size: int
    weight_offset: int  # uint8 [rows, blocks, block_size * bits / 8], row-major
    scales_offset: int  # float32 [rows, blocks]

    @classmethod
    def parse(cls, entry: dict[str, Any], where: str) -> EmbeddingLayout:
        try:
            layout = cls(
                codes_input=str(entry["codes_input"]),
                scales_input=str(entry["scales_input"]),
                file=str(entry["file"]),
                rows=int(entry["rows"]),
                hidden=int(entry["hidden"]),
                bits=int(entry["bits"]),
                block_size=int(entry["block_size"]),
                weight_offset=int(entry["weight_offset"]),
                scales_offset=int(entry["scales_offset"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{where}: the manifest's embedding entry is incomplete or malformed ({exc!r}); "
                "re-export the artifact"
            ) from exc
        if layout.bits not in (4, 8) or layout.block_size <= 0 or layout.rows <= 0:
            raise ArtifactError(
                f"{where}: embedding table of {layout.bits} bits, block {layout.block_size}, "
                f"{layout.rows} rows is not one this runtime reads; re-export the artifact"
            )
        return layout

    @property
    def blocks(self) -> int:
        return -(-self.hidden // self.block_size)

    @property
    def row_bytes(self) -> int:
        return self.blocks * self.block_size * self.bits // 8


class TableLookup:
    """`read(ids, codes, scales)`: the rows of `ids` read into `codes` [len(ids), k_blocks,
    blob] (uint8) and `scales` [len(ids), k_blocks, 1] (float32), e.g. bound input buffers."""

    def __init__(self, layout: EmbeddingLayout, folder: Path) -> None:
        self._fd = -1
        self.layout = layout
        path = folder / layout.file
        size = path.stat().st_size if path.is_file() else -1
        end = max(
            layout.weight_offset + layout.rows * layout.row_bytes,
            layout.scales_offset + layout.rows * layout.blocks * 4,
        )
        if size < end:
            raise ArtifactError(
                f"{path}: the embedding table needs {end} bytes, the file has "
                f"{max(size, 0)}; the artifact is incomplete, re-export or re-flash it"
            )
        self._fd = os.open(path, os.O_RDONLY)
        advise = getattr(os, "posix_fadvise", None)
        if advise is not None:  # rows are read one by one, anywhere: no read-ahead
            advise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)

    def buffers(self, n: int) -> tuple[npt.NDArray[np.uint8], F32]:
        """Zeroed (codes, scales) buffers for `n` rows, shaped as the graph inputs [1, n, ...]."""
        lay = self.layout
        blob = lay.row_bytes // lay.blocks
        return np.zeros((1, n, lay.blocks, blob), np.uint8), np.zeros(
            (1, n, lay.blocks, 1), np.float32
        )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def read(self, ids: npt.NDArray[np.int64], codes: npt.NDArray[np.uint8], scales: F32) -> None:
        lay = self.layout
        row, srow = lay.row_bytes, lay.blocks * 4
        for i, token in enumerate(ids.tolist()):
            if not 0 <= token < lay.rows:
                raise EngineUsageError(
                    f"token id {token} is outside the embedding table's {lay.rows} rows; "
                    "pass ids from this artifact's tokenizer"
                )
            got = _read_at(self._fd, codes[i].data, lay.weight_offset + token * row)
            got += _read_at(self._fd, scales[i].data, lay.scales_offset + token * srow)
            if got != row + srow:
                raise ArtifactError(f"{lay.file}: short read of embedding row {token}")


def _read_at(fd: int, buf: memoryview, offset: int) -> int:
    """Fill `buf` from `offset` of the file: one preadv where the OS has it (Linux, macOS),
    else a seek and a read (the descriptor is this lookup's own)."""
    if _PREADV is not None:
        n: int = _PREADV(fd, [buf], offset)
        return n
    os.lseek(fd, offset, os.SEEK_SET)
    data = os.read(fd, buf.nbytes)
    buf.cast("B")[: len(data)] = data
    return len(data)


def table_lookup(manifest: Manifest, folder: Path, role: str = "decoder") -> TableLookup | None:
    """The lookup for graph `role` of an artifact whose manifest describes its table; None for
    a graph that looks its table up itself (older artifacts, float tables, optimum's graph)."""
    graph = manifest.graphs.get(role)
    entry = graph.extra.get("embedding") if graph is not None else None
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ArtifactError(f"{folder}: the manifest's embedding entry is not an object; re-export")
    return TableLookup(EmbeddingLayout.parse(entry, str(folder)), folder)
