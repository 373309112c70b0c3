"""The token lookup done by the runtime: rows of the quantized table read from the artifact.

A fused artifact whose manifest describes `graphs.decoder.extra["embedding"]` takes embeddings
(`inputs_embeds`, float32 [1, S, hidden]) instead of token ids. Its table (the bytes the tied
head's MatMulNBits chunks view in the external data file) is not a graph initializer, so
onnxruntime never maps it: a memory-mapped table becomes resident a page-cache folio (up to
2 MB) around every row looked up, which on real text is the whole table held a second time
beside the head's prepacked copy. Here each lookup reads only its rows, with `os.pread` at the
offsets the manifest records, and dequantizes them exactly as GatherBlockQuantized does:
`(code - zero_point) * scale` in float32 per block, codes unsigned, the low nibble first at 4
bits, the implicit zero point 2^(bits-1) (symmetric tables only), the padding past `hidden`
dropped. Greedy tokens are bit-identical to the in-graph lookup (tests/test_engine_llm.py).

The file stays open for the `TableLookup`'s life (a re-flash replaces the file, not its bytes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.engine.errors import ArtifactError
from runtime.manifest import Manifest

__all__ = ["EmbeddingLayout", "TableLookup", "table_lookup"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EmbeddingLayout:
    """Where the table is and how it is coded (the manifest's `embedding` entry)."""

    input: str  # the graph input that takes the embeddings
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
                input=str(entry["input"]),
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
    """`lookup(ids, out)`: the embeddings of `ids` written into `out` [len(ids), hidden]."""

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
        self._zero = np.float32(1 << (layout.bits - 1))
        self._codes = np.empty(layout.row_bytes * 8 // layout.bits, np.float32)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def lookup(self, ids: npt.NDArray[np.int64], out: F32) -> None:
        lay = self.layout
        width = lay.blocks * lay.block_size
        for i, token in enumerate(ids.tolist()):
            raw = os.pread(self._fd, lay.row_bytes, lay.weight_offset + token * lay.row_bytes)
            sc = os.pread(self._fd, lay.blocks * 4, lay.scales_offset + token * lay.blocks * 4)
            if len(raw) != lay.row_bytes or len(sc) != lay.blocks * 4:
                raise ArtifactError(f"{lay.file}: short read of embedding row {token}")
            codes = np.frombuffer(raw, np.uint8)
            row = self._codes
            if lay.bits == 8:
                row[:] = codes
            else:
                row[0::2] = codes & 0x0F
                row[1::2] = codes >> 4
            row -= self._zero
            blocks = row.reshape(lay.blocks, lay.block_size)
            blocks *= np.frombuffer(sc, np.float32)[:, None]
            out[i] = row[: lay.hidden] if width != lay.hidden else row


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
