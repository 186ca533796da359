"""Checkpoint I/O: header-only index, lazy one-tensor-at-a-time reads, streaming shard writes."""
