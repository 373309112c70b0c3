"""Render the test and demo images with Pillow (run from the repository root).

    .venv/bin/python tests/data/images/make_images.py

Each image has known text (written beside it in images.json) in DejaVu Sans or Noto Sans CJK,
black on a light background lit unevenly, like a photographed sign.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent
LATIN = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"

IMAGES = {
    "sign_en.png": [("EXIT 42 Platform B", LATIN, 40), ("Trains to Central", LATIN, 34)],
    "sign_zh.png": [("出口在左边", CJK, 44), ("请勿吸烟", CJK, 44)],
    "label_mixed.png": [("Green Tea 500ml", LATIN, 36), ("绿茶饮料", CJK, 40)],
}


def render(
    lines: list[tuple[str, str, int]], size: tuple[int, int] = (640, 320), seed: int = 0
) -> Image.Image:
    img = Image.new("RGB", size, (235, 232, 220))
    d = ImageDraw.Draw(img)
    y = 40
    for text, font, px in lines:
        f = ImageFont.truetype(font, px, index=2 if font.endswith(".ttc") else 0)
        d.text((40, y), text, fill=(20, 20, 20), font=f)
        y += int(px * 2.2)
    # uneven light across the sign (a gradient compresses well, unlike noise)
    shade = np.linspace(-25 - 5 * seed, 10, size[0])[None, :, None]
    return Image.fromarray(np.clip(np.asarray(img) + shade, 0, 255).astype(np.uint8))


def main() -> None:
    truth = {}
    for i, (name, lines) in enumerate(IMAGES.items()):
        render(lines, seed=i).save(HERE / name)
        truth[name] = [t for t, _, _ in lines]
    (HERE / "images.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
