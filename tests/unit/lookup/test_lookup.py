"""The risk lookup on the in-memory reader: what a user's view shows and hides, and listings page by page."""

from __future__ import annotations

import base64
import json
from collections import Counter
from decimal import Decimal

import pytest

from chalicelib.lookup import paging
from chalicelib.lookup.service import MAX_LIMIT, MAX_QUERIES_PER_PAGE, LookupInputError, RiskLookup, UserNotFoundError
from chalicelib.lookup.tier_index import KEY_ATTRIBUTE, SHARDS, TIERS, shard_of, tier_key
from chalicelib.runs.chunk import risk_item, unchanged
from tests.fakes import FakeRiskReads

NOW = 1_780_000_000.0
# What a view must never show: the state, versions, claim bookkeeping, which run wrote the item.
INTERNAL = {
    "state",
    "state_version",
    "applied_runs",
    "risk_version",
    "scored_state_version",
    "playbook_version",
    "run_id",
    "source",
    "contact_ids",
    "contact_run_id",
    "contact_claimed_at",
    "expires_at",
    KEY_ATTRIBUTE,
}


def item(uid: str, risk: str = "high", value: str = "high", **extra) -> dict:
    """A risk item as the chunk writes it, with the bookkeeping a view must never show."""
    stored = {
        "user_id": uid,
        "as_of": "2026-06-01T00:00:00Z",
        "scored_at": "2026-06-01T00:05:00Z",
        "churn_probability": Decimal("0.8125"),
        "risk_tier": risk,
        "value_tier": value,
        "reasons": ["recency_up", "sessions_down"],
        "action": "winback_offer",
        "model_version": "m-1",
        "rfm_segment": "at_risk",
        "activity_cluster": "low",
        "holdout": False,
        "run_id": "obj-1",
        "source": "s3://b/k",
        "risk_version": 3,
        "scored_state_version": 2,
        "playbook_version": "p-1",
        "contact_ids": ["m-id"],
        "contact_run_id": "obj-1",
        "contact_claimed_at": "2026-06-01T00:05:00Z",
        "state": b"\x00" * 64,
        "state_version": 2,
        "expires_at": int(NOW) + 86400,
        KEY_ATTRIBUTE: tier_key(risk, value, uid),
    }
    stored.update(extra)
    return stored


def lookup_of(items: list[dict], page_items: int = 1000) -> tuple[RiskLookup, FakeRiskReads]:
    reader = FakeRiskReads({i["user_id"]: i for i in items}, page_items)
    return RiskLookup(reader, clock=lambda: NOW), reader


def every_page(lookup: RiskLookup, **params: str) -> list[list[dict]]:
    """Follow the `next` tokens of a listing to its end; return each page's users."""
    pages, token = [], None
    while True:
        query = {**params, **({"next": token} if token else {})}
        page = lookup.page(query)
        pages.append(page.users)
        token = page.next
        if token is None:
            return pages


# ---- one user --------------------------------------------------------------------------------------------
def test_a_scored_user_is_shown_with_score_tiers_reasons_segment_message_and_exposure_but_no_internals():
    # GIVEN a risk item with a sent message and a holdout exposure
    stored = item(
        "u1",
        contact_message_id="m-id",
        contact_status="sent",
        contact_as_of="2026-06-01T00:00:00Z",
        exposure_group="holdout",
        exposed_at="2026-06-01T00:00:00Z",
        exposure_tier="high",
        exposure_action="winback_offer",
        holdout=True,
    )
    lookup, _ = lookup_of([stored])

    # WHEN the user is looked up
    view = lookup.user("u1")

    # THEN the view holds what a CRM reads, as JSON types
    assert view["churn_probability"] == 0.8125 and isinstance(view["churn_probability"], float)
    assert (view["risk_tier"], view["value_tier"], view["reasons"]) == ("high", "high", ["recency_up", "sessions_down"])
    assert (view["rfm_segment"], view["activity_cluster"], view["holdout"]) == ("at_risk", "low", True)
    assert view["last_message"] == {"message_id": "m-id", "status": "sent", "as_of": "2026-06-01T00:00:00Z"}
    assert view["exposure"]["group"] == "holdout" and view["exposure"]["action"] == "winback_offer"
    # AND nothing of the state, the versions or the claim's bookkeeping
    assert not INTERNAL & set(view)
    json.dumps(view)


