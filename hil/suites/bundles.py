"""Small bundles the suites flash: a good one and one whose health check must fail."""

from __future__ import annotations

import json
from pathlib import Path

from board import bundle as bundles
from runtime.profile import Profile


def _identity_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)


def build(profile: Profile, out: Path, broken: bool = False, key: Path | None = None) -> Path:
    """A bundle with one tiny ONNX artifact; `broken` makes its model unloadable."""
    art = out.with_suffix(".art")
    art.mkdir(parents=True, exist_ok=True)
    if broken:
        (art / "model.onnx").write_bytes(b"this is not an ONNX graph")
    else:
        _identity_onnx(art / "model.onnx")
    (art / "manifest.json").write_text(json.dumps({"kind": "llm", "files": ["model.onnx"]}))
    bundles.build(profile, out, {"llm": art}, key=key)
    return out
