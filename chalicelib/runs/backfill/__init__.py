"""A file too large for one invocation, on the backfill state machine (infra/statemachines/backfill.asl.json).

split (cuts.py: newline-aligned ranges) -> a Distributed Map over the ranges (each validated, its rejected rows
kept, its events written by shard of a hash of user_id: parts.py) -> a Distributed Map over the shards (each
merged, scored and delivered under the file's run id) -> finish (finish.py: the run record and the ledger).
routing.py says which files go there.
"""
