"""Shards: discovery, the lifecycle state machine, the reader and the per-shard consumer."""
