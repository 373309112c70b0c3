"""OCR through Ocula's own session code: text rendered with Pillow must be read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.packaged import export_packaged
from runtime.engine.errors import ArtifactError, InputError
from runtime.engine.vision import Ocr, resize_bilinear

IMAGES = Path(__file__).parent / "data" / "images"


@pytest.fixture(scope="module")
def ocr(tmp_path_factory) -> Ocr:
    art = export_packaged("vision", tmp_path_factory.mktemp("art") / "vision")
    return Ocr.from_artifact(art)


@pytest.mark.parametrize("name", ["sign_en.png", "sign_zh.png", "label_mixed.png"])
def test_reads_english_and_chinese_text_exactly(ocr: Ocr, name: str) -> None:
    truth = json.loads((IMAGES / "images.json").read_text())[name]
    found = ocr.read(np.asarray(Image.open(IMAGES / name).convert("RGB")))
    assert [b.text for b in found] == truth
    assert all(b.score > 0.8 for b in found)


def test_boxes_cover_the_text_and_come_in_reading_order(ocr: Ocr) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mk", IMAGES / "make_images.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    img = mk.render([("LEFT", mk.LATIN, 40), ("BOTTOM LINE", mk.LATIN, 40)], size=(800, 260))
    d = np.asarray(img).copy()
    right = mk.render([("RIGHT", mk.LATIN, 40)], size=(300, 130))
    d[:130, 500:800] = np.asarray(right)
    found = ocr.read(d)
    assert [b.text for b in found] == ["LEFT", "RIGHT", "BOTTOM LINE"]
    ink = np.asarray(img.convert("L")) < 100  # every dark pixel of "LEFT" lies inside its box
    x0, y0, x1, y1 = found[0].box
    ys, xs = np.nonzero(ink[:120, :400])
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1


def test_one_step_per_model_run(ocr: Ocr) -> None:
    p = ocr.start(np.asarray(Image.open(IMAGES / "sign_en.png").convert("RGB")))
    steps = 1
    while p.step():
        steps += 1
    assert p.boxes is not None and steps == 1 + len(p.boxes)
    assert p.text == "EXIT 42 Platform B\nTrains to Central"


def test_blank_and_bad_frames(ocr: Ocr) -> None:
    assert ocr.read(np.full((200, 300, 3), 230, np.uint8)) == []
    with pytest.raises(InputError, match="RGB uint8"):
        ocr.start(np.zeros((100, 100), np.float32))
    with pytest.raises(InputError, match="too small"):
        ocr.start(np.zeros((4, 100, 3), np.uint8))


def test_wrong_artifact_kind_is_refused(tmp_path: Path) -> None:
    vad = export_packaged("vad", tmp_path / "vad")
    with pytest.raises(ArtifactError, match="'vad' artifact, but a 'vision' artifact"):
        Ocr.from_artifact(vad)


def test_bilinear_upscale_matches_pillow() -> None:
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ours = resize_bilinear(img, 48, 90)
    ref = np.asarray(
        Image.fromarray(img).resize((90, 48), Image.Resampling.BILINEAR), dtype=np.float32
    )
    assert np.abs(ours - ref).max() <= 1.0
