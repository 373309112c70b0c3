"""The streaming recognizer's commit policy (`Agreement`): what it commits from successive
hypotheses of one window. Tokens here are small ints; a token starts a word when it is even
(as a Whisper token whose text begins with a space), so word cuts are exercised too.

Properties, over any sequence of hypotheses: committed text is never taken back (each
hypothesis is decoded after the committed text, and what is committed is a prefix of what the
hypothesis says); a commit that no deadline forced is what two consecutive hypotheses agree
on, cut where a word starts, and only words a final heard to their utterance's end; words pending after a final (as many as later hypotheses still
say) are committed by the first hypothesis that heard `lag` samples more; `flush` commits the
rest.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.engine.asr_agree import Agreement

LAG = 100


def starts(t: int) -> bool:
    return t % 2 == 0


def words(tokens: list[int]) -> int:
    return sum(1 for i, t in enumerate(tokens) if i == 0 or starts(t))


hypotheses = st.lists(
    st.tuples(
        st.lists(st.integers(0, 5), max_size=12),  # the hypothesis' tokens
        st.integers(1, 80),  # audio it heard beyond the previous one
        st.booleans(),  # a final (the utterance ended)
    ),
    max_size=25,
)


@given(hypotheses)
@settings(max_examples=400, deadline=None)
def test_commits_are_prefixes_of_agreement_and_never_taken_back(
    hyps: list[tuple[list[int], int, bool]],
) -> None:
    a = Agreement(starts, LAG)
    committed: list[int] = []
    end = 0
    for tokens, more, final in hyps:
        end += more
        before, prev, owed, deadline = list(committed), list(a.pending), a.owed, a.deadline
        done = a.hypothesis(tokens, end, final)
        committed += done
        # the transcript so far is the committed text and this hypothesis, nothing taken back
        assert committed[: len(before)] == before
        assert committed + a.pending == before + tokens
        assert words(done) <= owed  # only ripe words
        if end < deadline:  # no deadline: only what both hypotheses say
            assert done == prev[: len(done)]
            if done and len(done) < len(tokens):
                assert starts(tokens[len(done)])  # cut where a word starts
    rest = list(a.pending)
    assert a.flush() == rest and a.pending == [] and a.owed == 0


@given(hypotheses)
@settings(max_examples=400, deadline=None)
def test_words_pending_after_a_final_are_committed_within_the_lag(
    hyps: list[tuple[list[int], int, bool]],
) -> None:
    a = Agreement(starts, LAG)
    end = 0
    due: tuple[int, int] | None = None  # (words still owed, deadline)
    for tokens, more, final in hyps:
        end += more
        done = a.hypothesis(tokens, end, final)
        if due is not None:
            owed, deadline = due
            owed -= words(done)
            if end >= deadline:
                # past the deadline the owed words went out (as many as this hypothesis had)
                assert owed <= 0 or len(done) == len(tokens)
                owed = 0
            # a later hypothesis with fewer words pending owes only those (the rest was noise)
            owed = min(owed, words(a.pending))
            due = (owed, deadline) if owed > 0 else None
        if final and a.pending:
            deadline = due[1] if due is not None else end + LAG
            due = (words(a.pending), min(deadline, end + LAG))
            assert a.deadline <= end + LAG


def test_only_words_a_final_heard_to_the_end_are_committed_on_agreement() -> None:
    a = Agreement(starts, LAG)
    # partials of an utterance in progress agree, but no final has heard its end: nothing
    assert a.hypothesis([2, 3, 4, 5], 10, False) == []
    assert a.hypothesis([2, 3, 4, 5, 6], 20, False) == []
    # the final: the first hypothesis to hear the utterance's end; its three words are ripe
    assert a.hypothesis([2, 3, 4, 7, 6], 30, True) == []
    assert a.owed == 3 and a.pending == [2, 3, 4, 7, 6]
    # a later hypothesis agrees on them (and on more): the three ripe words go out
    assert a.hypothesis([2, 3, 4, 7, 6, 8, 10], 40, False) == [2, 3, 4, 7, 6]
    assert a.owed == 0 and a.pending == [8, 10]
    # [8, 10] agreed on again, but no final has heard them to the end
    assert a.hypothesis([8, 10, 12], 50, False) == []
    # a disagreement cuts back to the last word start both share
    assert a.hypothesis([8, 10, 12], 60, True) == []
    assert a.hypothesis([8, 10, 13, 14], 70, False) == [8]


def test_a_final_is_committed_by_the_next_hypothesis_past_the_lag() -> None:
    a = Agreement(starts, LAG)
    assert a.hypothesis([2, 4, 6], 50, True) == []  # a final alone commits nothing
    assert a.owed == 3 and a.deadline == 50 + LAG
    # before the deadline and disagreeing: still pending
    assert a.hypothesis([8, 4, 6, 10], 120, False) == []
    # past it: the newer hypothesis' first three words go out although the two disagree
    assert a.hypothesis([2, 8, 6, 10, 12], 160, False) == [2, 8, 6]
    assert a.owed == 0 and a.pending == [10, 12]
    assert a.flush() == [10, 12] and a.pending == []
