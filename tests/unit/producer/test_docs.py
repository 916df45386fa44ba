"""The producer's documentation and code agree: every flag and metric is documented.

The producer section of README.md documents every flag and metric.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from producer.cli import parser
from producer.metrics import ProducerMetrics

ROOT = Path(__file__).parents[3]
DOCS = (ROOT / "README.md").read_text()


def flags(command: str) -> list[str]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[
        command
    ]
    return [
        option
        for action in sub._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


@pytest.mark.parametrize("command", ["generate", "tail"])
def test_every_flag_is_documented(command: str) -> None:
    missing = [flag for flag in flags(command) if f"`{flag}`" not in DOCS]
    assert not missing, f"{command}: {missing} not in the producer's documentation"


def test_every_metric_is_documented() -> None:
    for family in ProducerMetrics().registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        assert f"| `{family.name}{suffix}` |" in DOCS, family.name
