"""The behaviour-event vocabulary and the columnar batch every reader produces."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

# Order matters: the code of an event type is its index here, and the behaviour state
# layout is built from it. Append new types only before "other".
EVENT_TYPES: tuple[str, ...] = (
    "login",
    "session",
    "purchase",
    "refund",
    "coupon_redeem",
    "complaint",
    "support_ticket",
    "feature_use",
    "social_interaction",
    "content_view",
    "unsubscribe",
    "other",
)
TYPE_CODE: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
OTHER_CODE = TYPE_CODE["other"]

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "event_time", "event_type")
MAX_USER_ID_LENGTH = 128
SECONDS_PER_DAY = 86400.0


# A locale tag as BCP 47 spells it (language, then optional script, region and variants); at most 35 characters,
# the length BCP 47 asks every implementation to keep. POSIX forms (`zh_CN.UTF-8@euro`) are read as their tag.
LOCALE_TAG = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
MAX_LOCALE_LENGTH = 35


def locale_code(raw: str) -> str | None:
    """Return the BCP 47 tag of a locale such as `en_us`, `zh-hans` or `pt_BR.UTF-8` (`en-US`, `zh-Hans`, `pt-BR`).

    None for anything that is not a locale tag; the language a message is written in is chosen from the tag
    later, by the playbook, so a user's locale is kept as they gave it even when no text speaks it.
    """
    tag = raw.strip().split(".", 1)[0].split("@", 1)[0].replace("_", "-").lower()
    if len(tag) > MAX_LOCALE_LENGTH or not LOCALE_TAG.fullmatch(tag):
        return None
    return "-".join(_subtag_case(i, part) for i, part in enumerate(tag.split("-")))


def _subtag_case(position: int, subtag: str) -> str:
    """Return a subtag in BCP 47's conventional case: script in title case, region in upper case, the rest lower."""
    if position and len(subtag) == 4 and subtag.isalpha():
        return subtag.title()
    region = (len(subtag) == 2 and subtag.isalpha()) or (len(subtag) == 3 and subtag.isdigit())
    if position and region:
        return subtag.upper()
    return subtag


def type_code(name: str) -> int:
    """Return the code of an event type; any unknown string is generic activity ("other")."""
    return TYPE_CODE.get(name, OTHER_CODE)


@dataclass
class EventBatch:
    """Events in columns: one entry per event, users referenced by index into `user_ids`."""

    user_ids: list[str]
    user_index: np.ndarray  # int32, index into user_ids
    time: np.ndarray  # float64, seconds since the Unix epoch, UTC
    type_code: np.ndarray  # int8, index into EVENT_TYPES
    value: np.ndarray  # float64, NaN where the row had no value
    # user id -> (time, locale) of the user's latest row with a `locale` tag (BCP 47, as `locale_code` spells it)
    locales: dict[str, tuple[float, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.time.shape[0])

    @classmethod
    def empty(cls) -> EventBatch:
        """Return a batch with no events and no users."""
        return cls(
            user_ids=[],
            user_index=np.zeros(0, dtype=np.int32),
            time=np.zeros(0, dtype=np.float64),
            type_code=np.zeros(0, dtype=np.int8),
            value=np.zeros(0, dtype=np.float64),
        )

    def select(self, mask: np.ndarray) -> EventBatch:
        """Return the events where `mask` is true, keeping only the users they reference."""
        used, new_index = np.unique(self.user_index[mask], return_inverse=True)
        kept = [self.user_ids[i] for i in used]
        return EventBatch(
            user_ids=kept,
            user_index=new_index.astype(np.int32),
            time=self.time[mask],
            type_code=self.type_code[mask],
            value=self.value[mask],
            locales={
                self.user_ids[i]: self.locales[self.user_ids[i]] for i in used if self.user_ids[i] in self.locales
            },
        )
