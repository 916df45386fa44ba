"""A bounded memo read a batch at a time: known keys looked up, new ones made together and
kept, the memo cleared (and the whole batch made anew) rather than overfilled."""

from __future__ import annotations

from consumer.insights.memo import each_known


def test_new_keys_are_made_together_once_and_kept() -> None:
    made: list[set[int]] = []

    def make(new: set[int]) -> dict[int, int]:
        made.append(new)
        return {key: key * 10 for key in new}

    known = {1: 10}
    assert each_known([1, 2, 3, 2], known, make, limit=10) == [10, 20, 30, 20]
    assert made == [{2, 3}]
    assert each_known([3, 1], known, make, limit=10) == [30, 10]
    assert made == [{2, 3}]  # every key known: nothing made
    assert known == {1: 10, 2: 20, 3: 30}


def test_a_batch_that_would_overfill_the_memo_clears_it_and_is_made_whole() -> None:
    known = {1: 10, 2: 20}
    found = each_known([2, 3, 4], known, lambda new: {k: k * 10 for k in new}, limit=3)
    assert found == [20, 30, 40]
    assert known == {2: 20, 3: 30, 4: 40}  # 1 dropped; 2, known before, made anew


def test_nothing_made_gives_none_and_keeps_nothing() -> None:
    known = {1: 10}
    assert each_known([1, 2], known, lambda new: None, limit=10) is None
    assert known == {1: 10}


def test_no_keys_give_no_values() -> None:
    assert each_known([], {}, lambda new: {}, limit=1) == []
