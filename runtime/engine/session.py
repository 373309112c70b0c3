"""One factory for onnxruntime sessions, configured from the board profile.

How it works: `open_session(model, profile)` builds `SessionOptions` from the board's facts and
opens the model file.

- Threads: intra-op threads = the big cluster's cores (or `threads=`), inter-op = 1 (the
  graphs are chains; a second pool only adds wake-ups). Sequential execution.
- Affinity: the calling thread is pinned to the big cluster's CPUs with `os.sched_setaffinity`
  and onnxruntime's worker threads with `session.intra_op_thread_affinities`, where the OS
  allows it (Linux, the CPUs exist and are in the process's allowed set). Otherwise one log
  line says why not, and threads float.
- Spinning: worker threads spin between ops for latency, except on battery boards, where
  `session.intra_op.allow_spinning` is off (spinning burns power while the loop waits).
- Memory: the CPU arena stays on (it reuses the same blocks every token), with the memory
  pattern planner; `arena_extend_strategy` is kSameAsRequested so the arena does not double.
- Optimized-model cache: nothing is ever written into an artifact folder (on a board it is
  read-only, and a cached graph is a second full copy of the weights). On first load the
  optimized graph goes to a cache folder outside it (`cache_dir`, else `$OCULA_CACHE_DIR`, else
  `$XDG_CACHE_HOME/ocula/graphs` or `~/.cache/ocula/graphs`; `OCULA_CACHE_DIR=off` turns it
  off) as `<where>.<name>.<key>.onnx`; later loads open it with graph optimizations off. The
  key covers the model's identity (its manifest sha256 when given, else size and mtime), the
  onnxruntime version, the machine and the optimization level, so a new artifact or runtime
  never reuses a stale graph; `<where>` (a hash of the model's folder) keeps models of
  different folders apart, and a new key evicts the old entries of the same model. An
  unwritable cache folder is logged and the session opens uncached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from runtime.engine.errors import ArtifactError, EngineUsageError
from runtime.profile import Profile

__all__ = ["SessionConfig", "big_cpus", "cache_dir", "open_session", "session_config"]

log = logging.getLogger(__name__)

CACHE_ENV = "OCULA_CACHE_DIR"
_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """What the factory decided; kept so tests and logs can show it."""

    threads: int
    cpus: tuple[int, ...]
    spinning: bool
    optimization: str
    cache: bool


def big_cpus(profile: Profile | None) -> tuple[int, ...]:
    """The CPU ids of the big cluster that this process may run on.

    Linux exposes each CPU's max frequency in sysfs; the CPUs with the highest one are the big
    cluster. Where sysfs says nothing (VMs, containers), the profile's cluster order is used
    (clusters numbered in the order the profile lists them), intersected with the allowed set.
    """
    allowed = _allowed_cpus()
    if not allowed:
        return ()
    freqs: dict[int, int] = {}
    for cpu in allowed:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
        try:
            freqs[cpu] = int(path.read_text().strip())
        except (OSError, ValueError):
            break
    else:
        top = max(freqs.values())
        return tuple(sorted(c for c, f in freqs.items() if f == top))
    if profile is None:
        return tuple(sorted(allowed))
    start = 0
    big = profile.cpu.big
    for cluster in profile.cpu.clusters:
        if cluster is big:
            break
        start += cluster.cores
    wanted = set(range(start, start + big.cores))
    picked = tuple(sorted(wanted & allowed))
    return picked or tuple(sorted(allowed))


def _allowed_cpus() -> set[int]:
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return set(range(os.cpu_count() or 1))
    return set(getter(0))


def session_config(
    profile: Profile | None,
    *,
    threads: int | None = None,
    optimization: str = "all",
    cache: bool = True,
) -> SessionConfig:
    """Decide threads, CPUs and spinning for `profile` (None: this host, all allowed CPUs)."""
    if threads is not None and not 1 <= threads <= 256:
        raise EngineUsageError(f"threads must be between 1 and 256, got {threads}")
    if optimization not in _LEVELS:
        raise EngineUsageError(
            f"unknown graph optimization level {optimization!r}; expected one of {list(_LEVELS)}"
        )
    cpus = big_cpus(profile)
    n = threads or max(1, len(cpus))
    battery = bool(profile and profile.power.battery)
    return SessionConfig(n, cpus, not battery, optimization, cache)


def open_session(
    model: str | Path,
    profile: Profile | None = None,
    *,
    threads: int | None = None,
    optimization: str = "all",
    cache: bool = True,
    identity: str | None = None,
    pin: bool = True,
    cache_folder: str | Path | None = None,
) -> ort.InferenceSession:
    """Open `model` with options from `profile`.

    `identity` is the file's sha256 from the artifact manifest, used as the cache key (cheaper
    and stronger than size and mtime). `pin=False` leaves the calling thread's affinity alone
    (for a process that runs other work on the little cores). `cache_folder`: where optimized
    graphs go (default `cache_dir()`); never the model's own folder.
    """
    path = Path(model)
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    folder = Path(cache_folder) if cache_folder is not None else cache_dir()
    if folder is not None and folder.resolve() == path.parent.resolve():
        raise EngineUsageError(
            f"{folder}: the optimized-graph cache cannot be the model's own folder (an "
            "artifact folder is never written to); choose another cache folder"
        )
    cache = cache and folder is not None
    cfg = session_config(profile, threads=threads, optimization=optimization, cache=cache)
    opts = _options(cfg, pin)
    target = path
    cached = _cache_path(path, cfg, identity, folder) if cache and folder is not None else None
    if cached is not None and cached.is_file():
        target = cached
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        log.debug("%s: loading the optimized graph cached at %s", path, cached)
    elif cached is not None and _prepare_cache(cached, path):
        opts.optimized_model_filepath = str(cached)
        # Weights go to one side file so the cached graph works for models over 2 GB too.
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", cached.name + ".data"
        )
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    try:
        return ort.InferenceSession(str(target), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        if target is not path:
            log.warning("%s: the cached graph failed to load (%s); rebuilding", cached, exc)
            _remove(target)
            return open_session(
                path, profile, threads=threads, optimization=optimization, cache=False, pin=pin
            )
        raise ArtifactError(
            f"{path}: onnxruntime cannot load this model ({str(exc).splitlines()[0][:300]}); "
            "re-export the artifact"
        ) from exc


def _options(cfg: SessionConfig, pin: bool) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _LEVELS[cfg.optimization]
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.spinning else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    _apply_affinity(opts, cfg, pin)
    return opts


def _apply_affinity(opts: ort.SessionOptions, cfg: SessionConfig, pin: bool) -> None:
    if not cfg.cpus:
        log.info("thread affinity: no CPU list available on %s; threads float", sys.platform)
        return
    setter = getattr(os, "sched_setaffinity", None)
    if setter is None:
        log.info("thread affinity: not supported on %s; threads float", sys.platform)
        return
    if pin:
        try:
            setter(0, set(cfg.cpus))
        except OSError as exc:
            log.info("thread affinity: the OS refused CPUs %s (%s); threads float", cfg.cpus, exc)
            return
    if cfg.threads > 1:
        # One entry per worker thread (the caller's thread is the first of the pool);
        # onnxruntime numbers processors from 1.
        workers = [cfg.cpus[(i + 1) % len(cfg.cpus)] + 1 for i in range(cfg.threads - 1)]
        opts.add_session_config_entry(
            "session.intra_op_thread_affinities", ";".join(str(c) for c in workers)
        )
    log.debug("thread affinity: %d threads on CPUs %s", cfg.threads, cfg.cpus)


def cache_dir() -> Path | None:
    """The optimized-graph cache folder: `$OCULA_CACHE_DIR` ("off": none), else the user's
    cache folder (`$XDG_CACHE_HOME` or `~/.cache`) / ocula / graphs."""
    said = os.environ.get(CACHE_ENV)
    if said is not None:
        return None if said.strip().lower() in ("", "off", "0", "none") else Path(said)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ocula" / "graphs"


def _model_prefix(path: Path) -> str:
    where = hashlib.sha256(str(path.resolve().parent).encode()).hexdigest()[:8]
    return f"{where}.{path.stem}"


def _cache_path(path: Path, cfg: SessionConfig, identity: str | None, folder: Path) -> Path | None:
    if cfg.optimization == "disable":
        return None
    if identity is None:
        st = path.stat()
        identity = f"{st.st_size}-{st.st_mtime_ns}"
    key = "|".join([identity, ort.__version__, platform.machine(), cfg.optimization])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return folder / f"{_model_prefix(path)}.{digest}.onnx"


def _prepare_cache(cached: Path, source: Path) -> bool:
    """Make the cache folder and drop stale entries for `source`; False when read-only."""
    folder = cached.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        log.info(
            "%s: cache folder not writable (%s); the optimized graph is not cached, loads "
            "stay slower",
            folder,
            exc.strerror or exc,
        )
        return False
    for old in folder.glob(f"{_model_prefix(source)}.*.onnx*"):
        if not old.name.startswith(cached.name):
            _remove(old)
    return True


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)
