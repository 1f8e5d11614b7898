"""The risk lookup: one user's current risk, and the users of a tier pair a page at a time (the API and the export)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from chalicelib.errors import ChurnGuardError
from chalicelib.lookup import paging
from chalicelib.lookup.ids import LookupInputError, is_user_id
from chalicelib.lookup.ports import RiskReader
from chalicelib.lookup.tier_index import TIERS, keys_of
from chalicelib.lookup.views import READ_ATTRIBUTES, is_live, user_view

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Index queries one page makes at most: a listing over sparse tiers returns fewer users with a `next` token, instead
# of one request reading every shard of every tier pair.
MAX_QUERIES_PER_PAGE = 48
LIST_PARAMETERS = frozenset({"risk_tier", "value_tier", "limit", "next"})
BAD_USER_ID = "user_id must be 1-128 characters, with no control characters or edge spaces"
__all__ = ["LookupInputError", "Page", "RiskLookup", "UserNotFoundError"]


class UserNotFoundError(ChurnGuardError):
    """No current risk item for the user (never scored, or forgotten after the retention)."""


@dataclass(frozen=True)
class Page:
    """One page of a listing: the users' views, and the token of the next page (None: this was the last)."""

    users: list[dict[str, Any]]
    next: str | None

    def to_json(self) -> dict[str, Any]:
        """Return the page as the API answers it."""
        return {"users": self.users, "count": len(self.users), "next": self.next}


@dataclass(frozen=True)
class Query:
    """A listing's tier filters (empty: every tier) and the index keys they cover."""

    risk_tier: str
    value_tier: str

    @property
    def key(self) -> tuple[str, str]:
        """Return what a token of this query is bound to."""
        return (self.risk_tier, self.value_tier)

    @property
    def keys(self) -> list[str]:
        """Return the index keys the query reads, in order."""
        return keys_of(_tiers(self.risk_tier), _tiers(self.value_tier))


class RiskLookup:
    """Answers lookups from the risk table through a RiskReader; items past their retention are not shown."""

    def __init__(self, reader: RiskReader, clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.clock = clock

    def user_at_path(self, segment: str) -> dict[str, Any]:
        """Return the view of the user a request path names, percent-decoded once (chalice hands a path parameter
        over as the request spelled it, '%20' for a space: chalice issue 511)."""
        try:
            user_id = unquote(segment, errors="strict")
        except UnicodeDecodeError as exc:
            raise LookupInputError(BAD_USER_ID) from exc
        return self.user(user_id)

    def user(self, user_id: str) -> dict[str, Any]:
        """Return the view of one user's current risk; raise LookupInputError or UserNotFoundError."""
        if not is_user_id(user_id):
            raise LookupInputError(BAD_USER_ID)
        item = self.reader.get_risk(user_id, READ_ATTRIBUTES)
        if item is None or not is_live(item, self.clock()):
            raise UserNotFoundError("no current risk for this user")
        return user_view(item)

    def page(self, params: Mapping[str, str] | None) -> Page:
        """Return one page of the users a request's query parameters ask for."""
        query, limit, token = parse_list_request(params or {})
        keys = query.keys
        position = paging.decode(token, query.key, len(keys)) if token is not None else paging.Position()
        users, position = self._read(keys, position, limit)
        more = position.key_index < len(keys)
        return Page(users, paging.encode(query.key, position) if more else None)

    def every(self, risk_tier: str, value_tier: str) -> Iterator[tuple[dict[str, Any], float]]:
        """Yield the view of every user of a tier pair once, with the share of the index read so far (0..1)."""
        query = Query(_tier("risk_tier", risk_tier), _tier("value_tier", value_tier))
        keys = query.keys
        position = paging.Position()
        while position.key_index < len(keys):
            users, position = self._read(keys, position, MAX_LIMIT)
            for user in users:
                yield user, position.key_index / len(keys)

    def _read(self, keys: list[str], position: paging.Position, limit: int) -> tuple[list[dict], paging.Position]:
        """Return up to `limit` live users from `position` on, and the position after them."""
        users: list[dict[str, Any]] = []
        now = self.clock()
        index, after = position.key_index, position.after
        for _ in range(MAX_QUERIES_PER_PAGE):
            if index >= len(keys) or len(users) >= limit:
                break
            found = self.reader.query_tier(keys[index], after, limit - len(users), READ_ATTRIBUTES)
            users += [user_view(item) for item in found.items if is_live(item, now)]
            index, after = (index + 1, None) if found.last_user_id is None else (index, found.last_user_id)
        return users, paging.Position(index, after)


def parse_list_request(params: Mapping[str, str]) -> tuple[Query, int, str | None]:
    """Return the query, limit and token of a listing's parameters; raise LookupInputError on any that is wrong."""
    unknown = sorted(set(params) - LIST_PARAMETERS)
    if unknown:
        raise LookupInputError(f"unknown query parameter(s): {', '.join(_shown(u) for u in unknown)}")
    query = Query(_tier("risk_tier", params.get("risk_tier", "")), _tier("value_tier", params.get("value_tier", "")))
    return query, _limit(params.get("limit")), params.get("next")


def _tier(name: str, value: str) -> str:
    """Return a tier filter ('' for every tier); raise LookupInputError when it names no tier."""
    if value not in ("", *TIERS):
        raise LookupInputError(f"{name} must be one of {', '.join(TIERS)}")
    return value


def _tiers(value: str) -> tuple[str, ...]:
    return (value,) if value else TIERS


def _limit(text: str | None) -> int:
    """Return the page size asked for (DEFAULT_LIMIT when none); raise LookupInputError outside 1..MAX_LIMIT."""
    if text is None:
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise LookupInputError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _shown(name: str) -> str:
    """Return a parameter name fit to quote in an error: printable, and short."""
    return repr(name[:40]) if name.isprintable() else repr(name[:40].encode("unicode_escape").decode())
