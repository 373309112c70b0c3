"""Board profiles shipped with Ocula, found by name.

`find(name)` accepts a profile name (`rpi5`) or a path to a TOML file, so users can keep
their own boards' profiles beside their projects.
"""

from __future__ import annotations

from pathlib import Path

from runtime.errors import ProfileError
from runtime.profile import Profile, load_profile

PROFILE_DIR = Path(__file__).parent

__all__ = ["PROFILE_DIR", "find", "names", "path_of"]


def names() -> list[str]:
    """The names of the shipped profiles, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def path_of(name: str) -> Path:
    """The file of a profile name or path; raises ProfileError naming the known profiles."""
    candidate = Path(name)
    if candidate.suffix == ".toml" or "/" in name:
        if not candidate.is_file():
            raise ProfileError(f"{name}: no such board profile file")
        return candidate
    path = PROFILE_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProfileError(
            f"unknown board {name!r}; known boards: {', '.join(names())} "
            "(or give the path to a profile .toml)"
        )
    return path


def find(name: str) -> Profile:
    """Load and validate a profile by name or path."""
    profile = load_profile(path_of(name))
    if profile.board.name != Path(profile.source).stem and "/" not in name:
        raise ProfileError(
            f"{profile.source}: board.name is {profile.board.name!r} but the file is named "
            f"{Path(profile.source).name}; make them agree"
        )
    return profile
