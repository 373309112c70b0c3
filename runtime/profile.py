"""Board profiles: what a board is, as data (design.md section 4).

A profile is a TOML file read with the stdlib `tomllib` and validated into frozen dataclasses.
The schema lives here, in the runtime, because the device reads the profile that its bundle
carries; `board/` finds profiles by name and shows them to people.

Rules the validator keeps:
- every section and key is declared below; an unknown key, a missing key, a wrong type or a
  value outside its declared range is an error that names the file, the key and what is
  expected, never a silent default;
- numbers carry their unit in the key name (`_mb`, `_mhz`, `_w`, `_gbs`, `_hz`); `_mb` is
  MiB (2^20 bytes), as the runtime counts RSS and every tool prints it;
- `board.estimates` lists the keys whose figures are estimates (public figures, not measured),
  each of which must name a real key, so that tools can mark them;
- the text is checked before `tomllib` sees it (runtime.textlimits): at most
  MAX_PROFILE_BYTES, nested at most 8 levels, numbers of at most 100 digits; `tomllib`
  recurses per level and `int()` refuses 4300 digits, neither with a ProfileError.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ProfileError
from runtime.textlimits import check_text, read_limited

__all__ = [
    "Audio",
    "Board",
    "Budget",
    "Camera",
    "Cluster",
    "Cpu",
    "Display",
    "Memory",
    "Objectives",
    "Power",
    "Profile",
    "Remote",
    "Serial",
    "Thermal",
    "load_profile",
    "parse_profile",
]


def _num(lo: float, hi: float, unit: str = "", default: Any = dataclasses.MISSING) -> Any:
    """A numeric field that must lie in [lo, hi]."""
    return field(default=default, metadata={"range": (lo, hi), "unit": unit})


def _choice(*options: str, default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"choices": options})


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    soc: str
    arch: str = _choice("aarch64", "x86_64", "armv7l")
    estimates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cluster:
    name: str
    core: str
    cores: int = _num(1, 64)
    max_mhz: int = _num(100, 6000, "MHz")


@dataclass(frozen=True)
class Cpu:
    clusters: tuple[Cluster, ...]

    @property
    def total_cores(self) -> int:
        return sum(c.cores for c in self.clusters)

    @property
    def big(self) -> Cluster:
        """The fastest cluster: where inference threads go."""
        return max(self.clusters, key=lambda c: (c.max_mhz, c.cores))


@dataclass(frozen=True)
class Memory:
    ram_mb: int = _num(64, 1 << 20, "MiB")
    flash_mb: int = _num(16, 1 << 24, "MiB")
    peak_bandwidth_gbs: float = _num(0.1, 2000, "GB/s")
    usable_bandwidth_gbs: float = _num(0.1, 2000, "GB/s")


@dataclass(frozen=True)
class Display:
    width: int = _num(0, 16384, "px")
    height: int = _num(0, 16384, "px")
    bits: int = _num(0, 32, "bits/pixel")
    colour: str = _choice("none", "mono-green", "mono", "rgb")
    refresh_hz: float = _num(0, 480, "Hz")
    interface: str = _choice("none", "virtual", "hdmi", "mipi-dsi", "spi", "fbdev")


@dataclass(frozen=True)
class Camera:
    width: int = _num(0, 16384, "px")
    height: int = _num(0, 16384, "px")
    fps: float = _num(0, 240, "frames/s")


@dataclass(frozen=True)
class Audio:
    rate: int = _num(8000, 192000, "Hz")
    channels: int = _num(1, 32)
    # The ALSA device the microphone is captured from.
    capture: str = "default"
    # An ALSA playback device looped back into `capture` (snd-aloop on an emulated board, a
    # cable on a rig): an injected clip is played into it and heard through the real capture
    # path. Empty: an injected clip is read as a file.
    loopback: str = ""


@dataclass(frozen=True)
class Serial:
    kind: str = _choice("uart", "usb-cdc", "pty", "virtio-console")
    baud: int = _num(0, 16_000_000, "baud")
    device: str = ""


@dataclass(frozen=True)
class Budget:
    max_artifact_mb: int = _num(1, 1 << 20, "MiB")
    max_rss_mb: int = _num(16, 1 << 20, "MiB")
    # The tokens an LLM's KV cache holds (prompt + new tokens) when a run does not say: the
    # cache is allocated for this many. Omitted: 2048.
    llm_max_tokens: int = field(default=2048, metadata={"range": (16, 1 << 20), "unit": "tokens"})


@dataclass(frozen=True)
class Power:
    battery: bool
    idle_w: float = _num(0, 500, "W")
    core_active_w: float = _num(0, 100, "W")
    display_w: float = _num(0, 100, "W")
    camera_w: float = _num(0, 100, "W")
    radio_w: float = _num(0, 100, "W")
    average_budget_w: float = _num(0.01, 1000, "W")
    burst_budget_w: float = _num(0.01, 1000, "W")


@dataclass(frozen=True)
class Thermal:
    limit_c: float = _num(30, 150, "°C")


@dataclass(frozen=True)
class Objectives:
    """Latency objectives the product holds each app to, in seconds (the HIL suites check them):
    speech end -> final caption on the display, speech end -> first translated characters on
    the display, camera frame -> answer on the display."""

    caption_s: float = _num(0.01, 600, "s")
    translation_s: float = _num(0.01, 600, "s")
    answer_s: float = _num(0.01, 600, "s")


@dataclass(frozen=True)
class Remote:
    """The hosted model the board uses when online (runtime/engine/remote): an
    OpenAI-compatible chat-completions endpoint. The API key lives in `key_file` on the board
    (its secrets), never in a profile or a bundle. Budgets: the first token must arrive within
    `first_token_s` and no gap between tokens may exceed `stall_s`, or the answer continues on
    the board's own model. `prefer` is where answers go while both are up: "remote" saves the
    board's CPU power, "local" saves radio energy, "auto" picks the cheaper by the power model."""

    endpoint: str
    model: str = ""
    key_file: str = ""
    ca_file: str = ""
    first_token_s: float = _num(0.05, 120, "s", default=1.5)
    stall_s: float = _num(0.05, 120, "s", default=2.0)
    prefer: str = _choice("remote", "local", "auto", default="remote")


