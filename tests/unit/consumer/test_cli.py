"""The consumer's command line: what fails before any AWS call ends with one line."""

from __future__ import annotations

import sys

import pytest

from consumer.cli import main


def test_the_demo_without_the_development_kit_says_how_to_get_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image carries no devkit: ``demo`` there ends with one line, not a traceback."""
    monkeypatch.setitem(sys.modules, "devkit.demo", None)  # import of it raises ImportError
    assert main(["demo"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("telemax-consumer: error: the demo needs the development kit")
