"""Artifacts for models that PyPI packages ship as ONNX files: Silero VAD and PP-OCR.

`export_packaged("vad" | "vision", out, force)` copies the model files out of the installed
package's data folder into an artifact folder with its own manifest, so bundles carry them like
any exported model. The packages are located with `importlib.util.find_spec` and never imported:
their own imports pull torch (silero-vad) and OpenCV (rapidocr), which the host may not have.

- vad:    `silero_vad/data/silero_vad_op18_ifless.onnx` (the 16 kHz-and-8 kHz model without
          control flow: same outputs as `silero_vad.onnx`, measured 13% faster per frame here).
- vision: PP-OCRv4 det and rec, the mobile v2 direction classifier, and the recognizer's
          character list (stored by rapidocr in the rec model's metadata, `character`),
          written out as `rec_dict.txt` so the runtime needs no ONNX metadata parsing.

The folder is written beside `out` under a temporary name and renamed at the end, so an
interrupted export leaves `out` as it was.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from export.errors import ExportError
from runtime.manifest import (
    FileEntry,
    Graph,
    Manifest,
    ManifestError,
    Quantization,
    Source,
    file_entry,
    load_manifest,
    sha256_file,
)

__all__ = ["PACKAGES", "PackagedModelError", "export_packaged"]

log = logging.getLogger(__name__)

VAD_FILE = "silero_vad_op18_ifless.onnx"
OCR_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
PACKAGES = {"vad": "silero-vad", "vision": "rapidocr-onnxruntime"}


class PackagedModelError(ExportError):
    """A packaged model cannot be exported: package missing, files missing, bad target."""


def export_packaged(kind: str, out: Path, force: bool = False) -> Path:
    """Write the `kind` artifact into `out`; returns `out`."""
    if kind not in PACKAGES:
        raise PackagedModelError(
            f"unknown packaged model kind {kind!r}; expected one of {', '.join(PACKAGES)}"
        )
    out = Path(out)
    _check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _vad(tmp) if kind == "vad" else _vision(tmp)
        manifest.write(tmp)
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s artifact to %s", kind, out)
    return out


def _check_target(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise PackagedModelError(f"{out}: exists and is not a folder; choose another --out")
    if force:
        return
    if not any(out.iterdir()):
        return
    try:
        load_manifest(out, verify_files=False)
    except ManifestError:
        raise PackagedModelError(
            f"{out}: exists and is not an Ocula artifact; refusing to overwrite it "
            "(choose another --out, or pass --force)"
        ) from None
    raise PackagedModelError(f"{out}: an artifact is already there; pass --force to replace it")


def _package_dir(kind: str) -> Path:
    module = PACKAGES[kind].replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelError(
            f"the {PACKAGES[kind]} package is not installed; install only its model files with "
            f"'pip install --no-deps {PACKAGES[kind]}'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _version(kind: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(PACKAGES[kind])
    except metadata.PackageNotFoundError:
        return None


def _copy(src: Path, dst_dir: Path, name: str) -> None:
    if not src.is_file():
        raise PackagedModelError(
            f"{src}: missing from the installed package; reinstall it with "
            f"'pip install --force-reinstall --no-deps PACKAGE'"
        )
    shutil.copyfile(src, dst_dir / name)


def _graph(path: Path, name: str) -> Graph:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    floats = {k: v for k, v in ops.items() if k in ("MatMul", "Gemm", "Conv")}
    return Graph(
        file=name,
        inputs=[i.name for i in model.graph.input],
        outputs=[o.name for o in model.graph.output],
        quantization=Quantization(scheme="fp32", float_ops=floats),
    )


def _vad(tmp: Path) -> Manifest:
    src = _package_dir("vad") / "data" / VAD_FILE
    _copy(src, tmp, "vad.onnx")
    return Manifest(
        kind="vad",
        name="silero-vad",
        source=Source(
            id=f"pypi:silero-vad=={_version('vad')}/{VAD_FILE}",
            format="packaged",
            revision=_version("vad"),
            sha256=sha256_file(src),
        ),
        files=[file_entry(tmp, "vad.onnx", role="model")],
        graphs={"vad": _graph(tmp / "vad.onnx", "vad.onnx")},
        extra={
            "sample_rate": 16000,
            "frame_samples": 512,
            "context_samples": 64,
            "state_shape": [2, 1, 128],
        },
    )


def _vision(tmp: Path) -> Manifest:
    import onnx

    models = _package_dir("vision") / "models"
    files: list[FileEntry] = []
    graphs: dict[str, Graph] = {}
    for role, name in OCR_FILES.items():
        _copy(models / name, tmp, f"{role}.onnx")
        files.append(file_entry(tmp, f"{role}.onnx", role="model"))
        graphs[role] = _graph(tmp / f"{role}.onnx", f"{role}.onnx")
    rec = onnx.load(str(tmp / "rec.onnx"), load_external_data=False)
    meta = {p.key: p.value for p in rec.metadata_props}
    chars = meta.get("character")
    if not chars:
        raise PackagedModelError(
            f"{models / OCR_FILES['rec']}: no 'character' metadata; this rapidocr version "
            "keeps its dictionary elsewhere; install rapidocr-onnxruntime 1.3 or newer"
        )
    lines = chars.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    (tmp / "rec_dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files.append(file_entry(tmp, "rec_dict.txt", role="data"))
    extra: dict[str, Any] = {
        "rec_dict": "rec_dict.txt",
        "rec_dict_size": len(lines),
        "rec_classes": len(lines) + 2,  # CTC blank first, a space last (PaddleOCR's convention)
        "det": {"limit_side_len": 736, "mean": [0.5] * 3, "std": [0.5] * 3, "thresh": 0.3},
        "rec": {"image_shape": [3, 48, 320]},
        "cls": {"image_shape": [3, 48, 192], "labels": ["0", "180"], "thresh": 0.9},
    }
    return Manifest(
        kind="vision",
        name="pp-ocrv4",
        source=Source(
            id=f"pypi:rapidocr-onnxruntime=={_version('vision')}",
            format="packaged",
            revision=_version("vision"),
        ),
        files=files,
        graphs=graphs,
        extra=extra,
    )
