"""Purchase logs drawn from a Pareto/NBD process whose parameters are known, and the true model that goes with them.

Every customer is acquired inside the window with a first purchase, buys as a Poisson process of rate
λ ~ Gamma(r, α) while alive and dies after an exponential lifetime of rate μ ~ Gamma(s, β). Nothing else
in the log carries information about the future, so the Pareto/NBD with the generator's own parameters,
applied to each customer's (x, t_x, T), is the best any model can do from the log: the yardstick of
`scripts/prove_model.py`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from chalicelib.errors import InputError
from chalicelib.scoring.btyd import btyd_inputs
from chalicelib.scoring.events import SECONDS_PER_DAY, TYPE_CODE, EventBatch
from chalicelib.scoring.pareto_nbd import ParetoNbd
from churnguard_offline.generate import user_id_for

_DAY = int(SECONDS_PER_DAY)
_WEEK_DAYS = 7.0


@dataclass(frozen=True)
class ParetoParams:
    """Pareto/NBD parameters with α and β in days: λ ~ Gamma(r, rate α), μ ~ Gamma(s, rate β), both per day."""

    r: float
    alpha: float
    s: float
    beta: float

    def model_params(self) -> dict[str, float]:
        """Return the parameters as `ParetoNbd.params_` holds them (time in days)."""
        return {"r": self.r, "alpha": self.alpha, "s": self.s, "beta": self.beta}


@dataclass(frozen=True)
class SpendParams:
    """Gamma-Gamma spend (Fader, Hardie & Lee 2005): amount ~ Gamma(p, rate ν), ν ~ Gamma(q, rate γ) per customer."""

    p: float
    q: float
    gamma: float


# CDNOW's published Pareto/NBD fit (Fader, Hardie & Lee 2005: r 0.5534, α 10.5776, s 0.6061, β 11.6650, in
# weeks). λ and μ are rates per week there; per day they are a seventh of that, which multiplies α and β by 7.
CDNOW = ParetoParams(r=0.5534, alpha=10.5776 * _WEEK_DAYS, s=0.6061, beta=11.6650 * _WEEK_DAYS)
# CDNOW's Gamma-Gamma spend fit (Fader, Hardie & Lee 2005, "RFM and CLV"): a mean basket of about $35.
CDNOW_SPEND = SpendParams(p=6.25, q=3.74, gamma=15.44)


@dataclass
class ParetoNbdTruth:
    """What the generator drew for each customer (user index order), and the parameters it drew them from."""

    params: ParetoParams
    acquired: np.ndarray  # epoch seconds of the first purchase
    rate: np.ndarray  # λ, purchases per day while alive
    dropout: np.ndarray  # μ, deaths per day
    death: np.ndarray  # epoch seconds of death (may be after the window's end)

    def model(self) -> ParetoNbd:
        """Return the true model: a ParetoNbd whose parameters are the generator's (no fitting)."""
        return true_model(self.params)


def true_model(params: ParetoParams) -> ParetoNbd:
    """Return a ParetoNbd set to `params`, in days, as `btyd_inputs` measures time."""
    model = ParetoNbd()
    model.params_ = params.model_params()
    return model


def true_p_no_event(params: ParetoParams, values: np.ndarray, as_of: float, horizon_days: float) -> np.ndarray:
    """Return each state row's true P(no purchase in (as_of, as_of + horizon_days]) under `params`."""
    x, t_x, T = btyd_inputs(values, as_of)
    return true_model(params).p_no_event(x, t_x, T, horizon_days)


def simulate_pareto_nbd(
    n_users: int,
    days: int,
    seed: int,
    as_of: datetime,
    *,
    params: ParetoParams = CDNOW,
    spend: SpendParams = CDNOW_SPEND,
    progress: bool = False,
) -> tuple[EventBatch, ParetoNbdTruth]:
    """Return a purchases log over (as_of - days, as_of], sorted by time, and what each customer was drawn with.

    Acquisitions are uniform over the window and each is a purchase, so every customer is in the log and its
    (x, t_x, T) at any time inside the window is exact. Times are whole seconds, as a written file holds them.
    """
    _check(n_users, days, params, spend)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    end = math.floor(as_of.timestamp())
    start = end - days * _DAY
    rng = np.random.default_rng(seed)
    # The draws come from `rng` in this order: reordering them changes every generated log.
    acquired = rng.integers(start + 1, end + 1, n_users).astype(np.float64)
    rate = rng.gamma(params.r, 1.0 / params.alpha, n_users)
    dropout = rng.gamma(params.s, 1.0 / params.beta, n_users)
    death = acquired + rng.exponential(1.0, n_users) / dropout * SECONDS_PER_DAY
    basket_rate = rng.gamma(spend.q, 1.0 / spend.gamma, n_users)
    user, time = _purchases(rng, acquired, np.minimum(death, end), rate)
    amount = rng.gamma(spend.p, 1.0 / basket_rate[user])
    if progress:
        print(f"generated {user.size} purchases for {n_users} customers", file=sys.stderr)
    order = np.lexsort((user, time))
    batch = EventBatch(
        user_ids=[user_id_for(i, n_users) for i in range(n_users)],
        user_index=user[order],
        time=time[order],
        type_code=np.full(user.size, TYPE_CODE["purchase"], dtype=np.int8),
        value=np.maximum(np.round(amount[order], 2), 0.01),
    )
    return batch, ParetoNbdTruth(params=params, acquired=acquired, rate=rate, dropout=dropout, death=death)


def _check(n_users: int, days: int, params: ParetoParams, spend: SpendParams) -> None:
    """Raise InputError for a population or parameters that cannot be simulated."""
    if n_users < 0:
        raise InputError(f"number of users must not be negative, got {n_users}")
    if days < 1:
        raise InputError(f"days must be at least 1, got {days}")
    for name, value in {**params.model_params(), "p": spend.p, "q": spend.q, "gamma": spend.gamma}.items():
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"parameter {name} must be positive and finite, got {value}")


def _purchases(
    rng: np.random.Generator, acquired: np.ndarray, until: np.ndarray, rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (user, time) of every purchase: the first at acquisition, repeats as Poisson(λ) until `until`.

    Given their number, a Poisson process's arrivals in a span are independent and uniform over it. Repeats are
    rounded up to the next whole second, so none falls before the first purchase or after the window's end.
    """
    n = acquired.size
    span_days = (until - acquired) / SECONDS_PER_DAY
    repeats = rng.poisson(rate * span_days)
    owner = np.repeat(np.arange(n, dtype=np.int32), repeats)
    offset = rng.random(owner.size) * (until - acquired)[owner]
    repeat_time = np.minimum(np.ceil(acquired[owner] + offset), np.ceil(until[owner]))
    user = np.concatenate([np.arange(n, dtype=np.int32), owner])
    return user, np.concatenate([acquired, repeat_time])
