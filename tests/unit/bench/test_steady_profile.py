"""The steady window's profile summary: folded stacks summed by function."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.steady_profile import report, top_functions

MAIN = "<module> (consumer/__main__.py:3);run (asyncio/runners.py:118)"
FOLDED = "\n".join(
    [
        f"{MAIN};to_item (consumer/feeds/telemax.py:48) 6",
        f"{MAIN};to_item (consumer/feeds/telemax.py:55) 2",
        f"{MAIN} 1",
        f"{MAIN};facts_of (consumer/insights/windows.py:90);<listcomp> (windows.py:94) 1",
    ]
)


def test_functions_rank_by_their_own_samples_with_their_callees_beside(tmp_path: Path) -> None:
    folded = tmp_path / "steady.folded"
    folded.write_text(FOLDED)
    rows = top_functions(folded, limit=3)
    assert rows == [
        (80.0, 80.0, "to_item (telemax.py)"),  # two lines of one function: one row
        (10.0, 100.0, "run (runners.py)"),
        (10.0, 10.0, "<listcomp> (windows.py)"),
    ]
    assert "80.0 |  80.0 | to_item (telemax.py)" in report(folded)


@pytest.mark.parametrize("text", ["", "garbage\n"])
def test_an_empty_profile_has_no_rows(tmp_path: Path, text: str) -> None:
    folded = tmp_path / "steady.folded"
    folded.write_text(text)
    assert top_functions(folded) == []
