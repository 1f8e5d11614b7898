"""Fill an AWS endpoint (a local `moto_server`) with scored users, for `chalice local` and the risk lookup API.

Creates the dev stage's resources there (ensure_resources), lands a synthetic behaviour file and scores it with the
pipeline the S3 handler runs, then prints a few user ids of each tier pair to look up (docs/api.md):

    AWS_ENDPOINT_URL=http://127.0.0.1:5000 python scripts/seed_local.py --users 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib import runtime
from churnguard_offline.bootstrap import ensure_resources
from churnguard_offline.generate import generate_events, write_event_log

ROOT = Path(__file__).resolve().parent.parent


def stage_environment(stage: str) -> dict[str, str]:
    """Return the environment chalice gives the stage's functions (.chalice/config.json)."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="dev", help="the stage whose names to use (default dev)")
    parser.add_argument("--users", type=int, default=300, help="synthetic users to score (default 300)")
    args = parser.parse_args()
    if not os.environ.get("AWS_ENDPOINT_URL"):
        raise SystemExit("set AWS_ENDPOINT_URL to the local endpoint (moto_server): this script writes to it")
    os.environ.update({k: v for k, v in stage_environment(args.stage).items() if k not in os.environ})
    for name, value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    ensure_resources()
    as_of = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    pipeline = runtime.get_pipeline()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        write_event_log(generate_events(args.users, 365, 7, as_of), path)
        key = f"{pipeline.settings.incoming_prefix}local/events.csv"
        pipeline.bucket.client.put_object(Bucket=pipeline.settings.behaviour_bucket, Key=key, Body=path.read_bytes())
    summary = pipeline.process_object(key, None, as_of.timestamp())
    pairs: dict[str, list[str]] = defaultdict(list)
    page = runtime.get_lookup().page({"limit": "1000"})
    while True:
        for user in page.users:
            pairs[f"{user['risk_tier']}/{user['value_tier']}"].append(user["user_id"])
        if page.next is None:
            break
        page = runtime.get_lookup().page({"limit": "1000", "next": page.next})
    print(json.dumps({"users_scored": summary["users_scored"], "examples": {p: u[:3] for p, u in pairs.items()}}))


if __name__ == "__main__":
    main()
