"""The behaviour-event vocabulary and the columnar batch every reader produces."""

from __future__ import annotations

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


LOCALES = ("en", "zh")


def locale_code(raw: str) -> str | None:
    """Return `en` or `zh` for a locale tag such as `en-US`, `zh_CN` or `zh-Hans`; None for any other."""
    language = raw.strip().lower().replace("_", "-").split("-", 1)[0]
    return language if language in LOCALES else None


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
    # user id -> (time, locale) of the user's latest row with a known `locale` (`en` or `zh`)
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
