"""The synthetic event generator: deterministic, realistic personas, churn with visible precursors."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from chalicelib.errors import InputError
from chalicelib.scoring.events import EVENT_TYPES, TYPE_CODE, EventBatch
from churnguard_offline.generate import (
    PERSONAS,
    generate_events,
    simulate_population,
    user_id_for,
    write_event_log,
)

AS_OF = datetime(2024, 6, 30, tzinfo=UTC)
DAY = 86400.0


@pytest.fixture(scope="module")
def population():
    return simulate_population(6000, 365, 11, AS_OF)


@pytest.fixture(scope="module")
def purchases_population():
    return simulate_population(6000, 365, 11, AS_OF, kind="purchases")


def _batches_equal(a: EventBatch, b: EventBatch) -> bool:
    return (
        a.user_ids == b.user_ids
        and np.array_equal(a.user_index, b.user_index)
        and np.array_equal(a.time, b.time)
        and np.array_equal(a.type_code, b.type_code)
        and np.array_equal(a.value, b.value, equal_nan=True)
    )


def _churn_labels(batch: EventBatch, horizon_days: int = 30, lookback_days: int = 180):
    """Return (eligible users, churned flag) at cutoff = last horizon_days before as_of."""
    n = len(batch.user_ids)
    cutoff = AS_OF.timestamp() - horizon_days * DAY
    before = batch.time <= cutoff
    recent = before & (batch.time > cutoff - lookback_days * DAY)
    eligible = np.bincount(batch.user_index[recent], minlength=n) > 0
    after = np.bincount(batch.user_index[~before], minlength=n)
    return eligible, after == 0


def _counts(batch: EventBatch, first_day: float, last_day: float, code: int | None = None) -> np.ndarray:
    """Events per user with time in (as_of - first_day, as_of - last_day], optionally of one type."""
    end = AS_OF.timestamp()
    mask = (batch.time > end - first_day * DAY) & (batch.time <= end - last_day * DAY)
    if code is not None:
        mask &= batch.type_code == code
    return np.bincount(batch.user_index[mask], minlength=len(batch.user_ids))


def test_same_seed_gives_identical_events_and_another_seed_different_ones():
    first = generate_events(600, 60, 5, AS_OF)
    again = generate_events(600, 60, 5, AS_OF)
    other = generate_events(600, 60, 6, AS_OF)

    assert _batches_equal(first, again)
    assert not _batches_equal(first, other)


def test_every_event_falls_inside_the_window_even_for_a_naive_mid_day_as_of():
    as_of = datetime(2024, 3, 10, 17, 42, 9, 750000)  # naive means UTC
    batch = generate_events(800, 45, 3, as_of)

    end = as_of.replace(tzinfo=UTC).timestamp()
    assert len(batch) > 0
    assert batch.time.min() > end - 45 * DAY
    assert batch.time.max() <= end
    assert np.all(np.diff(batch.time) >= 0)
    assert np.all(batch.time == np.floor(batch.time))


def test_multi_kind_uses_every_event_type_with_values_where_they_belong(population):
    batch = population.batch
    names = {EVENT_TYPES[c] for c in np.unique(batch.type_code)}
    has_value = ~np.isnan(batch.value)

    assert names == set(EVENT_TYPES) - {"other"}
    for name in ("purchase", "refund", "session"):
        assert has_value[batch.type_code == TYPE_CODE[name]].all()
    assert not has_value[batch.type_code == TYPE_CODE["login"]].any()
    assert (batch.value[has_value] > 0).all()


def test_purchases_kind_holds_only_purchases_with_amounts_and_fewer_events(population, purchases_population):
    batch = purchases_population.batch

    assert set(np.unique(batch.type_code)) == {TYPE_CODE["purchase"]}
    assert (batch.value > 0).all()
    assert len(batch) < len(population.batch)


def test_every_persona_is_present_in_a_small_population():
    persona = simulate_population(500, 30, 2, AS_OF).persona

    assert set(np.unique(persona)) == set(range(len(PERSONAS)))


def test_user_ids_are_zero_padded_to_the_user_count_width():
    batch = simulate_population(1200, 10, 1, AS_OF).batch

    assert batch.user_ids[0] == "u0001"
    assert batch.user_ids[-1] == "u1200"
    assert user_id_for(0, 100_000) == "u000001"


def test_generate_events_keeps_only_users_that_have_events():
    batch = generate_events(1500, 5, 4, AS_OF)

    assert len(np.unique(batch.user_index)) == len(batch.user_ids)


@pytest.mark.parametrize("kind_fixture", ["population", "purchases_population"])
def test_some_but_not_all_recently_active_users_churn(kind_fixture, request):
    batch = request.getfixturevalue(kind_fixture).batch

    eligible, churned = _churn_labels(batch)
    rate = churned[eligible].mean()

    assert 0.15 < rate < 0.45


def test_churned_users_produce_no_events_after_leaving_and_some_say_goodbye(population):
    batch = population.batch
    churn_time = population.churn_time
    last = np.full(len(batch.user_ids), -np.inf)
    np.maximum.at(last, batch.user_index, batch.time)
    gone = np.isfinite(churn_time)
    unsubscribes = batch.type_code == TYPE_CODE["unsubscribe"]

    assert 0 < gone.sum() < len(gone)
    assert (last[gone] <= churn_time[gone]).all()
    assert unsubscribes.any()
    assert (batch.time[unsubscribes] == churn_time[batch.user_index[unsubscribes]]).all()


def test_some_silent_users_come_back(population):
    batch = population.batch
    order = np.lexsort((batch.time, batch.user_index))
    users, times = batch.user_index[order], batch.time[order]
    gaps = np.diff(times)[np.diff(users) == 0]

    assert (gaps > 45 * DAY).sum() > 50


def test_new_users_have_no_events_before_they_join(population):
    batch = population.batch
    first = np.full(len(batch.user_ids), np.inf)
    np.minimum.at(first, batch.user_index, batch.time)
    new = population.persona == PERSONAS.index("new")

    assert (population.join_time[new] > population.join_time.min()).any()
    assert (first[new] >= population.join_time[new]).all()


@pytest.mark.parametrize("kind_fixture", ["population", "purchases_population"])
def test_churners_fade_in_the_month_before_cutoff_relative_to_their_earlier_activity(kind_fixture, request):
    batch = request.getfixturevalue(kind_fixture).batch
    eligible, churned = _churn_labels(batch)
    last_month = _counts(batch, 60, 30)
    earlier_per_month = _counts(batch, 150, 60) / 3
    leaves, stays = eligible & churned, eligible & ~churned

    trend_leavers = last_month[leaves].sum() / earlier_per_month[leaves].sum()
    trend_stayers = last_month[stays].sum() / earlier_per_month[stays].sum()

    assert trend_leavers < 0.8 * trend_stayers


def test_churners_complain_more_and_still_active_ones_file_more_tickets(population):
    batch = population.batch
    eligible, churned = _churn_labels(batch)
    still_active = eligible & (_counts(batch, 60, 30) > 0)

    complaints = _counts(batch, 120, 30, TYPE_CODE["complaint"])
    tickets = _counts(batch, 60, 30, TYPE_CODE["support_ticket"])

    assert complaints[eligible & churned].mean() > 1.5 * complaints[eligible & ~churned].mean()
    assert tickets[still_active & churned].mean() > 1.25 * tickets[still_active & ~churned].mean()


def test_new_users_who_leave_quickly_explore_less_and_ask_for_help_more(population):
    batch = population.batch
    join = population.join_time[batch.user_index]
    first_month = (population.persona[batch.user_index] == PERSONAS.index("new")) & (batch.time < join + 30 * DAY)
    n = len(batch.user_ids)
    events = np.bincount(batch.user_index[first_month], minlength=n)
    tickets = np.bincount(batch.user_index[first_month & (batch.type_code == TYPE_CODE["support_ticket"])], minlength=n)
    features = np.bincount(batch.user_index[first_month & (batch.type_code == TYPE_CODE["feature_use"])], minlength=n)
    joined_early = (population.persona == PERSONAS.index("new")) & (
        population.join_time < AS_OF.timestamp() - 120 * DAY
    )
    left_soon = population.churn_time < population.join_time + 60 * DAY  # NaN compares false
    quick, settled = joined_early & left_soon & (events > 0), joined_early & ~left_soon & (events > 0)

    assert quick.sum() > 20
    assert tickets[quick].sum() / events[quick].sum() > 1.4 * tickets[settled].sum() / events[settled].sum()
    assert features[quick].sum() / events[quick].sum() < features[settled].sum() / events[settled].sum()


def test_price_sensitive_users_redeem_most_of_the_coupons(population):
    batch = population.batch
    coupons = np.bincount(
        batch.user_index[batch.type_code == TYPE_CODE["coupon_redeem"]], minlength=len(batch.user_ids)
    )
    price = population.persona == PERSONAS.index("price_sensitive")

    assert coupons[price].mean() > 3 * coupons[~price].mean()


def test_csv_round_trip_keeps_every_row_in_time_order(tmp_path):
    batch = generate_events(300, 20, 8, AS_OF)
    path = tmp_path / "events.csv"

    written = write_event_log(batch, path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    assert written == len(batch) == len(rows)
    assert list(rows[0]) == ["user_id", "event_time", "event_type", "value"]
    _assert_rows_match(rows, batch)


def test_jsonl_gz_round_trip_keeps_every_row_and_omits_missing_values(tmp_path):
    batch = generate_events(300, 20, 8, AS_OF)
    path = tmp_path / "events.jsonl.gz"

    written = write_event_log(batch, path)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]

    assert written == len(rows) == len(batch)
    assert any("value" not in row for row in rows)
    _assert_rows_match([{**row, "value": str(row.get("value", ""))} for row in rows], batch)


def test_csv_writer_quotes_user_ids_that_need_it_and_formats_values(tmp_path):
    batch = EventBatch(
        user_ids=['a,b "c"', "plain"],
        user_index=np.array([1, 0], dtype=np.int32),
        time=np.array([1_700_000_100.0, 1_700_000_000.0]),
        type_code=np.array([TYPE_CODE["purchase"], TYPE_CODE["session"]], dtype=np.int8),
        value=np.array([12.5, 30.0]),
    )
    path = tmp_path / "events.csv.gz"

    write_event_log(batch, path)
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))

    assert rows == [
        {"user_id": 'a,b "c"', "event_time": "2023-11-14T22:13:20Z", "event_type": "session", "value": "30"},
        {"user_id": "plain", "event_time": "2023-11-14T22:15:00Z", "event_type": "purchase", "value": "12.5"},
    ]


@pytest.mark.parametrize(("n_users", "days", "kind"), [(-1, 10, "multi"), (10, 0, "multi"), (10, 10, "streaming")])
def test_bad_arguments_are_rejected_as_input_errors(n_users, days, kind):
    with pytest.raises(InputError):
        generate_events(n_users, days, 1, AS_OF, kind=kind)


def test_zero_users_gives_an_empty_batch():
    assert len(generate_events(0, 10, 1, AS_OF)) == 0


def _assert_rows_match(rows: list[dict], batch: EventBatch) -> None:
    times = [datetime.strptime(r["event_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) for r in rows]
    assert [t.timestamp() for t in times] == batch.time.tolist()
    assert [r["user_id"] for r in rows] == [batch.user_ids[i] for i in batch.user_index]
    assert [r["event_type"] for r in rows] == [EVENT_TYPES[c] for c in batch.type_code]
    values = [float(r["value"]) if r["value"] else np.nan for r in rows]
    np.testing.assert_allclose(values, batch.value, atol=0.005)