def test_a_user_never_messaged_shows_no_message_and_no_exposure():
    lookup, _ = lookup_of([item("u1", "low", "low")])
    view = lookup.user("u1")
    assert view["last_message"] is None and view["exposure"] is None and view["holdout"] is False


def test_an_unknown_user_a_state_only_item_and_an_expired_user_are_not_found():
    # GIVEN a state-only item of a shared table and a risk item past its retention
    state_only = {"user_id": "merged", "state": b"\x00", "state_version": 1}
    lookup, _ = lookup_of([state_only, item("gone", expires_at=int(NOW) - 1)])
    for uid in ("nobody", "merged", "gone"):
        with pytest.raises(UserNotFoundError):
            lookup.user(uid)


@pytest.mark.parametrize(
    "uid",
    ["", "x" * 129, "a\x00b", "\x1flease\x1frun-1", " padded", "padded ", "tab\t", "\ud800", "del\x7f"],
    ids=["empty", "too-long", "nul", "runs-own-key", "lead-space", "trail-space", "tab", "surrogate", "del"],
)
def test_a_malformed_user_id_is_refused_before_any_read(uid):
    # (even one stored under that very key, as a shared table's runs' own items are)
    lookup = RiskLookup(FakeRiskReads({uid: {"user_id": uid, "risk_tier": "high"}}), clock=lambda: NOW)
    with pytest.raises(LookupInputError):
        lookup.user(uid)


def test_markup_and_unicode_in_a_user_id_are_data_not_markup():
    uid = '<script>alert("x")</script>'
    lookup, _ = lookup_of([item(uid), item("ünïcødé-用户")])
    assert lookup.user(uid)["user_id"] == uid
    assert lookup.user("ünïcødé-用户")["user_id"] == "ünïcødé-用户"


# ---- the index key -----------------------------------------------------------------------------------
def test_the_index_key_names_the_tier_pair_and_a_shard_stable_per_user():
    assert tier_key("high", "low", "u1") == f"high#low#{shard_of('u1'):02d}"
    assert shard_of("u1") == shard_of("u1") and 0 <= shard_of("u1") < SHARDS


def test_one_tier_pairs_users_spread_evenly_over_the_shards():
    counts = Counter(shard_of(f"user-{i}") for i in range(32_000))
    assert len(counts) == SHARDS
    mean = 32_000 / SHARDS
    assert max(counts.values()) < 1.1 * mean and min(counts.values()) > 0.9 * mean


def test_the_risk_item_carries_its_index_key_and_a_rescore_with_the_same_tiers_leaves_it_unchanged():
    row = {"user_id": "u1", "risk_tier": "medium", "value_tier": "high", "churn_probability": 0.4, "reasons": []}
    written = risk_item(row, run_id="r1", scored_at="t1", source="s")
    assert written[KEY_ATTRIBUTE] == tier_key("medium", "high", "u1")
    stored = {**written, "scored_state_version": 1, "expires_at": 10}
    again = {**risk_item(row, run_id="r2", scored_at="t2", source="s"), "scored_state_version": 1}
    assert unchanged(stored, again, 1, 10)
    # AND an item written before the key existed is rewritten once, with it
    assert not unchanged({k: v for k, v in stored.items() if k != KEY_ATTRIBUTE}, again, 1, 10)
    moved = {**risk_item({**row, "risk_tier": "high"}, run_id="r2", scored_at="t2", source="s")}
    assert moved[KEY_ATTRIBUTE] != written[KEY_ATTRIBUTE]


