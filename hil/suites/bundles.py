"""Small bundles the suites flash: a good one and one whose health check must fail."""

from __future__ import annotations

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
    """A bundle with one tiny ONNX artifact (kind "vision"); with `broken` its model is garbage
    that the manifest vouches for: the bundle is valid, the health check cannot load it."""
    from runtime.manifest import Graph, Manifest, Quantization, Source, file_entry

    art = out.with_suffix(".art")
    art.mkdir(parents=True, exist_ok=True)
    if broken:
        (art / "model.onnx").write_bytes(b"this is not an ONNX graph" * 10)
    else:
        _identity_onnx(art / "model.onnx")
    Manifest(
        kind="vision",
        name="hil-probe",
        source=Source(id="hil-suite", format="random"),
        files=[file_entry(art, "model.onnx", "model")],
        graphs={
            "model": Graph(
                file="model.onnx", inputs=["x"], outputs=["y"], quantization=Quantization("fp32")
            )
        },
    ).write(art)
    bundles.build(profile, out, {"vision": art}, key=key)
    return out
