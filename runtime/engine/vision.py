"""OCR with the PP-OCR det/rec ONNX models, in steps, pre- and post-processing in numpy.

How it works (`Ocr.start(image)` returns an `OcrPass`; each `step()` is one model run, so the
scheduler can put an ASR chunk between two of them):
1. Detection (one step): the RGB frame is scaled so its longer side is at most `det_max_side`
   (sides rounded to multiples of 32), fed as BGR normalized to [-1, 1] (PaddleOCR's training
   convention), and the DB probability map is thresholded (0.3) and dilated by one pixel.
   Connected regions are found by run-length labelling (8-connected); each region's
   axis-aligned box is kept if its mean probability reaches `box_thresh`, then grown by the DB
   "unclip" distance (area * ratio / perimeter) and scaled back to the frame. Boxes are read in
   lines, top to bottom, then left to right.
2. Recognition (one step per box): the crop is resized to height 48 (bilinear, aspect kept,
   width at least 320 as PaddleOCR pads it), normalized the same way, and the CTC output is
   decoded greedily: argmax per column, repeats merged, blanks (class 0) dropped; class i is
   the dictionary's line i-1 and the last class a space. The score is the mean top probability
   of the kept characters; text under `text_score` is dropped.
Boxes are axis-aligned (no rotated text, no direction classifier): signs and labels held
roughly level read correctly; text at a steep angle does not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from runtime.engine.artifact import open_artifact
from runtime.engine.errors import ArtifactError, EngineUsageError, InputError
from runtime.engine.session import open_session
from runtime.profile import Profile

__all__ = ["Ocr", "OcrPass", "TextBox", "resize_bilinear"]

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class TextBox:
    box: Box  # x0, y0, x1, y1 in frame pixels
    text: str
    score: float


@dataclass
class OcrParams:
    det_max_side: int = 960
    thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    min_size: int = 3
    rec_height: int = 48
    rec_min_width: int = 320
    rec_max_width: int = 1600
    text_score: float = 0.5


class Ocr:
    def __init__(
        self,
        det: ort.InferenceSession,
        rec: ort.InferenceSession,
        chars: list[str],
        params: OcrParams | None = None,
    ) -> None:
        self.det, self.rec = det, rec
        self.chars = chars
        self.params = params or OcrParams()
        self._det_in = det.get_inputs()[0].name
        self._rec_in = rec.get_inputs()[0].name
        classes = rec.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(chars) + 2:
            raise ArtifactError(
                f"recognizer has {classes} classes but the dictionary {len(chars)} characters "
                "(+ blank + space); the artifact's files do not belong together: re-export it"
            )

    @classmethod
    def from_artifact(
        cls, path: str | Path, profile: Profile | None = None, threads: int | None = None
    ) -> Ocr:
        art = open_artifact(path, "vision")
        det_path, det_sha = art.graph_file("det")
        rec_path, rec_sha = art.graph_file("rec")
        dict_name = str(art.manifest.extra.get("rec_dict", "rec_dict.txt"))
        try:
            lines = art.file(dict_name).read_text(encoding="utf-8").split("\n")
        except OSError as exc:
            raise ArtifactError(
                f"{art.path}: cannot read the recognizer dictionary {dict_name}"
            ) from exc
        if lines and lines[-1] == "":
            lines.pop()
        det = open_session(det_path, profile, threads=threads, identity=det_sha, pin=False)
        rec = open_session(rec_path, profile, threads=threads, identity=rec_sha, pin=False)
        return cls(det, rec, lines)

    def start(self, image: U8) -> OcrPass:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"OCR needs an RGB uint8 image (h, w, 3), got {img.dtype} {img.shape}")
        if min(img.shape[:2]) < 8:
            raise InputError(f"image of {img.shape[1]}x{img.shape[0]} pixels is too small to read")
        return OcrPass(self, img)

    def read(self, image: U8) -> list[TextBox]:
        """All the text in `image` (runs every step)."""
        p = self.start(image)
        while p.step():
            pass
        return p.result

    # -- the two models ------------------------------------------------------------------

    def detect(self, img: U8) -> list[Box]:
        p = self.params
        h, w = img.shape[:2]
        ratio = min(1.0, p.det_max_side / max(h, w))
        rh = max(32, round(h * ratio / 32) * 32)
        rw = max(32, round(w * ratio / 32) * 32)
        x = _normalize(resize_bilinear(img[:, :, ::-1], rh, rw))
        prob = self.det.run(None, {self._det_in: x[None]})[0][0, 0]
        mask = prob > p.thresh
        mask[1:, :] |= mask[:-1, :]  # 2x2 dilation, as PaddleOCR's use_dilation
        mask[:, 1:] |= mask[:, :-1]
        boxes = []
        sy, sx = h / rh, w / rw
        for y0, x0, y1, x1, score in _regions(mask, prob):
            bw, bh = x1 - x0, y1 - y0
            if min(bw, bh) < p.min_size or score < p.box_thresh:
                continue
            d = bw * bh * p.unclip_ratio / (2 * (bw + bh))
            boxes.append(
                (
                    max(0, math.floor((x0 - d) * sx)),
                    max(0, math.floor((y0 - d) * sy)),
                    min(w, math.ceil((x1 + d) * sx)),
                    min(h, math.ceil((y1 + d) * sy)),
                )
            )
        return _reading_order(boxes)

    def recognize(self, img: U8, box: Box) -> TextBox:
        p = self.params
        x0, y0, x1, y1 = box
        crop = img[y0:y1, x0:x1, ::-1]
        ch, cw = crop.shape[:2]
        width = min(p.rec_max_width, max(1, math.ceil(p.rec_height * cw / ch)))
        resized = _normalize(resize_bilinear(crop, p.rec_height, width))
        x = np.zeros((3, p.rec_height, max(p.rec_min_width, width)), dtype=np.float32)
        x[:, :, :width] = resized
        probs = self.rec.run(None, {self._rec_in: x[None]})[0][0]
        text, score = self._ctc(probs)
        return TextBox(box, text, score)

    def _ctc(self, probs: F32) -> tuple[str, float]:
        ids = probs.argmax(axis=1)
        top = probs.max(axis=1)
        keep = np.ones(len(ids), dtype=bool)
        keep[1:] = ids[1:] != ids[:-1]
        keep &= ids != 0
        out = []
        for i in ids[keep]:
            i = int(i)
            out.append(self.chars[i - 1] if i - 1 < len(self.chars) else " ")
        score = float(top[keep].mean()) if keep.any() else 0.0
        return "".join(out), score


@dataclass
class OcrPass:
    """One frame being read: detection first, then one recognition per box."""

    ocr: Ocr
    image: U8
    boxes: list[Box] | None = None
    result: list[TextBox] = field(default_factory=list)
    _next: int = 0

    @property
    def done(self) -> bool:
        return self.boxes is not None and self._next >= len(self.boxes)

    def step(self) -> bool:
        """Run one model; returns False once everything is read."""
        if self.boxes is None:
            self.boxes = self.ocr.detect(self.image)
            return bool(self.boxes)
        if self._next >= len(self.boxes):
            raise EngineUsageError("OcrPass.step() after the pass finished")
        tb = self.ocr.recognize(self.image, self.boxes[self._next])
        self._next += 1
        if tb.text.strip() and tb.score >= self.ocr.params.text_score:
            self.result.append(tb)
        return self._next < len(self.boxes)

    @property
    def text(self) -> str:
        return "\n".join(t.text for t in self.result)


def _normalize(img: F32 | U8) -> F32:
    x = np.asarray(img, dtype=np.float32) * (2.0 / 255.0) - 1.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_bilinear(img: U8, out_h: int, out_w: int) -> F32:
    """Bilinear resize with half-pixel centres (OpenCV's INTER_LINEAR convention), float32."""
    h, w = img.shape[:2]
    src = img.astype(np.float32)
    ys = np.clip((np.arange(out_h) + 0.5) * (h / out_h) - 0.5, 0, h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * (w / out_w) - 0.5, 0, w - 1)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = src[y0][:, x0] * (1 - fx) + src[y0][:, x1] * fx
    bottom = src[y1][:, x0] * (1 - fx) + src[y1][:, x1] * fx
    out: F32 = (top * (1 - fy) + bottom * fy).astype(np.float32)
    return out


def _regions(mask: npt.NDArray[np.bool_], prob: F32) -> list[tuple[int, int, int, int, float]]:
    """8-connected regions of `mask`: (y0, x0, y1, x1, mean prob), by run-length labelling."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    csum = np.zeros((h, w + 1), dtype=np.float64)
    csum[:, 1:] = np.cumsum(prob, axis=1)
    parent: list[int] = []
    runs: list[tuple[int, int, int]] = []  # row, start, end (exclusive)
    prev: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for y in range(h):
        starts = np.flatnonzero(edges[y] == 1)
        ends = np.flatnonzero(edges[y] == -1)
        cur = []
        j = 0
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            idx = len(runs)
            runs.append((y, s, e))
            parent.append(idx)
            while j < len(prev) and runs[prev[j]][2] < s:
                j += 1
            k = j
            while k < len(prev) and runs[prev[k]][1] <= e:
                a, b = find(idx), find(prev[k])
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
            cur.append(idx)
        prev = cur
    acc: dict[int, list[float]] = {}
    for i, (y, s, e) in enumerate(runs):
        r = find(i)
        region = acc.get(r)
        total = float(csum[y, e] - csum[y, s])
        if region is None:
            acc[r] = [y, s, y + 1, e, total, e - s]
        else:
            region[0], region[1] = min(region[0], y), min(region[1], s)
            region[2], region[3] = max(region[2], y + 1), max(region[3], e)
            region[4] += total
            region[5] += e - s
    return [(int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4] / a[5]) for a in acc.values()]


def _reading_order(boxes: list[Box]) -> list[Box]:
    """Top to bottom in lines (boxes whose vertical centres are within half a height), then left to right."""
    boxes = sorted(boxes, key=lambda b: (b[1] + b[3]) / 2)
    lines: list[list[Box]] = []
    for b in boxes:
        cy, bh = (b[1] + b[3]) / 2, b[3] - b[1]
        if lines:
            last = lines[-1][-1]
            if abs(cy - (last[1] + last[3]) / 2) < max(bh, last[3] - last[1]) / 2:
                lines[-1].append(b)
                continue
        lines.append([b])
    return [b for line in lines for b in sorted(line, key=lambda b: b[0])]
