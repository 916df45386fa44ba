"""Which AWS clients a run speaks through — the worker's and the Lambda handler's alike: the
lean clients when the whole AWS configuration is in the environment and its archive's bucket
is at an address we can reach (else aiobotocore's), and the lean path for the hot calls
(``GetRecords``, ``BatchWriteItem``) unless ``TELEMAX_FAST_PATH`` is false."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.config import Settings
from consumer.pipeline.table import BatchPreparer, BatchWriter, botocore_batch_writer
from kernel import logs
from kernel.aws import Clients, open_clients
from kernel.errors import ConfigError

if TYPE_CHECKING:
    from consumer.adapters.fastpath import FastPath
    from consumer.adapters.lean import Environment


@asynccontextmanager
async def run_clients(settings: Settings, pool: int) -> AsyncIterator[Clients]:
    """The lean clients — Kinesis (fan-out's registration too), DynamoDB, and as the run needs
    them SQS (``pool`` connections: its long polls hold theirs), the archive's S3 and the
    alerts' SNS — when the whole AWS configuration is in the environment and the archive's
    bucket is at an address we reach as botocore would; else aiobotocore's. Which, and why, is
    logged once they are open (a configuration error stays one line)."""
    from consumer.adapters.lean import environment_of, open_lean_clients

    found: Environment | str = "TELEMAX_FAST_PATH is false"
    if settings.fast_path:
        found = environment_of(os.environ, Path.home())
    if not isinstance(found, str) and settings.archive_bucket:
        from consumer.adapters.s3 import route_of

        route = route_of(found.s3_endpoint, found.region, settings.archive_bucket)
        found = route if isinstance(route, str) else found
    if isinstance(found, str):
        opened = open_clients(
            pool=pool,
            attempts=settings.aws_max_attempts,
            read_timeout=settings.aws_read_timeout_s,
            services=settings.services,
        )
    else:
        opened = open_lean_clients(
            found,
            read_timeout=settings.aws_read_timeout_s,
            attempts=settings.aws_max_attempts,
            services=settings.services,
            pool=pool,
        )
    async with opened as clients:
        why = {"why": found} if isinstance(found, str) else {}
        logs.get().info("aws_clients", lean=not why, **why)
        yield clients


async def fast_path_for(clients: Clients, settings: Settings, pool: int) -> FastPath | None:
    """The lean path for the hot calls, on the endpoints, region and roots ``clients``
    resolved (None when ``TELEMAX_FAST_PATH`` is false); the caller closes it."""
    if not settings.fast_path:
        return None
    from consumer.adapters import fastpath

    credentials = await clients.session.get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials found") from None
    return fastpath.create(
        credentials,
        kinesis_endpoint=clients.kinesis.meta.endpoint_url,
        dynamodb_endpoint=clients.dynamodb.meta.endpoint_url,
        region=clients.kinesis.meta.region_name,
        pool=pool,
        read_timeout=settings.aws_read_timeout_s,
        attempts=settings.aws_max_attempts,
        ca_bundle=clients.ca_bundle(),
    )


def records_writes(
    fast: FastPath | None, dynamodb: Any
) -> tuple[BatchWriter, BatchPreparer | None]:
    """The records' ``BatchWriteItem`` writer, and its preparer: the lean path's (requests
    prepared ahead) when there is one, else the generic ``dynamodb`` client's (none)."""
    if fast is None:
        return botocore_batch_writer(dynamodb), None
    return fast.dynamodb.batch_write, fast.dynamodb.preparer