@dataclass(frozen=True)
class Profile:
    board: Board
    cpu: Cpu
    memory: Memory
    display: Display
    camera: Camera
    audio: Audio
    serial: Serial
    budget: Budget
    power: Power
    thermal: Thermal
    objectives: Objectives
    remote: Remote | None = None
    source: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.board.name

    def is_estimate(self, key: str) -> bool:
        """Whether `key` ("section.field") is an estimate rather than a measured figure."""
        return key in self.board.estimates


MAX_PROFILE_BYTES = 64 << 10  # the shipped profiles are 2 kB

_SECTIONS = [f.name for f in dataclasses.fields(Profile) if f.name != "source"]


def load_profile(path: str | Path) -> Profile:
    """Read and validate the profile at `path`."""
    path = Path(path)
    try:
        raw = read_limited(
            path,
            MAX_PROFILE_BYTES,
            f"a board profile (MAX_PROFILE_BYTES, {MAX_PROFILE_BYTES >> 10} KiB)",
            ProfileError,
            "a profile is a short TOML file",
        )
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the board profile ({exc.strerror})") from exc
    return parse_profile(raw.decode("utf-8", errors="replace"), source=str(path))


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Validate TOML text into a Profile; errors name `source`, the key and the expectation."""
    check_text(text, source, _too_big, toml=True, max_bytes=MAX_PROFILE_BYTES, max_depth=8)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{source}: not valid TOML: {exc}") from exc
    except (RecursionError, ValueError) as exc:  # check_text should have caught it
        raise ProfileError(f"{source}: not a TOML profile this reader takes ({exc})") from exc
    values = _build(Profile, data, source, "", skip=frozenset({"source"}))
    profile = Profile(**values, source=source)
    _check_consistency(profile, source)
    return profile


def _too_big(message: str) -> ProfileError:
    return ProfileError(f"{message}: a board profile is a few flat tables of numbers")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a schema class (resolving them compiles; done once)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _build(
    cls: type, data: Any, source: str, where: str, skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    label = f"[{where}]" if where else "the top level"
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: {label}: expected a table, got {_kind(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProfileError(
            f"{source}: {label}: unknown key {unknown[0]!r}; expected one of: {', '.join(fields)}"
        )
    out: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is not dataclasses.MISSING:
                out[name] = f.default
                continue
            raise ProfileError(f"{source}: missing {_describe(key)}")
        out[name] = _convert(hints[name], data[name], f, source, key)
    return out


def _describe(key: str) -> str:
    section, _, name = key.rpartition(".")
    return f"key {name!r} in [{section}]" if section else f"section [{name}]"


def _convert(hint: Any, value: Any, f: dataclasses.Field[Any], source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is types.UnionType:  # an optional section: `X | None`
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint(**_build(hint, value, source, key))
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ProfileError(f"{source}: {key}: expected a list, got {_kind(value)}")
        if not value and dataclasses.is_dataclass(item):
            raise ProfileError(f"{source}: {key}: expected at least one entry")
        return tuple(_convert(item, v, f, source, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ProfileError(f"{source}: {key}: expected true or false, got {_kind(value)}")
        return value
    if hint in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if hint is int and not isinstance(value, int):
            ok = False
        if not ok:
            noun = "an integer" if hint is int else "a number"
            raise ProfileError(f"{source}: {key}: expected {noun}, got {_kind(value)}")
        lo, hi = f.metadata.get("range", (None, None))
        if lo is not None and not lo <= value <= hi:
            unit = f" {f.metadata['unit']}" if f.metadata.get("unit") else ""
            raise ProfileError(
                f"{source}: {key}: {value}{unit} is out of range; expected {lo} to {hi}{unit}"
            )
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProfileError(f"{source}: {key}: expected a string, got {_kind(value)}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ProfileError(
                f"{source}: {key}: {value!r} is not allowed; expected one of: {', '.join(choices)}"
            )
        return value
    raise TypeError(f"unsupported schema type for {key}: {hint}")  # pragma: no cover


def _section_type(name: str) -> Any:
    hint = _hints(Profile)[name]
    if typing.get_origin(hint) is types.UnionType:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return hint


def _kind(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    for t, name in names.items():
        if type(value) is t:
            return f"{name} ({value!r})" if t in (bool, int, float, str) else name
    return type(value).__name__


def _check_consistency(p: Profile, source: str) -> None:
    """Cross-field rules: figures that are each in range but cannot be true together."""
    problems = []
    if p.memory.usable_bandwidth_gbs > p.memory.peak_bandwidth_gbs:
        problems.append(
            "memory.usable_bandwidth_gbs is larger than memory.peak_bandwidth_gbs; "
            "usable bandwidth cannot exceed the peak"
        )
    if p.budget.max_rss_mb > p.memory.ram_mb:
        problems.append(
            f"budget.max_rss_mb ({p.budget.max_rss_mb} MiB) exceeds memory.ram_mb "
            f"({p.memory.ram_mb} MiB); the budget must fit in RAM"
        )
    if p.budget.max_artifact_mb > p.memory.flash_mb:
        problems.append(
            f"budget.max_artifact_mb ({p.budget.max_artifact_mb} MiB) exceeds memory.flash_mb "
            f"({p.memory.flash_mb} MiB); artifacts must fit in flash"
        )
    if p.power.burst_budget_w < p.power.average_budget_w:
        problems.append("power.burst_budget_w is below power.average_budget_w")
    if p.serial.kind == "uart" and p.serial.baud == 0:
        problems.append("serial.baud must be set for a UART (0 means USB CDC or a pty)")
    known = {f"{s}.{f.name}" for s in _SECTIONS for f in dataclasses.fields(_section_type(s))}
    for key in p.board.estimates:
        if key not in known:
            problems.append(f"board.estimates names {key!r}, which is not a profile key")
    if problems:
        raise ProfileError(f"{source}: {problems[0]}")
