"""What the Lambda handler refuses to start with (one line, before any client)."""

from __future__ import annotations

import pytest

from consumer.config import Settings
from consumer.lambda_handler import Runtime
from kernel.errors import ConfigError


def test_an_archive_the_lambda_cannot_keep_stops_it_instead_of_leaving_a_gap() -> None:
    with pytest.raises(ConfigError, match="TELEMAX_ARCHIVE_BUCKET: the Lambda handler does not"):
        Runtime(Settings(archive_bucket="bucket", worker_id="w"))
