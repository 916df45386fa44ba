"""The Kinesis Producer Library's aggregation format, both ways: :mod:`kernel.kpl.encode` packs
(the producer), :mod:`kernel.kpl.decode` unpacks and filters by hash range (the consumer).

The wire format (``aggregation-format.md`` in awslabs' KPL)::

    magic F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;   // Tag { key = 1; value = 2; }
    }

Written by hand, both ways: three message types and two wire types do not justify a protobuf
dependency, and doing it ourselves bounds every length we read and every size we write.
"""

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_BYTES = 16
MAX_RECORD_BYTES = 1024 * 1024  # a Kinesis record: data plus partition key
