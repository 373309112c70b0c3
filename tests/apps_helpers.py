"""Shared set-up for the app tests: a models folder of tiny artifacts, a glyph atlas, a host."""

from __future__ import annotations

from pathlib import Path

from board import profiles
from export.packaged import export_packaged
from ocula.glyphatlas import build_atlas
from runtime.apps import AppOptions, Devices, Host, Models
from runtime.io.glyphs import GlyphAtlas
from runtime.sched import VirtualClock
from tests.artifacts import asr_artifact, llm_artifact


def models_dir(root: Path, kinds: tuple[str, ...] = ("llm", "vision", "vad", "asr")) -> Path:
    """A folder of artifacts, one subfolder per kind, as a bundle installs them."""
    root.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        target = root / kind
        if kind in ("vad", "vision"):
            export_packaged(kind, target)
        elif kind == "llm":
            target.symlink_to(llm_artifact("tiny-qwen2", quant="int4"))
        elif kind == "asr":
            target.symlink_to(asr_artifact("tiny-whisper", quant="int8"))
    return root


def atlas(tmp: Path) -> GlyphAtlas:
    return GlyphAtlas.load(build_atlas(tmp / "atlas.npz", 28))


def host(
    models: Path, devices: Devices, glyphs: GlyphAtlas, clock: VirtualClock | None = None, **opts
) -> Host:
    return Host(
        profiles.find("sim"),
        clock or VirtualClock(),
        devices,
        glyphs,
        Models.scan(models),
        AppOptions(**opts),
    )
