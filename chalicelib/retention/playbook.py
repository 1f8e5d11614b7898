"""Retention playbook: risk tier x value tier x top reason decides the action; who is held out; contact limits.

The playbook is a versioned JSON file (default: chalicelib/playbooks/default.json, or PLAYBOOK_FILE),
checked against schemas/playbook.schema.json when it is loaded, so a broken playbook stops a deployment
with a message naming the file and the place, not a user's message half-way through a run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import string
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.errors import InputError
from chalicelib.ingest import parse_timestamp
from chalicelib.retention.json_schemas import validator
from chalicelib.retention.sentences import problems

DEFAULT_PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "default.json"
SCHEMA_FILE = "playbook.schema.json"
# The languages every text is written in (the schema's `localized`); a locale tag speaks one by its language.
LANGUAGES = ("en", "zh")
# The channel whose messages are briefs for the team, written in the playbook's staff_locale.
STAFF_CHANNEL = "account_manager"
# What a message template may say about the user; a template naming anything else is refused at load.
_SAMPLE = {
    "user_id": "u1",
    "segment": "a segment",
    "offer": "an offer",
    "reason": "a reason",
    "risk_tier": "high",
    "value_tier": "low",
}


class PlaybookError(InputError):
    """A playbook file that cannot be used."""


@dataclass(frozen=True)
class Action:
    """A retention action: what to do, through which channel, with which offer and message template."""

    code: str
    type: str
    channel: str
    offer: str
    priority: int
    template: str
    reason: str  # the reason code the action answers

    def to_message(self) -> dict[str, object]:
        """Return the action object of a retention message (`reason`: the code `reason_label` names)."""
        out = asdict(self)
        out.pop("code")
        return out


@dataclass(frozen=True)
class Promotion:
    """A promotion period: while it is on, risk driven by `reasons` is discounted before tiering."""

    name: str
    start: float
    end: float
    reasons: tuple[str, ...]
    risk_discount: float


@dataclass(frozen=True)
class ContactPolicy:
    """Whom not to contact again yet: a cooldown per risk tier, and a cap on messages per run."""

    cooldown_days: dict[str, float]
    max_messages_per_run: int

    def cooldown_seconds(self, risk_tier: str) -> float:
        return float(self.cooldown_days.get(risk_tier, 0.0)) * 86400.0


class Playbook:
    """A validated playbook: chooses actions, draws the holdout group, carries the contact policy."""

    def __init__(self, spec: dict[str, Any], source: str) -> None:
        self.source = source
        self.spec = spec
        self.version: str = spec["playbook_version"]
        self.act_on = frozenset(spec["act_on_risk_tiers"])
        self.reasons: dict[str, dict[str, str]] = spec["reasons"]
        self.default_reason: str = spec["default_reason"]
        self.rules: list[dict[str, Any]] = spec["rules"]
        self.priority: dict[str, int] = spec["priority"]
        self.contact_policy = ContactPolicy(
            cooldown_days=dict(spec["contact_policy"]["cooldown_days"]),
            max_messages_per_run=int(spec["contact_policy"]["max_messages_per_run"]),
        )
        self.holdout_share: dict[str, float] = dict(spec["holdout"]["share"])
        self.holdout_salt: str = spec["holdout"]["salt"]
        self.default_locale: str = spec["default_locale"]
        self.staff_locale: str = spec.get("staff_locale", self.default_locale)
        self.texts: dict[str, dict[str, dict[str, str]]] = spec["texts"]
        self.promotions = [
            Promotion(
                name=p["name"],
                start=parse_timestamp(p["start"]),
                end=parse_timestamp(p["end"]),
                reasons=tuple(p.get("reasons", ["inactivity"])),
                risk_discount=float(p["risk_discount"]),
            )
            for p in spec.get("promotions", [])
        ]
        self._chosen: dict[tuple[str, str, str], Action] = {}  # `choose`'s answer per (risk, value, reason)

    @classmethod
    def load(cls, path: Path) -> Playbook:
        """Read and check a playbook file; raise PlaybookError naming the file and what is wrong."""
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise PlaybookError(f"{path}: cannot read the playbook: {exc.strerror}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlaybookError(f"{path}: not a JSON playbook: {exc}") from exc
        return cls.from_spec(spec, str(path))

    @classmethod
    def from_spec(cls, spec: Any, source: str) -> Playbook:
        """Check a playbook held in memory; raise PlaybookError naming `source` and what is wrong."""
        errors = sorted(validator(SCHEMA_FILE).iter_errors(spec), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise PlaybookError(f"{source}: {where}: {first.message}{more}")
        if spec["default_reason"] not in spec["reasons"]:
            raise PlaybookError(f"{source}: default_reason: {spec['default_reason']!r} is not one of reasons")
        if spec["rules"][-1]["when"]:
            raise PlaybookError(f"{source}: rules: the last rule must match everyone (an empty 'when')")
        _check_texts(spec, source)
        _check_sentences(spec, source)
        for i, promo in enumerate(spec.get("promotions", [])):
            try:
                start, end = parse_timestamp(promo["start"]), parse_timestamp(promo["end"])
            except ValueError as exc:
                raise PlaybookError(f"{source}: promotions/{i}: {exc}") from exc
            if end <= start:
                raise PlaybookError(f"{source}: promotions/{i}: end {promo['end']} is not after start {promo['start']}")
        return cls(spec, source)

    def choose(self, risk_tier: str, value_tier: str, reasons: list[str]) -> Action | None:
        """Return the action for a user, or None when their risk tier calls for none."""
        if risk_tier not in self.act_on:
            return None
        reason = next((code for code in reasons if code in self.reasons), self.default_reason)
        # Few (risk, value, reason) cells exist and a run asks for each of them thousands of times: each cell's
        # rule is matched once (Action is frozen, so one can stand for all its users).
        cell = (risk_tier, value_tier, reason)
        action = self._chosen.get(cell)
        if action is None:
            action = self._chosen[cell] = self._action(risk_tier, value_tier, reason)
        return action

    def _action(self, risk_tier: str, value_tier: str, reason: str) -> Action:
        """Return the action of a user of these tiers whose leading playbook reason is `reason`."""
        base = self.reasons[reason]
        then = next(r["then"] for r in self.rules if _matches(r["when"], risk_tier, value_tier, reason))
        action_type = then.get("type", base["type"])
        channel = then["channel"]
        priority = self.priority.get(f"{risk_tier}/{value_tier}", self.priority["default"])
        return Action(
            code=then.get("code", f"{action_type}_{channel}"),
            type=action_type,
            channel=channel,
            offer=then.get("offer", base["offer"]),
            priority=priority,
            template=then.get("template", base["template"]),
            reason=reason,
        )

    def render(
        self, action: Action, locale: str, user_id: str, risk_tier: str, value_tier: str, segment: str | None = None
    ) -> str:
        """Return the action's message text in `locale`, filled in with the user's context."""
        texts = self.texts
        segment = segment or "unknown"
        context = {
            "user_id": user_id,
            "segment": texts.get("segments", {}).get(segment, {}).get(locale, segment.replace("_", " ")),
            "offer": texts["offers"][action.offer][locale],
            "reason": texts["reasons"].get(action.reason, {}).get(locale, action.reason),
            "risk_tier": texts["tiers"][risk_tier][locale],
            "value_tier": texts["tiers"][value_tier][locale],
        }
        return texts["templates"][action.template][locale].format_map(context)

    def language_for(self, locale: str | None, channel: str) -> str:
        """Return the language a message is written in: the staff's for a brief, else the user's when it has texts."""
        if channel == STAFF_CHANNEL:
            return self.staff_locale
        language = (locale or "").split("-", 1)[0]
        return language if language in LANGUAGES else self.default_locale

    def labels(self, action: Action, language: str) -> dict[str, str]:
        """Return the labels of the reason an action answers and of its offer, in `language`."""
        return {
            "reason_label": self.texts["reasons"][action.reason][language],
            "offer_label": self.texts["offers"][action.offer][language],
        }

    def promotion_at(self, as_of: float) -> Promotion | None:
        """Return the promotion on at epoch time `as_of` (the first listed, if several overlap), or None."""
        return next((p for p in self.promotions if p.start <= as_of < p.end), None)

    def holdout_draw(self, user_id: str) -> float:
        """Return the user's stable draw in [0, 1): the same on every run while the salt stays."""
        digest = hashlib.sha256(f"{self.holdout_salt}\x1f{user_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def in_holdout(self, user_id: str, risk_tier: str) -> bool:
        """Return True when the user is in the holdout share of their risk tier (kept from messages)."""
        return self.holdout_draw(user_id) < self.holdout_share.get(risk_tier, 0.0)


def _check_texts(spec: dict[str, Any], source: str) -> None:
    """Raise PlaybookError unless every template and offer the playbook uses has a text that renders."""
    texts = spec["texts"]
    thens = [rule["then"] for rule in spec["rules"]]
    needed = {
        "templates": {r["template"] for r in spec["reasons"].values()}
        | {t["template"] for t in thens if "template" in t},
        "offers": {r["offer"] for r in spec["reasons"].values()} | {t["offer"] for t in thens if "offer" in t},
        "reasons": set(spec["reasons"]),
    }
    for kind, codes in needed.items():
        missing = sorted(codes - set(texts[kind]))
        if missing:
            raise PlaybookError(f"{source}: texts/{kind}: no text for {', '.join(missing)}")
    for template, by_locale in texts["templates"].items():
        for locale, text in by_locale.items():
            try:
                text.format_map(_SAMPLE)
            except KeyError as exc:
                allowed = ", ".join("{" + k + "}" for k in _SAMPLE)
                where = f"{source}: texts/templates/{template}/{locale}"
                raise PlaybookError(f"{where}: unknown placeholder {{{exc.args[0]}}}; use {allowed}") from exc
            except (IndexError, ValueError) as exc:
                raise PlaybookError(f"{source}: texts/templates/{template}/{locale}: {exc}") from exc


def _check_sentences(spec: dict[str, Any], source: str) -> None:
    """Raise PlaybookError unless every template reads as correct sentences with every offer, reason and label.

    Rules may pair any template with any offer, so nothing is left out: every two values of any two of the
    labels a template names are rendered together (a repetition takes two; the rest take turns).
    """
    texts = spec["texts"]
    labels = {
        "offer": texts["offers"],
        "reason": texts["reasons"],
        "segment": texts.get("segments") or {"unknown": dict.fromkeys(LANGUAGES, "unknown")},
        "risk_tier": texts["tiers"],
        "value_tier": texts["tiers"],
    }
    checked: set[str] = set()  # the same text comes out of many fillings
    for template, by_locale in texts["templates"].items():
        for language, text in by_locale.items():
            named = [field for _, field, _, _ in string.Formatter().parse(text) if field in labels]
            for filling in _pairwise({name: list(labels[name]) for name in dict.fromkeys(named)}):
                said = {name: labels[name][code][language] for name, code in filling.items()}
                rendered = text.format_map({**_SAMPLE, **said})
                found = [] if rendered in checked else problems(rendered)
                checked.add(rendered)
                if found:
                    where = f"{source}: texts/templates/{template}/{language}"
                    with_ = ", ".join(f"{name} {code}" for name, code in filling.items())
                    raise PlaybookError(f"{where}: with {with_}, {found[0]}: {rendered!r}")


def _pairwise(values: dict[str, list[str]]) -> Iterator[dict[str, str]]:
    """Yield fillings of the named slots in which any two values of any two slots meet at least once."""
    names = list(values)
    if not names:
        yield {}
    elif len(names) == 1:
        yield from ({names[0]: code} for code in values[names[0]])
    for a, b in itertools.combinations(names, 2):
        for n, (x, y) in enumerate(itertools.product(values[a], values[b])):
            met = {a: x, b: y}
            yield {name: met.get(name, values[name][n % len(values[name])]) for name in names}


def _matches(when: dict[str, list[str]], risk_tier: str, value_tier: str, reason: str) -> bool:
    return (
        risk_tier in when.get("risk_tier", [risk_tier])
        and value_tier in when.get("value_tier", [value_tier])
        and reason in when.get("reason", [reason])
    )


@lru_cache(maxsize=8)
def load_playbook(path: str | None = None) -> Playbook:
    """Return the playbook at `path` (the packaged default when None), loaded once per container."""
    return Playbook.load(Path(path) if path else DEFAULT_PLAYBOOK)
