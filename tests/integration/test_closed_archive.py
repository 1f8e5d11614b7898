"""The closed exposures' archive on S3 (moto, with the stage's IAM policy): conditional writes, and the schedule's
archiving end to end."""

from __future__ import annotations

import json

from chalicelib.aws.bucket import ARCHIVE_PREFIX, CLOSED_PREFIX
from chalicelib.retention.outcomes import distinct_exposures, exposure_from_item, lift_report
from chalicelib.scoring.events import SECONDS_PER_DAY
from churnguard_offline.cli import main
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline

T0 = AS_OF.timestamp()


def _exposure(user: str, day: str) -> dict:
    return {
        "user_id": user,
        "exposed_at": f"{day}T08:00:00Z",
        "group": "treated",
        "risk_tier": "high",
        "action": "winback_email",
        "returned_at": None,
    }


def test_a_days_archive_is_written_only_over_the_version_read(aws):
    bucket = make_pipeline(aws.settings).bucket
    day = "2026-06-01"
    one, two, three = (_exposure(u, day) for u in ("a", "b", "c"))
    # GIVEN no archive of the day: it reads as empty, and only a write over none lands
    assert bucket.archive_get(day) == ([], None)
    assert bucket.archive_put(day, [one], None)
    assert not bucket.archive_put(day, [two], None), "a second writer over none must lose"
    # WHEN one writer writes over the version it read
    current, version = bucket.archive_get(day)
    assert current == [one]
    assert bucket.archive_put(day, [one, two], version)
    # THEN a writer holding the older version loses, and the archive keeps what the winner wrote
    assert not bucket.archive_put(day, [one, three], version)
    assert bucket.archive_get(day)[0] == [one, two]
    assert list(bucket.archive_versions()) == [day]


def test_a_closed_file_is_deleted_only_as_read_and_one_gone_is_no_error(aws):
    # GIVEN a file of closed exposures read, then written again under the same key (a redo)
    bucket = make_pipeline(aws.settings).bucket
    assert bucket.makes_conditional_writes()
    bucket.closed_put("run-1", [_exposure("a", "2026-06-01")])
    (listed,) = list(bucket.closed_listed())
    read = bucket.closed_read(listed.key)
    bucket.closed_put("run-1", [dict(_exposure("a", "2026-06-01"), returned_at="2026-06-03T00:00:00Z")])
    # WHEN the archiver deletes what it read, THEN the newer version stays
    assert not bucket.closed_delete(read)
    assert bucket.closed_read(listed.key).exposures[0]["returned_at"] == "2026-06-03T00:00:00Z"
    # AND the newer one, read, is deleted; reading or deleting it again finds it gone, which is no error
    newer = bucket.closed_read(listed.key)
    assert bucket.closed_delete(newer)
    assert bucket.closed_read(listed.key) is None
    assert bucket.closed_delete(newer)
    assert list(bucket.closed_all()) == []
    # AND the listing goes on from after a key, in key order
    for run in ("run-2", "run-3", "run-4"):
        bucket.closed_put(run, [_exposure(run, "2026-06-02")])
    keys = [item.key for item in bucket.closed_listed()]
    assert [item.key for item in bucket.closed_listed(keys[0])] == keys[1:]
    assert bucket.archive_cursor_get() is None
    bucket.archive_cursor_put(keys[1])
    assert bucket.archive_cursor_get() == keys[1]


def test_the_schedule_archives_what_it_closed_and_its_report_counts_every_exposure_once(
    aws, population, tmp_path, no_sleep, capsys
):
    # GIVEN users exposed by a file, and a schedule after their cooldowns that exposes them anew
    pipeline = make_pipeline(aws.settings)
    aws.land("incoming/history.csv", csv_bytes(population, tmp_path))
    pipeline.process_object("incoming/history.csv", None, T0)
    first = {(i["user_id"], i["exposed_at"]) for i in aws.items(aws.settings.risk_table) if "exposed_at" in i}
    pipeline.run_schedule(T0 + 40 * SECONDS_PER_DAY)
    # THEN the exposures it replaced are in the archive, by day, and no file of them is left
    assert aws.keys(CLOSED_PREFIX) == []
    assert pipeline.bucket.archive_cursor_get() is None  # every file taken: the next run starts at the first
    archived = [e for key in aws.keys(ARCHIVE_PREFIX) for e in json.loads(aws.get(key))]
    replaced = {(e["user_id"], e["exposed_at"]) for e in archived}
    assert replaced and replaced <= first
    for key in aws.keys(ARCHIVE_PREFIX):
        day = key[len(ARCHIVE_PREFIX) : -len(".json")]
        assert all(e["exposed_at"].startswith(day) for e in json.loads(aws.get(key))), key
    # AND the report it wrote, and the command line's, count every exposure once, archived or current
    current = [exposure_from_item(i) for i in aws.items(aws.settings.risk_table) if "exposed_at" in i]
    at = T0 + 40 * SECONDS_PER_DAY
    want = lift_report(distinct_exposures([*archived, *current]), 30.0, at)
    assert json.loads(aws.get("reports/lift.json"))["rows"] == want["rows"]
    assert main(["report", "--as-of", "2026-07-11"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == want["rows"]


def test_saved_counts_match_the_archive_by_etag_so_a_second_report_reads_only_the_open_days(aws):
    from chalicelib.aws.bucket import ARCHIVE_COUNTS_KEY
    from chalicelib.runs.closed_archive import closed_for_report

    # GIVEN an archive of two settled days and one still open, on S3
    bucket = make_pipeline(aws.settings).bucket
    at = T0
    days = ["2026-04-01", "2026-04-02", AS_OF.strftime("%Y-%m-%d")]
    for day in days:
        assert bucket.archive_put(day, [_exposure(f"user-{day}", day)], None)
    gets: list[str] = []

    def count_get(params, **_):
        if params["Key"].startswith(ARCHIVE_PREFIX):
            gets.append(params["Key"])

    bucket.client.meta.events.register("provide-client-params.s3.GetObject", count_get)
    # WHEN a report counts it twice
    _, first = closed_for_report(bucket, 30.0, at, save=True)
    read_first = list(gets)
    _, second = closed_for_report(bucket, 30.0, at, save=True)
    # THEN the first reads every day, the second only the open one: S3's listing and its GET name one version alike
    assert len(read_first) == 3 and gets[3:] == [f"{ARCHIVE_PREFIX}{days[2]}.json"]
    assert first == second
    saved = json.loads(aws.get(ARCHIVE_COUNTS_KEY))
    assert set(saved["days"]) == set(days[:2])
    # AND a day written again is read again
    current, version = bucket.archive_get(days[0])
    assert bucket.archive_put(days[0], [*current, _exposure("late", days[0])], version)
    del gets[:]
    _, third = closed_for_report(bucket, 30.0, at, save=True)
    assert sorted(gets) == sorted([f"{ARCHIVE_PREFIX}{days[0]}.json", f"{ARCHIVE_PREFIX}{days[2]}.json"])
    assert (
        sum(g["lost"] for g in third["all\x1fall"].values()) == sum(g["lost"] for g in first["all\x1fall"].values()) + 1
    )
