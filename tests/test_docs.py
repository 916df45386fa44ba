"""The README and the code agree: every option, flag and metric is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import OPTIONS
from consumer.metrics import Metrics

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.env)
def test_every_option_is_in_the_configuration_table(option: object) -> None:
    env, flag = option.env, option.flag  # type: ignore[attr-defined]
    default = option.default  # type: ignore[attr-defined]
    rows = [line for line in README.splitlines() if line.startswith(f"| `{env}` ")]
    assert rows, f"{env} missing from the README configuration table"
    assert f"`{flag}`" in rows[0]
    if default:  # the documented default is the one the code uses
        assert rows[0].split(" | ")[2] == f"`{default}`", (env, default)


def test_every_metric_is_in_the_metrics_table() -> None:
    for family in Metrics("s").registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        assert f"| `{family.name}{suffix}` |" in README, family.name
