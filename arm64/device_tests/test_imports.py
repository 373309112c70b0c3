"""Every runtime module imports on aarch64 with only the device's dependencies installed."""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys

DEVICE_PACKAGES = {"runtime", "numpy", "onnxruntime", "tokenizers"}


def test_this_is_aarch64(ctx) -> None:
    assert platform.machine() == "aarch64", platform.machine()
    import onnxruntime as ort

    em_aarch64 = 183  # ELF e_machine of the native libraries actually loaded
    natives = ["onnxruntime.capi.onnxruntime_pybind11_state", "numpy._core._multiarray_umath"]
    for native in [importlib.import_module(n).__file__ for n in natives]:
        with open(native, "rb") as f:
            header = f.read(20)
        assert header[:4] == b"\x7fELF", native
        assert int.from_bytes(header[18:20], "little") == em_aarch64, native
    assert ort.get_device() == "CPU"
    assert "CPUExecutionProvider" in ort.get_available_providers()


def test_every_runtime_module_imports(ctx) -> None:
    import runtime

    names = [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
    assert len(names) > 10, names
    broken = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # collect all, report all
            broken.append(f"{name}: {type(e).__name__}: {e}")
    assert not broken, "modules that do not import on the device:\n" + "\n".join(broken)


def test_nothing_but_stdlib_and_the_device_dependencies_is_loaded(ctx) -> None:
    import runtime

    for m in pkgutil.walk_packages(runtime.__path__, "runtime."):
        importlib.import_module(m.name)
    # sitecustomize: Debian's python3.11 ships one (it only adds its dist-packages paths).
    allowed = set(sys.stdlib_module_names) | DEVICE_PACKAGES | {"__main__", "sitecustomize"}
    here = os.path.dirname(os.path.abspath(__file__))
    ours = {
        n
        for n, m in sys.modules.items()
        if os.path.dirname(getattr(m, "__file__", None) or "") == here
    }
    # a Cython-compiled extension of a device package (numpy.random, once an engine seeds a
    # generator) registers Cython's own runtime modules
    cython = {n for n in sys.modules if n == "cython_runtime" or n.startswith("_cython_")}
    loaded = {name.split(".")[0] for name in sys.modules} - ours - cython
    assert loaded <= allowed, f"host-only modules loaded: {sorted(loaded - allowed)}"
