"""Caption stability: words commit once stable; retractions are counted exactly."""

from __future__ import annotations

from runtime.apps.stabilize import Stabilizer, join, words


def test_words_commit_when_two_updates_agree() -> None:
    s = Stabilizer(agree=2)
    assert s.update("the quick") == ("", "the quick")
    assert s.update("the quick brown") == ("the quick", "brown")
    assert s.update("the quick brown fox") == ("the quick brown", "fox")
    assert s.retracted == 0
    assert s.final("the quick brown fox jumps") == "the quick brown fox jumps"
    assert s.retracted_committed == 0


def test_a_changed_tentative_word_is_one_retraction() -> None:
    s = Stabilizer(agree=2)
    s.update("the quack")
    s.update("the quick brown")  # "quack" was on screen and changed: 1 retraction
    assert s.retracted == 1
    s.update("the quick brown fox")
    s.update("the quick brown box")  # "fox" changed
    assert s.retracted == 2
    assert s.committed == ["the", "quick", "brown"]


def test_committed_words_never_change_on_screen_and_the_final_is_counted() -> None:
    s = Stabilizer(agree=2)
    s.update("turn on the")
    s.update("turn on the lights")
    committed, tentative = s.update("turn off the lights")  # the partial disagrees with "on"
    assert committed == "turn on the" and tentative == "lights"
    assert s.final("turn off the lights") == "turn off the lights"
    assert s.retracted_committed == 1


def test_chinese_is_stabilized_per_character() -> None:
    assert words("请打开 kitchen 灯") == ["请", "打", "开", "kitchen", "灯"]
    assert join(["请", "打", "开", "kitchen", "灯"]) == "请打开kitchen灯"
    s = Stabilizer(agree=2)
    s.update("请打")
    assert s.update("请打开") == ("请打", "开")


def test_agree_one_commits_everything_at_once() -> None:
    s = Stabilizer(agree=1)
    assert s.update("a b c") == ("a b c", "")
