"""The key of the risk table's tier index: which tier pair a risk item is in, spread over a fixed number of shards.

At 10 M users a daily re-score writes about 4,000 risk items a second, most of them in one tier pair, and one
partition key value of a global secondary index takes at most 1,000 writes a second (a throttled index throttles
the base table's writes too). So the index key is `<risk>#<value>#<nn>`, the shard `nn` a hash of the user id:
one tier pair's writes spread over SHARDS partitions, and a listing reads the shards one after the other.

The key is derived from the tiers and the user id alone, so it changes exactly when a tier does: the schedule's
skip of unchanged risk writes (runs/chunk.py) compares the tiers, and the key can never go stale.
"""

from __future__ import annotations

import hashlib

# The index (bootstrap, infra/churnguard.tf.json) and the risk item's attribute it is keyed on.
INDEX_NAME = "by_tier"
KEY_ATTRIBUTE = "tier_shard"
# Fixed for the life of a table: changing it means rewriting every risk item's key. 16 shards take 16,000
# writes a second for one tier pair, four times the 10 M-user schedule's whole rate.
SHARDS = 16
TIERS = ("high", "medium", "low")


def shard_of(user_id: str) -> int:
    """Return the shard of a user (stable across runs, processes and Python versions)."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:4], "big") % SHARDS


def tier_key(risk_tier: str, value_tier: str, user_id: str) -> str:
    """Return the index key of a user's risk item."""
    return f"{risk_tier}#{value_tier}#{shard_of(user_id):02d}"


def keys_of(risk_tiers: tuple[str, ...], value_tiers: tuple[str, ...]) -> list[str]:
    """Return every index key of the given tier pairs, in the order a listing reads them."""
    return [f"{r}#{v}#{s:02d}" for r in risk_tiers for v in value_tiers for s in range(SHARDS)]
