"""Start-up checks retry what is transient and give up on the rest (kernel.aws.patiently)."""

from __future__ import annotations

import pytest

from consumer.testing import client_error
from kernel.aws import patiently

pytestmark = pytest.mark.looptime


class Script:
    def __init__(self, *steps: BaseException | str) -> None:
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


THROTTLED = client_error("ProvisionedThroughputExceededException")
MISSING = client_error("ResourceNotFoundException")


@pytest.mark.parametrize(
    ("steps", "calls", "outcome"),
    [
        pytest.param(["ok"], 1, "ok", id="first-time"),
        pytest.param([THROTTLED, THROTTLED, "ok"], 3, "ok", id="throttled-then-ok"),
        pytest.param([client_error("Boom", status=503), "ok"], 2, "ok", id="5xx-then-ok"),
        pytest.param([MISSING], 1, "ResourceNotFoundException", id="missing-at-once"),
        pytest.param([THROTTLED] * 6, 6, "ProvisionedThroughputExceededException", id="gives-up"),
    ],
)
async def test_patiently(steps: list[BaseException | str], calls: int, outcome: str) -> None:
    script = Script(*steps)
    try:
        result = await patiently(script)
    except Exception as exc:
        result = exc.response["Error"]["Code"]  # type: ignore[attr-defined]
    assert (script.calls, result) == (calls, outcome)
