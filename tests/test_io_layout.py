"""Text on the glasses' display: line breaking, CJK rules, styles, reading-rate scroll, fallback."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocula.glyphatlas import build_atlas, find_fonts
from runtime.io.glyphs import GlyphAtlas
from runtime.io.layout import NO_END, NO_START, units, wrap
from runtime.io.screen import FINAL, PARTIAL, SOURCE, CaptionScreen
from runtime.telemetry.metrics import Metrics


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> GlyphAtlas:
    fonts = find_fonts()
    assert fonts["cjk"] is not None, "install the CJK font: apt-get install fonts-noto-cjk"
    return GlyphAtlas.load(build_atlas(tmp_path_factory.mktemp("g") / "a.npz", 28))


def test_words_wrap_at_spaces_within_the_width(atlas: GlyphAtlas) -> None:
    text = "The quick brown fox jumps over the lazy dog and keeps on running far away"
    lines = wrap(text, 448, atlas.measure)
    assert " ".join(lines) == text
    assert all(atlas.measure(line) <= 448 for line in lines)
    # greedy: the next word would not have fitted on each line
    for a, b in itertools.pairwise(lines):
        assert atlas.measure(a + " " + b.split()[0]) > 448


def test_cjk_breaks_between_characters_but_keeps_punctuation_rules(atlas: GlyphAtlas) -> None:
    text = "敏捷的棕色狐狸跳过了懒狗。请打开厨房的灯，谢谢！「你好」他说：（这是一个测试）。" * 3
    lines = wrap(text, 448, atlas.measure)
    assert "".join(lines) == text
    assert len(lines) > 3
    for line in lines:
        assert atlas.measure(line) <= 448 + atlas.size  # a glued closing mark may hang
        assert line[0] not in NO_START, line
        assert line[-1] not in NO_END, line


def test_mixed_text_and_overlong_words(atlas: GlyphAtlas) -> None:
    assert units("hello 世界。ok") == ["hello", " ", "世", "界。", "ok"]
    long = "x" * 200
    lines = wrap(long, 200, atlas.measure)
    assert "".join(lines) == long and all(atlas.measure(x) <= 200 for x in lines)
    assert wrap("a\nb", 400, atlas.measure) == ["a", "b"]


def test_partial_text_is_dimmer_than_final(atlas: GlyphAtlas) -> None:
    s = CaptionScreen(480, 640, atlas)
    s.commit("final words")
    s.set_partial("maybe words")
    frame, dirty = s.render(0.0)
    lh = atlas.line_height
    top = frame[16 : 16 + lh]
    second = frame[16 + lh : 16 + 2 * lh]
    assert top.max() == FINAL
    assert 0 < second.max() <= PARTIAL
    assert dirty is not None
    again, dirty2 = s.render(0.05)
    assert dirty2 is None and again is frame  # nothing changed: nothing to write


def test_scroll_waits_until_the_top_line_could_be_read(atlas: GlyphAtlas) -> None:
    m = Metrics()
    s = CaptionScreen(480, 32 + 4 * atlas.line_height, atlas, m, reading_cps=15.0, min_dwell_s=0.8)
    assert s.rows == 4
    for i in range(6):
        s.commit(f"line number {i} with some words")  # 30 characters: 2 s to read
    t = 0.0
    tops = []
    while t < 6.0:
        s.render(t)
        tops.append((t, s._top))
        t += 1 / 30
    changes = [t for (t, top), (_, prev) in zip(tops[1:], tops, strict=False) if top != prev]
    assert len(changes) == 2  # two lines overflowed; each left after its reading time
    dwell = s.dwell_s("line number 0 with some words")
    assert dwell == pytest.approx(29 / 15)
    assert changes[0] >= dwell - 1e-9
    assert changes[1] - changes[0] >= dwell - 1 / 30
    assert m.counter("display.scroll_jumps") == 0


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=list("ab cdefgh，。「」（）!?.\n") + list("你好世界今天"), max_size=200),
    width=st.integers(20, 460),
)
def test_wrap_lines_fit_and_break_greedily(atlas: GlyphAtlas, text: str, width: int) -> None:
    lines = wrap(text, width, atlas.measure)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    for i, line in enumerate(lines):
        # a line is only wider than the width if it is one character, or one glued unit
        # (a word with kinsoku punctuation), split where it must be
        assert atlas.measure(line) <= width or len(line) == 1 or " " not in line
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        first = units(nxt)[0] if nxt and units(nxt) else ""
        if first and first.strip() and line and "\n" not in text:
            # greedy: the next line's first unit would not have fit on this one (with the
            # space between them, if the text had one)
            assert atlas.measure(line + " " + first) > width


def test_a_long_run_of_streamed_paragraphs_keeps_every_line(atlas: GlyphAtlas) -> None:
    """Many paragraphs, each grown token by token (as translations stream), one giant
    unbreakable caption among them: the screen's lines are each paragraph's own wrap."""
    s = CaptionScreen(480, 640, atlas)
    rng = np.random.default_rng(0)
    words = ["字", "你好", "hello", "world,", "。", "captions"]
    for i in range(30):
        s.commit("<|reserved_19179|>" * 300 if i == 7 else f"caption {i}")
        s.commit("")
        for _ in range(40):
            s.append(str(rng.choice(words)))
            if rng.random() < 0.3:
                s.render(i + 0.01)
    width = 480 - 2 * s.margin
    expected = [line for p in s.paras for line in wrap(p.text, width, atlas.measure)]
    assert [line for line, _, _ in s.lines()] == expected
    frame, _ = s.render(100.0)
    assert frame.max() == 255


def test_a_flood_of_text_jumps_and_is_counted(atlas: GlyphAtlas) -> None:
    m = Metrics()
    s = CaptionScreen(480, 32 + 4 * atlas.line_height, atlas, m)
    s.render(0.0)
    for i in range(20):
        s.commit(f"flood {i}")
    s.render(0.1)
    assert m.counter("display.scroll_jumps") == 1
    assert s.lines()[s._top][0] == "flood 16"


def test_missing_glyphs_fall_back_to_boxes_and_are_said(tmp_path: Path, caplog) -> None:
    fonts = {**find_fonts(), "cjk": None}  # a system without a CJK font
    atlas = GlyphAtlas.load(build_atlas(tmp_path / "latin.npz", 24, fonts=fonts))
    assert atlas.meta["missing_scripts"] == ["CJK (Han)"]
    s = CaptionScreen(480, 640, atlas)
    s.commit("hello 你好")
    frame, _ = s.render(0.0)
    assert atlas.missing_by_script == {"CJK (Han)": 2}
    assert "no glyph for CJK (Han) text" in caplog.text and "fonts-noto-cjk" in caplog.text
    assert frame.max() > 0  # the Latin text and the boxes are drawn
    # a box is an outline: its centre is empty
    g = atlas.glyph("你")
    assert g.bitmap[0].max() > 0 and g.bitmap[g.bitmap.shape[0] // 2, g.bitmap.shape[1] // 2] == 0


def test_atlas_that_is_not_an_atlas_is_refused(tmp_path: Path) -> None:
    from runtime.io.errors import IoError

    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(IoError, match="not a glyph atlas"):
        GlyphAtlas.load(tmp_path / "bad.npz")
    assert np.load  # numpy loads atlases without pickle


def test_a_stream_keeps_to_its_paragraph_when_a_caption_arrives_meanwhile(
    atlas: GlyphAtlas,
) -> None:
    screen = CaptionScreen(480, 640, atlas)
    answer = screen.commit("", FINAL)
    screen.append("Le train ", answer)
    screen.commit("the next caption", SOURCE)  # another app commits while the answer streams
    screen.append("part du quai 4.", answer)
    assert [(p.text, p.level) for p in screen.paras] == [
        ("Le train part du quai 4.", FINAL),
        ("the next caption", SOURCE),
    ]
    lines = [line for line, _, _ in screen.lines()]
    assert lines[0].startswith("Le train part") and lines[-1] == "the next caption"
