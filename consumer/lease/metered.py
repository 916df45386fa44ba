"""Requests to the lease and membership tables, counted with the capacity DynamoDB reports.

A thin wrapper around the DynamoDB client the repositories use: every item operation asks for
``ReturnConsumedCapacity=TOTAL`` and is counted by table and operation in
``telemax_lease_table_requests_total`` / ``telemax_lease_table_capacity_units_total``
(a refused condition is a request too; DynamoDB charges it, but its error carries no figure).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from consumer.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

ITEM_OPERATIONS = frozenset({"scan", "query", "get_item", "put_item", "update_item", "delete_item"})


class _Metered:
    def __init__(self, client: DynamoDBClient, metrics: Metrics, table: str) -> None:
        self._client = client
        self._requests = metrics.lease_table_requests
        self._capacity = metrics.lease_table_capacity
        self._table = table

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in ITEM_OPERATIONS:
            return method
        return self._wrap(name, method)

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Any:
        async def call(**kwargs: Any) -> Any:
            kwargs.setdefault("ReturnConsumedCapacity", "TOTAL")
            self._requests.labels(self._table, name).inc()
            answer = await method(**kwargs)
            consumed = answer.get("ConsumedCapacity") or {}
            units = consumed.get("CapacityUnits")
            if units:
                self._capacity.labels(self._table, name).inc(float(units))
            return answer

        return call


def metered(client: DynamoDBClient, metrics: Metrics | None, table: str) -> DynamoDBClient:
    """``client`` counting its item operations under ``table`` (``leases`` or ``members``)."""
    if metrics is None:
        return client
    return cast("DynamoDBClient", _Metered(client, metrics, table))
