"""ChurnGuard handlers: wiring only. Each decodes its event and calls one function in chalicelib."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, S3Event
from chalice import BadRequestError, Chalice, IAMAuthorizer, NotFoundError

from chalicelib import runtime
from chalicelib.lookup.service import LookupInputError, UserNotFoundError
from chalicelib.observability import flush_metrics, logger
from chalicelib.settings import DEFAULT_FILES_QUEUE, DEFAULT_INCOMING_PREFIX, DEFAULT_SCHEDULE, DEFAULTS

app = Chalice(app_name="churnguard")
# The risk lookup's routes: callers sign their requests (SigV4) with an identity allowed execute-api:Invoke.
iam = IAMAuthorizer()


@app.middleware("all")
def observability(event: Any, get_response: Callable[[Any], Any]) -> Any:
    """Put the Lambda request id and function name on every log line of this invocation; publish its metrics."""
    context = getattr(event, "context", None)
    logger.append_keys(
        request_id=getattr(context, "aws_request_id", None),
        function_name=getattr(context, "function_name", None),
    )
    try:
        return get_response(event)
    finally:
        logger.remove_keys(["request_id", "function_name"])
        flush_metrics()


@app.on_s3_event(
    bucket=os.environ.get("BEHAVIOUR_BUCKET", "churnguard-behaviour-dev"),
    events=["s3:ObjectCreated:*"],
    prefix=os.environ.get("INCOMING_PREFIX", DEFAULT_INCOMING_PREFIX),
)
def on_behaviour_file(event: Any) -> list[dict[str, Any]]:
    """Merge each landed file into its users' state and re-score them.

    Near the end of its time a run checkpoints and raises RunInterrupted, so Lambda's retry continues it.
    """
    pipeline = runtime.get_pipeline()
    deadline = runtime.deadline(event.context)
    summaries = []
    for record in S3Event(event.to_dict()).records:
        obj = record.s3.get_object
        # Keys arrive URL-encoded (spaces as '+'); Powertools decodes only S3Event.object_key, the first record's.
        key = unquote_plus(obj.key)
        summaries.append(
            pipeline.process_object(key, obj.version_id, _epoch(record.get("eventTime")), deadline=deadline)
        )
    return summaries


@app.on_sqs_message(
    queue=os.environ.get("FILES_QUEUE", DEFAULT_FILES_QUEUE),
    batch_size=int(os.environ.get("FILES_BATCH_SIZE", DEFAULTS["files_batch_size"])),
    maximum_concurrency=int(os.environ.get("FILES_MAX_CONCURRENCY", DEFAULTS["files_max_concurrency"])),
)
def on_behaviour_queue(event: Any) -> dict[str, Any]:
    """Process a batch of the files queue (S3 notifications): each landed file as on_behaviour_file does.

    Returns the partial batch response: the messages to deliver again (in progress elsewhere, checkpointed, failed,
    or not started for lack of time); every other message is deleted.
    """
    return runtime.get_pipeline().process_queue_batch(event.to_dict(), runtime.deadline(event.context))


@app.schedule(os.environ.get("SCORING_SCHEDULE", DEFAULT_SCHEDULE))
def scheduled_scoring(event: Any) -> dict[str, Any]:
    """Re-score every known user as of the schedule's time, after processing missed files."""
    at = _epoch(EventBridgeEvent(event.to_dict()).get("time"))
    return runtime.get_pipeline().run_schedule(at=at, deadline=runtime.deadline(event.context))


# The backfill state machine's workers (infra/statemachines/backfill.asl.json): each gets a Task's input.
@app.lambda_function(name="backfill_split")
def backfill_split(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Cut a file too large for one invocation into ranges; return the keys of the maps' item lists."""
    return runtime.get_pipeline().backfill.split(event)


@app.lambda_function(name="backfill_range")
def backfill_range(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Validate one range of the file and write its events by shard; return its summary."""
    return runtime.get_pipeline().backfill.range(event)


@app.lambda_function(name="backfill_shard")
def backfill_shard(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Merge, score and deliver one shard's users; out of time it checkpoints and raises RunInterrupted."""
    return runtime.get_pipeline().backfill.shard(event, runtime.deadline(context))


@app.lambda_function(name="backfill_finish")
def backfill_finish(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Write the backfill's run record and ledger record from its children's summaries."""
    return runtime.get_pipeline().backfill.finish(event)


@app.lambda_function(name="schedule_plan")
def schedule_plan(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The schedule state machine's first step: sweep missed files, size the segments, write their list."""
    return runtime.get_pipeline().plan_schedule(event, deadline=runtime.deadline(context))


@app.lambda_function(name="schedule_segment")
def schedule_segment(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One child of the schedule's map: re-score one segment of the state table (RunInterrupted: invoke again)."""
    return runtime.get_pipeline().score_segment(event, deadline=runtime.deadline(context))


@app.lambda_function(name="schedule_finish")
def schedule_finish(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The schedule state machine's last step: the run's record, metrics and lift report from its segments'."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return runtime.get_pipeline().finish_schedule(event, None if remaining is None else lambda: remaining() / 1000.0)


@app.route("/users/{user_id}", methods=["GET"], authorizer=iam)
def get_user(user_id: str) -> dict[str, Any]:
    """One user's current risk: score, tiers, reasons, segment, last message, exposure and holdout (404: none)."""
    try:
        return runtime.get_lookup().user_at_path(user_id)
    except LookupInputError as exc:
        raise BadRequestError(str(exc)) from exc
    except UserNotFoundError as exc:
        raise NotFoundError(str(exc)) from exc


@app.route("/users", methods=["GET"], authorizer=iam)
def list_users() -> dict[str, Any]:
    """A page of the users of a tier pair (?risk_tier=&value_tier=&limit=&next=), with the next page's token."""
    try:
        return runtime.get_lookup().page(app.current_request.query_params).to_json()
    except LookupInputError as exc:
        raise BadRequestError(str(exc)) from exc


def _epoch(text: str | None) -> float | None:
    """Return an event's ISO 8601 time (a 'Z' suffix included) as epoch seconds; None when it has none."""
    return datetime.fromisoformat(text).timestamp() if text else None