# ---- listings ----------------------------------------------------------------------------------------
def population(n: int = 300) -> list[dict]:
    return [item(f"u{i:04d}", TIERS[i % 3], TIERS[(i // 3) % 3]) for i in range(n)]


def test_a_listing_pages_through_every_shard_and_shows_each_matching_user_once():
    # GIVEN 300 users over the nine tier pairs, and a store that gives at most 4 items a call
    items = population()
    lookup, _ = lookup_of(items, page_items=4)

    # WHEN high/high is listed 7 at a time, following every token
    pages = every_page(lookup, risk_tier="high", value_tier="high", limit="7")

    # THEN every high/high user comes once, no other, no page over the limit
    listed = [u["user_id"] for page in pages for u in page]
    expected = {i["user_id"] for i in items if i["risk_tier"] == i["value_tier"] == "high"}
    assert len(listed) == len(set(listed)) and set(listed) == expected
    assert all(len(page) <= 7 for page in pages) and len(pages) >= len(expected) // 7
    assert len({shard_of(u) for u in listed}) > 1
    assert all(not INTERNAL & set(u) for page in pages for u in page)


def test_a_listing_without_filters_covers_every_tier_pair_and_one_filter_covers_its_three():
    items = population()
    lookup, _ = lookup_of(items)
    everyone = [u["user_id"] for page in every_page(lookup, limit="50") for u in page]
    assert sorted(everyone) == sorted(i["user_id"] for i in items)
    high = [u for page in every_page(lookup, risk_tier="high", limit="1000") for u in page]
    assert {u["risk_tier"] for u in high} == {"high"} and len(high) == 100


def test_expired_users_are_left_out_of_a_listing():
    lookup, _ = lookup_of([item("live"), item("gone", expires_at=int(NOW) - 1)])
    assert [u["user_id"] for page in every_page(lookup) for u in page] == ["live"]


def test_a_listing_of_an_empty_table_is_one_empty_page_within_the_query_bound():
    lookup, reader = lookup_of([])
    page = lookup.page({})
    assert page.users == [] and page.next is not None  # 144 keys, at most MAX_QUERIES_PER_PAGE per request
    assert reader.queries == MAX_QUERIES_PER_PAGE
    assert every_page(lookup) == [[], [], []]


@pytest.mark.parametrize(
    "params",
    [
        {"risk_tier": "HIGH"},
        {"value_tier": "<b>"},
        {"limit": "0"},
        {"limit": str(MAX_LIMIT + 1)},
        {"limit": "ten"},
        {"limit": "-1"},
        {"limit": "١٠"},
        {"risk_teir": "high"},
    ],
)
def test_a_malformed_listing_request_is_refused(params):
    lookup, _ = lookup_of(population(10))
    with pytest.raises(LookupInputError):
        lookup.page(params)


def _token_body(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _token(body: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_a_tampered_cut_foreign_or_oversized_token_is_refused():
    # GIVEN a real token of a high/high listing
    lookup, _ = lookup_of(population(), page_items=4)
    query = {"risk_tier": "high", "value_tier": "high", "limit": "3"}
    token = lookup.page(query).next
    body = _token_body(token)
    forged = [
        token[:-3],
        token[:5] + ("A" if token[5] != "A" else "B") + token[6:],
        "!!!not-base64!!!",
        _token({**body, "q": ["low", "low"]}),
        _token({**body, "k": 10_000}),
        _token({**body, "k": -1}),
        _token({**body, "k": True}),
        _token({**body, "u": "\x1flease\x1frun"}),
        _token({**body, "extra": 1}),
        _token([1, 2]),
        "A" * (paging.MAX_TOKEN_CHARS + 1),
    ]
    # WHEN each forgery is handed back THEN it is refused, never read as a position
    for bad in forged:
        with pytest.raises(LookupInputError):
            lookup.page({**query, "next": bad})
    # AND a token of another query is refused too
    with pytest.raises(LookupInputError):
        lookup.page({"risk_tier": "low", "value_tier": "high", "next": token})
    # AND the real one still works
    assert lookup.page({**query, "next": token}).users
