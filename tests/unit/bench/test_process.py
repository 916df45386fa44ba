"""The bench's processes: a revision's tree exported to run its worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.process import export


def test_a_revision_is_exported_as_its_tree(tmp_path: Path) -> None:
    tree = export("HEAD", tmp_path / "reference")
    assert (tree / "consumer" / "__main__.py").is_file()


def test_a_revision_this_clone_does_not_hold_stops_the_bench_with_one_line(
    tmp_path: Path,
) -> None:
    with pytest.raises(SystemExit) as stopped:
        export("0" * 40, tmp_path / "reference")
    message = str(stopped.value)
    assert message.startswith(f"bench: cannot export revision '{'0' * 40}': ")
    assert "\n" not in message
