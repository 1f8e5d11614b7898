"""What a user id may be, as the behaviour files' validation accepts it (ingest/validate.py): checked before a read."""

from __future__ import annotations

import re

from chalicelib.errors import InputError
from chalicelib.scoring.events import MAX_USER_ID_LENGTH

# Control characters (the runs' own items in a shared table are keyed by them), and lone surrogates.
_REFUSED = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def is_user_id(text: str) -> bool:
    """Return True when `text` could be a stored user id: 1-128 characters, stripped, no control characters."""
    return 0 < len(text) <= MAX_USER_ID_LENGTH and text == text.strip() and not _REFUSED.search(text)


class LookupInputError(InputError):
    """A request the lookup cannot answer as asked: a malformed user id, tier, limit, token or unknown parameter."""
