"""Input bytes: gzip, the decompression limit, text checks, short reads, and format sniffing."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest import read_event_file, read_events
from chalicelib.ingest.stream import Blocks, decode, sniff_format
from tests.unit.ingest.conftest import HEADER, MARCH_1, ShortReadStream, read


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("upload-1234", HEADER + "u1,2024-03-01,login,\n"),
        ("upload-1234", '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"}\n'),
        ("events.jsonl.gz", '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"}\n'),
        ("events.csv.gz", HEADER + "u1,2024-03-01,login,\n"),
    ],
)
def test_gzip_is_detected_by_magic_bytes_and_format_by_inner_name_or_content(name: str, body: str) -> None:
    # given a gzip-compressed file, possibly with a name that says nothing
    data = gzip.compress(body.encode())

    # when it is read
    result = read(data, name)

    # then it is decompressed and parsed as what it contains
    assert result.rows_accepted == 1
    assert result.events.user_ids == ["u1"]


def test_explicit_format_wins_over_the_file_name() -> None:
    # given JSON Lines under a .csv name
    body = '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"}\n'

    # when the caller says it is JSON Lines
    result = read(body, "misnamed.csv", fmt="jsonl")

    # then it is read as JSON Lines
    assert result.events.user_ids == ["u1"]


def test_utf8_bom_and_crlf_line_endings_are_read_transparently() -> None:
    # given a file saved by a spreadsheet: BOM, CRLF, and a last line without a line break
    data = "\ufeffuser_id,event_time,event_type,value\r\nu1,2024-03-01,login,\r\nu2,2024-03-01,purchase,7"

    # when it is read
    result = read(data)

    # then the BOM is not part of the first column name and no field keeps a carriage return
    assert result.events.user_ids == ["u1", "u2"]
    assert result.events.value[1] == 7.0


def test_a_streaming_body_without_seek_and_with_short_reads_is_read_like_a_file() -> None:
    # given an S3-like body that returns a few bytes per read, gzip-compressed
    body = HEADER + "".join(f"user{i},2024-03-01T00:00:{i:02d}Z,login,\n" for i in range(50))
    stream = ShortReadStream(gzip.compress(body.encode()))

    # when it is read
    result = read_events(stream, "s3://bucket/incoming/delta")  # type: ignore[arg-type]

    # then nothing is lost
    assert result.rows_accepted == 50
    assert result.events.time[-1] == MARCH_1 + 49


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"user_id,event_time,event_type\n", b"\xef\xbb\xbf"])
def test_empty_file_blank_lines_and_header_only_yield_zero_rows(data: bytes) -> None:
    result = read(data)

    assert (result.rows_read, len(result.events), result.events.user_ids) == (0, 0, [])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04" + bytes(100), "zip"),
        (b"\x00\x01\x02\x03" * 100, "binary"),
        ("user_id,event_time,event_type\n".encode("utf-16"), "UTF-16"),
        (bytes(range(128, 256)) * 20, "binary"),
        (b'[{"user_id": "u1"}]', "JSON array"),
    ],
)
def test_content_that_is_not_csv_or_json_lines_raises(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableFileError, match=message):
        read(data, "upload.bin")


def test_truncated_gzip_raises_even_after_rows_were_read() -> None:
    # given a gzip file cut short, long enough that rows were decoded before the cut
    body = HEADER + "".join(f"user{i},2024-03-01T00:00:00Z,login,\n" for i in range(20000))
    data = gzip.compress(body.encode())[:-200]

    with pytest.raises(UnreadableFileError, match="truncated") as info:
        read(data, "events.csv.gz", chunk_rows=64)

    assert "after line" in info.value.reason


def test_corrupt_gzip_raises() -> None:
    data = bytearray(gzip.compress((HEADER + "u1,2024-03-01,login,\n" * 500).encode()))
    data[30:60] = b"\xff" * 30

    with pytest.raises(UnreadableFileError, match="gzip"):
        read(bytes(data), "events.csv.gz")


def test_a_gzip_bomb_stops_at_the_decompression_limit() -> None:
    # given a gzip file of 8 MiB of rows that compresses to a few KiB, read as a stream with short reads
    body = (HEADER + "u1,2024-03-01T00:00:00Z,login,\n" * 250_000).encode()
    data = gzip.compress(body)
    assert len(data) < len(body) // 100

    # when it is read with a limit of 1 MiB
    with pytest.raises(UnreadableFileError, match=r"decompresses to more than 1048576 bytes"):
        read_events(ShortReadStream(data, most=4096), "bomb.csv.gz", max_decompressed_bytes=1 << 20)  # type: ignore[arg-type]

    # then the same file is read whole under a limit it fits in
    result = read(data, "bomb.csv.gz", max_decompressed_bytes=len(body))
    assert result.rows_accepted == 250_000


def test_the_decompression_limit_does_not_apply_to_uncompressed_input(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "u1,2024-03-01,login,\n" * 100)

    assert read_event_file(path, max_decompressed_bytes=64).rows_accepted == 100
    with pytest.raises(ValueError, match="max_decompressed_bytes"):
        read(HEADER, max_decompressed_bytes=0)


@pytest.mark.parametrize(
    ("name", "first_line", "expected"),
    [
        ("events.csv", b'{"user_id": "u1"}', "csv"),
        ("EVENTS.TSV.GZ", b"user_id\tevent_time", "csv"),
        ("events.ndjson", b"user_id,event_time", "jsonl"),
        ("events.json.gz", b"", "jsonl"),
        ("upload-1234", b'  {"user_id": "u1"}', "jsonl"),
        ("upload-1234", b"[", "jsonl"),
        ("upload-1234", b"user_id,event_time,event_type", "csv"),
    ],
)
def test_the_format_is_the_one_the_name_implies_else_json_when_the_first_line_opens_json(
    name: str, first_line: bytes, expected: str
) -> None:
    assert sniff_format(name, first_line) == expected


def test_blocks_hand_out_whole_lines_with_the_number_of_their_first_line() -> None:
    # given a gzip stream read a few bytes at a time, in blocks smaller than the file
    body = b"".join(b"line %d\n" % i for i in range(1, 201)) + b"last"
    blocks = Blocks(ShortReadStream(gzip.compress(body), most=5), "s", block_bytes=64, max_inflated=1 << 20)  # type: ignore[arg-type]

    # when every block is taken
    taken = []
    while (block := blocks.next_block()) is not None:
        taken.append(block)

    # then blocks end at line ends, number their lines physically, and the last line gains its newline
    assert all(data.endswith(b"\n") for data, _ in taken)
    assert b"".join(data for data, _ in taken) == body + b"\n"
    assert [first for _, first in taken] == [1 + sum(d.count(b"\n") for d, _ in taken[:i]) for i in range(len(taken))]
    assert blocks.line == 201


def test_decode_marks_the_lines_holding_bytes_that_are_not_utf8() -> None:
    text, bad = decode(b"fine\nbad \xff\nfine \xc3\xa9\n\xfe\n")

    assert bad == [1, 3]
    assert text.split("\n")[2] == "fine é"
