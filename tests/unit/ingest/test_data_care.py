"""Errors that reach logs say where and why, never what the file or message held."""

from __future__ import annotations

import io
import pickle
import traceback

import pytest

from chalicelib.errors import InvalidMessageError, UnreadableFileError
from chalicelib.ingest import read_events
from chalicelib.retention.messages import build_message, validate_message
from chalicelib.retention.playbook import load_playbook


def _unreadable(data: bytes, source: str = "in.csv") -> UnreadableFileError:
    with pytest.raises(UnreadableFileError) as info:
        read_events(io.BytesIO(data), source)
    return info.value


def test_a_headerless_file_quotes_its_first_row_only_in_the_detail():
    # GIVEN a CSV whose first line is a row of behaviour, not a header
    error = _unreadable(b"zq-user-5521,2026-05-10T10:00:00Z,purchase,4242.42\n")

    # THEN the full text reads as before, quoting the row for the operator
    assert str(error) == (
        "in.csv:1: header lacks required column(s): user_id, event_time, event_type"
        " (found: zq-user-5521, 2026-05-10t10:00:00z, purchase, 4242.42)"
    )
    # AND the text for logs keeps where and why, without the row
    assert error.safe_message == "in.csv:1: header lacks required column(s): user_id, event_time, event_type"
    assert "zq-user-5521" in error.detail and "zq-user-5521" not in error.safe_message


def test_a_header_that_does_not_split_is_quoted_only_in_the_detail():
    error = _unreadable(b"zq-user-7731:2026-05-10:login\n")

    assert str(error) == (
        "in.csv:1: header lacks required column(s): user_id, event_time, event_type"
        " (the header 'zq-user-7731:2026-05-10:login' splits into a single column:"
        " the delimiter must be one of comma, semicolon, tab or |)"
    )
    assert "zq-user-7731" not in error.safe_message


@pytest.mark.parametrize(
    "data",
    [
        b"user_id,event_time,event_type,user_id\nu1,2026-05-10,login,u2\n",
        b'{"user_id": "zq-user-1", "event_time": "2026-05-10"}\n',
        b'[{"user_id": "zq-user-1"}]',
        b"PK\x03\x04" + bytes(100),
    ],
    ids=["duplicated_column", "json_like_header", "json_array", "zip"],
)
def test_reasons_that_quote_nothing_have_no_detail(data):
    error = _unreadable(data)

    assert error.detail is None
    assert str(error) == error.safe_message


def test_the_detail_survives_a_process_boundary():
    error = UnreadableFileError("f.csv", "header lacks required column(s): user_id", 1, "found: a, b")

    again = pickle.loads(pickle.dumps(error))

    assert (again.source, again.reason, again.line, again.detail) == ("f.csv", error.reason, 1, "found: a, b")
    assert str(again) == str(error) == "f.csv:1: header lacks required column(s): user_id (found: a, b)"
    assert again.safe_message == "f.csv:1: header lacks required column(s): user_id"


# ------------------------------------------------------------------------------------ retention messages


def _message(**over):
    args = dict(
        user_id="zq-secret-user-4411",
        risk_tier="high",
        value_tier="high",
        churn_probability=0.8,
        reasons=["inactivity"],
        action=load_playbook().choose("high", "high", ["inactivity"]),
        model_version="m1",
        as_of="2026-06-01T00:00:00Z",
        run_id="r1",
        source="s3://b/k",
        playbook_version="p1",
        content={"locale": "en", "text": "zq secret text for zq-secret-user-4411"},
        expires_at="2026-06-08T00:00:00Z",
        reason_label="zq secret reason",
        offer_label="zq secret offer",
    )
    args.update(over)
    return build_message(**args)


@pytest.mark.parametrize(
    ("fault", "where"),
    [
        ({"user_id": "zq-secret-user-4411" * 10}, "properties/user_id/maxLength ('maxLength' failed)"),
        (
            {"content": {"locale": "zq-secret-locale", "text": "zq secret text"}},
            "properties/locale/enum ('enum' failed)",
        ),
        ({"reasons": ["zq-secret-reason!"]}, "properties/reasons/items/pattern ('pattern' failed)"),
    ],
    ids=["user_id_too_long", "unknown_locale", "bad_reason_code"],
)
def test_a_message_that_breaks_the_schema_is_named_without_its_values(fault, where):
    # GIVEN a message with a value the schema refuses
    body = {**_message(), **fault}

    # WHEN it is validated
    with pytest.raises(InvalidMessageError) as info:
        validate_message(body)

    # THEN the error names the message, the schema path and the keyword
    assert str(info.value).startswith(f"retention message {body['message_id']} breaks ")
    assert str(info.value).endswith(where)
    # AND the traceback Lambda would log carries no value of the message, not even from a chained error
    logged = "".join(traceback.format_exception(info.value))
    assert "zq" not in logged
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_a_message_with_a_broken_id_is_not_named_by_it():
    body = {**_message(), "message_id": "zq-secret-user-4411"}

    with pytest.raises(InvalidMessageError, match=r"\(no valid message_id\) .* at properties/message_id/pattern"):
        validate_message(body)
