"""The `next` token of a listing: where the next page starts, bound to the query it belongs to.

It is base64url of a small JSON object, opaque to a client. It grants nothing: a listing shows only the tier pairs
its query names, whatever the token says. So it carries no signature (the API's role reads the risk table only, and
holds no secret); instead every field is validated against the query before use, and a token that is not one this
query could have produced is refused (TokenError) rather than read as a start position.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from chalicelib.lookup.ids import LookupInputError, is_user_id

# Longer than any token written (the query, a position, a 128-character user id, escaped): refused unread.
MAX_TOKEN_CHARS = 2048
VERSION = 1


class TokenError(LookupInputError):
    """A `next` token this query did not produce: tampered with, cut, or from another query."""


@dataclass(frozen=True)
class Position:
    """Where a listing stands: the index key it reads (by its place in the query's keys) and the last user read."""

    key_index: int = 0
    after: str | None = None


def encode(query: tuple[str, str], position: Position) -> str:
    """Return the token that resumes `query` at `position`."""
    body = {"v": VERSION, "q": list(query), "k": position.key_index, "u": position.after or ""}
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(token: str, query: tuple[str, str], keys: int) -> Position:
    """Return the position a token names; raise TokenError unless `query` (with `keys` index keys) wrote it."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise TokenError("next token is not valid for this query")
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise TokenError("next token is not valid for this query") from exc
    if not _fits(body, query, keys):
        raise TokenError("next token is not valid for this query")
    return Position(body["k"], body["u"] or None)


def _fits(body: object, query: tuple[str, str], keys: int) -> bool:
    """Return whether a decoded token is exactly one `query` writes: its fields, types, and a position in range."""
    if not isinstance(body, dict) or set(body) != {"v", "q", "k", "u"} or body["v"] != VERSION:
        return False
    index, after = body["k"], body["u"]
    if body["q"] != list(query) or type(index) is not int or not 0 <= index < keys:
        return False
    return isinstance(after, str) and (after == "" or is_user_id(after))
