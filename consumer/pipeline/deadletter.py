"""Dead letters: records that can never be written, kept with where they came from and why.

Table layout: hash key ``shardId``, range key ``position`` (zero-padded sequence number and
sub-sequence number, so a shard's dead letters list in stream order). Writing the same record
twice rewrites the same item: replays stay idempotent.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from kernel.handlers import Item

KEY_NAMES = ("shardId", "position")
# Kinesis records can be larger than a DynamoDB item; keep a prefix and say so.
MAX_STORED_DATA = 300 * 1024
MAX_DETAIL = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence: int
    reason: str
    detail: str
    data: bytes
    partition_key: str = ""

    @property
    def position(self) -> str:
        return position_key(self.sequence_number, self.sub_sequence)

    def to_item(self, seen_at: datetime | None = None) -> Item:
        seen = (seen_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
        item: Item = {
            "shardId": {"S": self.shard_id},
            "position": {"S": self.position},
            "stream": {"S": self.stream},
            "sequenceNumber": {"S": self.sequence_number},
            "subSequenceNumber": {"N": str(self.sub_sequence)},
            "reason": {"S": self.reason},
            "detail": {"S": self.detail[:MAX_DETAIL] or "-"},
            "dataSize": {"N": str(len(self.data))},
            "seenAt": {"S": seen.replace("+00:00", "Z")},
        }
        if self.partition_key:
            item["partitionKey"] = {"S": self.partition_key}
        if self.data:  # DynamoDB rejects empty binary values
            item["data"] = {"B": self.data[:MAX_STORED_DATA]}
        if len(self.data) > MAX_STORED_DATA:
            item["dataTruncated"] = {"BOOL": True}
        return item


def position_key(sequence_number: str, sub_sequence: int) -> str:
    # Real sequence numbers are 56-digit decimal strings; pad so that they sort numerically.
    return f"{sequence_number:0>64}:{sub_sequence:06d}"
