"""On moto: a re-score that changes nothing a consumer reads makes no write, and the re-score mark orders runs."""

from __future__ import annotations

import json

from chalicelib.aws.bucket import RESCORE_MARK_KEY
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline

HOUR = 3600.0


def test_an_hourly_schedule_skips_unchanged_risk_items_on_dynamodb(aws, small, tmp_path, no_sleep):
    # GIVEN a backfilled population on DynamoDB
    pipeline = make_pipeline(aws.settings)
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())
    before = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    # WHEN the schedule re-scores everyone an hour later, with no new event
    pipeline = make_pipeline(aws.settings)
    summary = pipeline.run_schedule(AS_OF.timestamp() + HOUR)
    # THEN the items it skipped are exactly as they were (numbers read back as Decimal compared right)
    after = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    kept = [u for u in after if after[u] == before[u]]
    skipped = summary["risk_writes_skipped"]
    assert skipped == len(kept) > len(small.user_ids) // 2
    assert summary["users_scored"] == len(small.user_ids)
    # AND it wrote only the others: one PutItem per item written
    assert pipeline.tables.calls["PutItem"] == len(small.user_ids) - skipped
    # AND the mark says when it began, where the stage's own policy lets every run read it
    assert json.loads(aws.get(RESCORE_MARK_KEY))["rescored_through"] == AS_OF.timestamp() + HOUR
    assert not aws.strict.refused
