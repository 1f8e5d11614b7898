"""JSON Lines rows: the same events as CSV, keys matched loosely, and each way a line can be wrong."""

from __future__ import annotations

import io

import numpy as np
import pytest

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest import read_events
from tests.unit.ingest.conftest import HEADER, read, reasons_by_line, rejects


def test_jsonl_rows_become_the_same_events_as_csv() -> None:
    # given the same events as CSV and as JSON Lines (numbers or strings as values, blank lines between)
    csv_text = HEADER + "u1,2024-03-01T00:00:00Z,login,\nu2,2024-03-01,purchase,12.5\nu1,2024-03-02,refund,-4\n"
    jsonl = (
        '{"user_id": "u1", "event_time": "2024-03-01T00:00:00Z", "event_type": "login", "value": null}\n'
        "\n"
        '{"user_id": "u2", "event_time": "2024-03-01", "event_type": "purchase", "value": 12.5}\n'
        '  {"user_id": "u1", "event_time": "2024-03-02", "event_type": "refund", "value": "-4"}  \r\n'
    )

    # when both are read
    from_csv, from_json = read(csv_text), read(jsonl, "events.jsonl")

    # then they hold the same events, and blank lines are not rows
    assert from_json.rows_read == 3
    assert from_json.events.user_ids == from_csv.events.user_ids
    for column in ("user_index", "time", "type_code", "value"):
        np.testing.assert_array_equal(getattr(from_json.events, column), getattr(from_csv.events, column))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "bad_json"),
        ('{"user_id": "u1", "event_time": "2024-03-01"', "bad_json"),
        ('["u1", "2024-03-01", "login"]', "bad_json"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"} trailing', "bad_json"),
        ('{"user_id": null, "event_time": "2024-03-01", "event_type": "login"}', "missing_user_id"),
        ('{"user_id": ["u1"], "event_time": "2024-03-01", "event_type": "login"}', "malformed_row"),
        ('{"user_id": "u1", "event_time": 1709251200, "event_type": "login"}', "bad_event_time"),
        ('{"user_id": "u1", "event_type": "login"}', "missing_event_time"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": 3}', "malformed_row"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": "purchase", "value": true}', "bad_value"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": "purchase", "value": NaN}', "nonfinite_value"),
        ('{"user_id": "\\udc80", "event_time": "2024-03-01", "event_type": "login"}', "bad_encoding"),
    ],
)
def test_each_bad_json_line_is_rejected_with_its_reason_and_line(line: str, reason: str) -> None:
    good = '{"user_id": "ok", "event_time": "2024-03-01", "event_type": "login"}\n'

    result = read(good + "\n" + line + "\n" + good, "events.ndjson")

    assert reasons_by_line(result) == {3: reason}
    assert result.rows_read == 3 and result.rows_accepted == 2


def test_json_keys_match_ignoring_case_and_integer_user_ids_become_strings() -> None:
    data = (
        '{"User_ID": 42, " Event_Time": "2024-03-01", "EVENT_TYPE": "purchase", "Value": 1}\n'
        '{"user_id": "u2", "event_time": "2024-03-01", "event_type": "purchase", "Value": 2, "shop": "x"}\n'
    )

    result = read(data, "e.jsonl")

    assert result.events.user_ids == ["42", "u2"]
    assert result.events.value.tolist() == [1.0, 2.0]


def test_json_lines_values_out_of_range_are_rejected_like_csv() -> None:
    data = '{"user_id": "u1", "event_time": "1960-01-01", "event_type": "login"}\n'
    data += '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "purchase", "value": 1e300}\n'

    result = read(data, "events.jsonl")

    assert reasons_by_line(result) == {1: "event_time_out_of_range", 2: "value_out_of_range"}


def test_json_lines_carry_a_locale_too():
    lines = (
        '{"user_id": "u1", "event_time": "2026-01-01", "event_type": "login", "locale": "zh-Hans"}\n'
        '{"user_id": "u2", "event_time": "2026-01-01", "event_type": "login", "locale": 5}\n'
    )
    result = read_events(io.BytesIO(lines.encode()), "events.jsonl")
    assert result.rows_accepted == 2
    assert {u: loc for u, (_, loc) in result.events.locales.items()} == {"u1": "zh-Hans"}


def test_loose_keys_and_fields_of_the_wrong_type_in_one_block_are_each_handled() -> None:
    # given, in one block, an object with look-alike keys, one with a list as its value, and a plain one
    data = (
        '{" User_Id ": "u1", "Event_Time": "2024-03-01", "event_type": "login", "VALUE": 3}\n'
        '{"user_id": "u2", "event_time": "2024-03-01", "event_type": "purchase", "value": [1]}\n'
        '{"user_id": "u3", "event_time": "2024-03-01", "event_type": "login"}\n'
    )

    # when it is read
    result = read(data, "e.jsonl")

    # then the look-alike keys are matched, and only the wrong type is rejected, its value shown as JSON
    assert result.events.user_ids == ["u1", "u3"]
    assert result.events.value[0] == 3.0
    [reject] = rejects(result)
    assert (reject["line"], reject["reason"], reject["value"]) == ("2", "bad_value", "[1]")
    assert reject["detail"] == "value is a JSON array; expected a number"


@pytest.mark.parametrize(
    ("data", "message"), [(b'{\n  "user_id": "u1"\n}\n', "pretty-printed"), (b"\n [\n", "JSON array")]
)
def test_a_json_document_rather_than_json_lines_is_unreadable(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableFileError, match=message):
        read(data, "events.jsonl")


@pytest.mark.parametrize(
    "poison",
    [
        "[" * 100_000 + "]" * 100_000,  # past the decoder's recursion limit
        " " + "[" * 100_000 + "]" * 100_000,  # the same after a leading space (the slower path)
        '{"a":' * 50_000 + "1" + "}" * 50_000,  # nested objects
    ],
)
def test_a_row_nested_too_deeply_to_decode_is_rejected_alone(poison: str) -> None:
    # GIVEN a JSON Lines file whose second row is nested deeper than Python's decoder can recurse
    row = '{"user_id": "u%d", "event_time": "2026-01-01", "event_type": "login"}'
    data = "\n".join([row % 1, poison, row % 2, ""]).encode()
    # WHEN it is read
    result = read_events(io.BytesIO(data), "deep.jsonl")
    # THEN that row alone is rejected as bad JSON, at its line, and the rows around it are read
    assert result.rows_read == 3 and result.rows_accepted == 2
    assert reasons_by_line(result) == {2: "bad_json"}
    assert list(result.events.user_ids) == ["u1", "u2"]
