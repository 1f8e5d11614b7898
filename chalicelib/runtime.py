"""Cached getters that app.py reaches the pipeline through: built once per Lambda container."""

from __future__ import annotations

from functools import lru_cache

from chalicelib.aws.bucket import BehaviourBucket
from chalicelib.aws.missed import MissedFileQueues
from chalicelib.aws.queues import RetentionQueues
from chalicelib.aws.risk_reads import RiskReads
from chalicelib.aws.tables import BehaviourTables
from chalicelib.aws.workflows import StateMachines
from chalicelib.lookup.service import RiskLookup
from chalicelib.retention.playbook import load_playbook
from chalicelib.retry import Backoff
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.pipeline import ScoringPipeline
from chalicelib.scoring.artifact import MODEL_CACHE
from chalicelib.scoring.scorer import Scorer
from chalicelib.settings import Settings, read_one


@lru_cache(maxsize=1)
def get_pipeline() -> ScoringPipeline:
    """Return the container's pipeline, built from the environment on first use."""
    return build_pipeline(Settings.from_env())


def build_pipeline(settings: Settings) -> ScoringPipeline:
    """Return a pipeline over the AWS adapters that `settings` name (the offline commands build their own)."""
    backoff = Backoff(settings.retry_base_delay_seconds, settings.retry_max_delay_seconds)
    return ScoringPipeline(
        settings=settings,
        bucket=BehaviourBucket.create(settings.behaviour_bucket),
        tables=BehaviourTables.create(
            settings.state_table,
            settings.risk_table,
            settings.write_concurrency,
            settings.retention_seconds,
            backoff,
            settings.ledger_retention_seconds,
        ),
        queues=RetentionQueues.create(settings.queues, backoff),
        scorer=Scorer(MODEL_CACHE.get(), load_playbook(settings.playbook_file)),
        backoff=backoff,
        workflows=StateMachines.create(settings.state_machines),
        missed=MissedFileQueues.create([settings.files_dead_letter_queue, settings.files_failed_queue]),
    )


@lru_cache(maxsize=1)
def get_lookup() -> RiskLookup:
    """Return the container's risk lookup (the API's): the risk table only, no model, no other store."""
    return RiskLookup(RiskReads.create(read_one("risk_table")))


def deadline(context: object) -> Deadline:
    """Return the time budget of one invocation, read from its Lambda context."""
    return Deadline.from_lambda_context(context, get_pipeline().settings.checkpoint_reserve_seconds)


def clear() -> None:
    """Drop the cached pipeline and model (a new environment, a new artifact, or a new moto mock)."""
    get_pipeline.cache_clear()
    get_lookup.cache_clear()
    load_playbook.cache_clear()
    MODEL_CACHE.clear()
