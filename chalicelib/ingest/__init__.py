"""Reading behaviour files: bytes, gzip and format sniffing, CSV and JSON Lines rows, validation, rejects."""

from chalicelib.ingest.reader import (
    DEFAULT_MAX_DECOMPRESSED_BYTES,
    REJECT_REASONS,
    ReadResult,
    RejectWriter,
    parse_timestamp,
    read_event_file,
    read_events,
)

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "REJECT_REASONS",
    "ReadResult",
    "RejectWriter",
    "parse_timestamp",
    "read_event_file",
    "read_events",
]
