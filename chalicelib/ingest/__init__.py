"""Reading behaviour files: bytes, gzip and format sniffing, CSV and JSON Lines rows, validation, rejects."""

from __future__ import annotations

from chalicelib.ingest.reader import ReadResult, read_event_file, read_events
from chalicelib.ingest.rejects import REJECT_REASONS, RejectWriter
from chalicelib.ingest.stream import DEFAULT_MAX_DECOMPRESSED_BYTES
from chalicelib.ingest.timestamps import parse_timestamp

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "REJECT_REASONS",
    "ReadResult",
    "RejectWriter",
    "parse_timestamp",
    "read_event_file",
    "read_events",
]
