"""ISO 8601 timestamps: the forms accepted, and the exact and vectorised parsers agreeing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.ingest import parse_timestamp
from chalicelib.ingest.timestamps import parse_times_vectorised, timestamp_us
from tests.unit.ingest.conftest import HEADER, MARCH_1, read, timestamps


@pytest.mark.parametrize(
    ("text", "seconds_after_march_1"),
    [
        ("2024-03-01", 0),
        ("2024-03-01T00:00:00", 0),
        ("2024-03-01 00:00:00", 0),
        ("2024-03-01T00:00:00Z", 0),
        ("2024-03-01T01:00:00+01:00", 0),
        ("2024-03-01T01:00:00+0100", 0),
        ("2024-03-01T01:00:00+01", 0),
        ("2024-02-29T18:30:00-05:30", 0),
        ("2024-03-01T00:00:00.25Z", 0.25),
        ("2024-03-01T00:00:00.123456789", 0.123456),
        ("2024-03-01T00:01", 60),
        ("2024-03-01t00:00:00z", 0),
        (" 2024-03-01T00:00:00Z ", 0),
    ],
)
def test_timestamps_in_iso_forms_are_converted_to_utc_epoch_seconds(text: str, seconds_after_march_1: float) -> None:
    # given one row with the timestamp in some ISO 8601 form
    result = read(HEADER + f"u1,{text},login,\n")

    # then it is read as UTC epoch seconds, the same as parse_timestamp gives
    assert result.events.time.tolist() == [MARCH_1 + seconds_after_march_1]
    assert parse_timestamp(text) == MARCH_1 + seconds_after_march_1


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2024-13-01", "2024-02-30", "2024-03-01T24:00:00", "2024-03-01T12:00:00+25:00", "2024", "now"],
)
def test_parse_timestamp_raises_value_error_on_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@settings(max_examples=200, deadline=None)
@given(stamped=timestamps())
def test_the_vectorised_parser_takes_every_common_form_and_agrees_with_the_exact_parser(
    stamped: tuple[str, float],
) -> None:
    # given an ISO timestamp in one of the forms uploads use
    text, seconds = stamped

    # when a chunk holding it is parsed in bulk
    micros, parsed = parse_times_vectorised([text, text])

    # then the fast path takes it, and gives the exact parser's microseconds
    assert parsed.tolist() == [True, True]
    assert micros.tolist() == [timestamp_us(text)] * 2
    assert micros[0] / 1e6 == seconds


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.text(st.sampled_from("0123456789-:T Zz+.,é"), max_size=40), max_size=20))
def test_whatever_the_vectorised_parser_takes_the_exact_parser_reads_the_same(texts: list[str]) -> None:
    # given any texts made of timestamp characters (mostly junk)
    micros, parsed = parse_times_vectorised(texts)

    # then every text the fast path accepts is one the exact parser accepts, with the same instant
    for text, taken, value in zip(texts, parsed.tolist(), micros.tolist(), strict=True):
        if taken:
            assert timestamp_us(text) == value


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1970-01-01T00:00:00.9999999Z", 999_999),
        ("1970-01-01T00:00:01,5", 1_500_000),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31", -86_400_000_000),
    ],
)
def test_fractions_are_truncated_to_microseconds_and_times_before_the_epoch_are_negative(
    text: str, micros: int
) -> None:
    assert timestamp_us(text) == micros
    parsed_micros, parsed = parse_times_vectorised([text])
    assert not parsed[0] or parsed_micros[0] == micros


def test_the_vectorised_parser_leaves_non_ascii_and_odd_forms_to_the_exact_parser() -> None:
    micros, parsed = parse_times_vectorised(
        ["2024-03-01T00:00:00Z", "２０２４-03-01", "2024-03-01T00:01", "2024-03-01T00:00:00."]
    )

    assert parsed.tolist() == [True, False, False, False]
    assert micros[0] == MARCH_1 * 1_000_000
