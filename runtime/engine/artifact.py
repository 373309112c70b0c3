"""Open an artifact folder for an engine: manifest read, schema and files checked, kind matched.

Every engine starts here, so a newer schema, a corrupt file (sha256 mismatch) or the wrong kind
of artifact is one clear error before any session opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.engine.errors import ArtifactError
from runtime.manifest import Manifest, load_manifest

__all__ = ["Artifact", "open_artifact"]


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: Manifest

    def file(self, relpath: str) -> Path:
        return self.path / relpath

    def graph_file(self, role: str) -> tuple[Path, str]:
        """The path of graph `role` and its sha256 (the session cache key)."""
        graph = self.manifest.graphs.get(role)
        if graph is None:
            raise ArtifactError(
                f"{self.path}: the manifest has no graph {role!r} "
                f"(has: {', '.join(self.manifest.graphs) or 'none'}); re-export the artifact"
            )
        return self.path / graph.file, self.manifest.file(graph.file).sha256


def open_artifact(path: str | Path, kind: str, *, verify: bool = True) -> Artifact:
    """Read `path/manifest.json` and check it is a `kind` artifact whose files are intact."""
    folder = Path(path)
    manifest = load_manifest(folder, verify_files=verify)
    if manifest.kind != kind:
        raise ArtifactError(
            f"{folder}: this is a {manifest.kind!r} artifact, but a {kind!r} artifact is needed "
            f"here"
        )
    return Artifact(folder, manifest)
