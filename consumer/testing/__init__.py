"""Test helpers that users and our own tests share: a fake clock, scriptable AWS answers, and
the lease table, the membership table and Kinesis in memory for in-process tests of the
concurrency core. Nothing here patches botocore; integration tests use real local endpoints
(see ``devkit.local``)."""

from consumer.testing.builders import (
    FakeClock,
    ScriptedPreparer,
    ScriptedWriter,
    client_error,
    kinesis_record,
    lease,
    reading,
)
from consumer.testing.kinesis import (
    FROM_STREAM,
    GET_RECORDS,
    GET_SHARD_ITERATOR,
    LIST_SHARDS,
    FakeKinesis,
    FakeShard,
    KinesisCall,
    ScriptStep,
    get_records_answer,
)
from consumer.testing.leases import ANSWER_LOST, LeaseTable, LeaseWrite
from consumer.testing.members import MemberTable

__all__ = [
    "ANSWER_LOST",
    "FROM_STREAM",
    "GET_RECORDS",
    "GET_SHARD_ITERATOR",
    "LIST_SHARDS",
    "FakeClock",
    "FakeKinesis",
    "FakeShard",
    "KinesisCall",
    "LeaseTable",
    "LeaseWrite",
    "MemberTable",
    "ScriptStep",
    "ScriptedPreparer",
    "ScriptedWriter",
    "client_error",
    "get_records_answer",
    "kinesis_record",
    "lease",
    "reading",
]
