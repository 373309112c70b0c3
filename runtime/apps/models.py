"""Which models a bundle holds, found by kind: the apps ask for "asr", "llm", "vision"...

`Models.scan(root)` reads every `*/manifest.json` under `root` (an installed bundle's artifact
folder, or a folder of exported artifacts on the host) and indexes them by kind; several LLMs
are tiers, ordered by size (the smallest is the governor's "smaller tier"). `need(kind, app)`
returns the folder or raises `MissingModel` naming the app, what it needs and how to add it.
Manifests are read without checking file hashes here; the engines check them when they open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runtime.apps.errors import MissingModel
from runtime.manifest import MANIFEST_NAME, ManifestError, load_manifest

__all__ = ["Models"]

FIX = {
    "llm": "ocula export llm SOURCE --out DIR (or ocula export random --preset tiny-qwen2)",
    "asr": "ocula export asr SOURCE --out DIR (or a tiny-whisper preset)",
    "vad": "ocula export vad --out DIR",
    "vision": "ocula export vision --out DIR",
}


@dataclass
class Models:
    root: Path
    by_kind: dict[str, list[Path]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, root: str | Path) -> Models:
        root = Path(root)
        found = cls(root)
        if not root.is_dir():
            found.problems.append(f"{root}: no such folder")
            return found
        sized: dict[str, list[tuple[int, Path]]] = {}
        for manifest in sorted(root.glob(f"*/{MANIFEST_NAME}")):
            try:
                m = load_manifest(manifest.parent, verify_files=False)
            except ManifestError as exc:
                found.problems.append(str(exc))
                continue
            sized.setdefault(m.kind, []).append((m.total_bytes, manifest.parent))
        found.by_kind = {k: [p for _, p in sorted(v)] for k, v in sized.items()}
        return found

    def get(self, kind: str) -> Path | None:
        paths = self.by_kind.get(kind)
        return paths[-1] if paths else None

    def smaller(self, kind: str) -> Path | None:
        """The smallest model of `kind` if there are several (a smaller tier), else None."""
        paths = self.by_kind.get(kind, [])
        return paths[0] if len(paths) > 1 else None

    def need(self, kind: str, app: str) -> Path:
        path = self.get(kind)
        if path is None:
            have = ", ".join(sorted(self.by_kind)) or "none"
            extra = f" ({'; '.join(self.problems)})" if self.problems else ""
            raise MissingModel(
                f"app {app!r} needs a {kind!r} model, but {self.root} has none (has: {have}){extra}; "
                f"add one ({FIX.get(kind, 'export it')}) and rebuild the bundle"
            )
        return path
