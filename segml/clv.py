"""Probabilistic customer lifetime value: the BG/NBD model of repeat purchases (Fader, Hardie
and Lee 2005, "Counting your customers the easy way") and the Gamma-Gamma model of spend per
order (Fader, Hardie and Lee 2005, "RFM and CLV"; Fader and Hardie 2013), fitted by maximum
likelihood. Pure: arrays in, numbers out.

Each customer is summarised as in the papers: ``x`` repeat purchases (purchases after the
first), ``t_x`` the time from the first purchase to the last, ``T`` the time from the first
purchase to the end of the calibration period, and ``zbar`` the mean value of the repeat
purchases. Times are in one unit of the caller's choice (segml uses weeks, as the papers do);
``alpha`` is in that unit, the other parameters have none.

The likelihoods are written out with scipy rather than taken from a library, because of what
``benchmarks/bench_clv.py`` measured: PyMC-Marketing's ``clv`` module, the maintained
implementation, would add pymc, pytensor, arviz, xarray, h5py and more (tens of MiB beyond
segml's packages) and tens of seconds to import and to fit CDNOW by MAP (pytensor compiles C
code at run time), where two closed-form likelihoods with their gradients and one optimiser
call fit it in about a second, to the same parameters. ``lifetimes`` has had no release since
2020, and ``btyd`` (2022) pins autograd 1.4, which does not import on Python 3.11.
PyMC-Marketing stays the benchmark's second implementation, in a venv of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

WEEKS_PER_YEAR = 365.25 / 7


@dataclass(frozen=True, slots=True)
class BgNbd:
    """A fitted BG/NBD model: purchase rates ~ Gamma(``r``, ``alpha``), the probability of
    dropping out after each purchase ~ Beta(``a``, ``b``)."""

    r: float
    alpha: float
    a: float
    b: float

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """The probability that each customer is still active at ``T`` (1 without repeats)."""
        return special.expit(-self._log_dropout_odds(x, t_x, T))

    def expected_purchases(
        self, t: float | np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """Each customer's expected number of purchases in ``(T, T + t]`` given their history
        (the paper's equation 10); ``t`` may be an array broadcast against the customers."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        t = np.asarray(t, dtype=float)
        z = t / (alpha + T + t)
        # Equation 10's ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z) after Euler's
        # transformation: the same value, but with small parameters and no huge power, so it
        # stays finite for customers with thousands of purchases (the original turns NaN).
        hyp = special.hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
        grown = 1.0 - (1.0 - z) ** (a - 1) * hyp
        alive = special.expit(-self._log_dropout_odds(x, t_x, T))
        return (a + b + x - 1) / (a - 1) * grown * alive

    def expected_purchases_new(self, t: float | np.ndarray) -> np.ndarray:
        """A newly acquired customer's expected number of repeat purchases within ``t`` of the
        first one (the paper's equation 9)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        t = np.asarray(t, dtype=float)
        hyp = special.hyp2f1(r, b, a + b - 1, t / (alpha + t))
        return (a + b - 1) / (a - 1) * (1.0 - (alpha / (alpha + t)) ** r * hyp)

    def _log_dropout_odds(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """The log odds of "dropped out after the last purchase" against "still active"
        (-inf without a repeat purchase: such a customer cannot have dropped out)."""
        x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
        repeat = x > 0
        b_x = np.where(repeat, self.b + x - 1, 1.0)  # any positive value where x = 0
        odds = np.log(self.a / b_x) + (self.r + x) * (
            np.log(self.alpha + T) - np.log(self.alpha + t_x)
        )
        return np.where(repeat, odds, -np.inf)


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """A fitted Gamma-Gamma spend model: order values ~ Gamma(``p``, nu), nu ~ Gamma(``q``,
    ``gamma``)."""

    p: float
    q: float
    gamma: float

    @property
    def mean_spend(self) -> float:
        """The expected order value of a customer with no repeat purchase yet (q > 1)."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else np.inf

    def expected_spend(self, x: np.ndarray, zbar: np.ndarray) -> np.ndarray:
        """Each customer's expected value per order: their mean ``zbar`` over ``x`` repeat
        purchases shrunk towards :attr:`mean_spend`; the mean spend where ``x`` is 0 or
        ``zbar`` is not positive (returns can net a customer's spend to nothing)."""
        x, zbar = np.asarray(x, dtype=float), np.asarray(zbar, dtype=float)
        known = (x > 0) & (zbar > 0)
        x_k, z_k = np.where(known, x, 1.0), np.where(known, zbar, 1.0)
        own = self.p * (self.gamma + x_k * z_k) / (self.p * x_k + self.q - 1)
        return np.where(known, own, self.mean_spend)


def bgnbd_log_likelihood(
    params: tuple[float, float, float, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Each customer's BG/NBD log-likelihood at ``params = (r, alpha, a, b)`` (equation 6)."""
    return _bgnbd(params, x, t_x, T)[0]


def gamma_gamma_log_likelihood(
    params: tuple[float, float, float], x: np.ndarray, zbar: np.ndarray
) -> np.ndarray:
    """Each customer's Gamma-Gamma log-likelihood of their mean spend ``zbar`` over ``x``
    purchases at ``params = (p, q, gamma)`` (x > 0, zbar > 0)."""
    return _gamma_gamma(params, x, zbar)[0]


def _bgnbd(
    params: tuple[float, ...], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's BG/NBD log-likelihood and its gradient in ``(r, alpha, a, b)``."""
    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    psi = special.digamma
    common = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
    )
    active = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    b_x = np.where(repeat, b + x - 1, 1.0)
    dropped = np.log(a) - np.log(b_x) - (r + x) * np.log(alpha + t_x)
    both = np.where(repeat, np.logaddexp(active, dropped), active)
    # the two ways to have been seen (active at T, dropped after t_x), each weighted by its
    # share of the likelihood
    w_dropped = np.where(repeat, np.exp(dropped - both), 0.0)
    w_active = 1.0 - w_dropped
    gradient = np.stack(
        [
            psi(r + x)
            - psi(r)
            + np.log(alpha)
            - w_active * np.log(alpha + T)
            - w_dropped * np.log(alpha + t_x),
            r / alpha - (r + x) * (w_active / (alpha + T) + w_dropped / (alpha + t_x)),
            psi(a + b) - psi(a + b + x) + w_dropped / a,
            psi(b + x) - psi(b) + psi(a + b) - psi(a + b + x) - w_dropped / b_x,
        ],
        axis=1,
    )
    return common + both, gradient


def _gamma_gamma(
    params: tuple[float, ...], x: np.ndarray, zbar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's Gamma-Gamma log-likelihood and its gradient in ``(p, q, gamma)``."""
    p, q, gamma = params
    x, zbar = np.asarray(x, dtype=float), np.asarray(zbar, dtype=float)
    psi = special.digamma
    px = p * x
    log_total = np.log(gamma + x * zbar)
    log_likelihood = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (px - 1) * np.log(zbar)
        + px * np.log(x)
        - (px + q) * log_total
    )
    gradient = np.stack(
        [
            x * (psi(px + q) - psi(px) + np.log(zbar) + np.log(x) - log_total),
            psi(px + q) - psi(q) + np.log(gamma) - log_total,
            q / gamma - (px + q) / (gamma + x * zbar),
        ],
        axis=1,
    )
    return log_likelihood, gradient


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BgNbd:
    """The maximum-likelihood BG/NBD fit to customers' ``(x, t_x, T)``."""
    data = (np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float))
    start = (1.0, max(float(np.mean(data[2])), 1e-3), 1.0, 1.0)
    r, alpha, a, b = _maximise(_bgnbd, start, data)
    return BgNbd(r=r, alpha=alpha, a=a, b=b)


def fit_gamma_gamma(x: np.ndarray, zbar: np.ndarray) -> GammaGamma:
    """The maximum-likelihood Gamma-Gamma fit to the customers with a repeat purchase of
    positive mean value (the others carry no information on spend per repeat order)."""
    x, zbar = np.asarray(x, float), np.asarray(zbar, float)
    known = (x > 0) & (zbar > 0)
    if not known.any():
        raise ValueError("no customer with a repeat purchase of positive value to fit spend on")
    data = (x[known], zbar[known])
    p, q, gamma = _maximise(_gamma_gamma, (1.0, 1.0, float(np.mean(data[1]))), data)
    return GammaGamma(p=p, q=q, gamma=gamma)


def _maximise(
    log_likelihood: Callable[..., tuple[np.ndarray, np.ndarray]],
    start: tuple[float, ...],
    data: tuple[np.ndarray, ...],
) -> tuple[float, ...]:
    """The positive parameters that maximise the summed ``log_likelihood`` (per customer, with
    its gradient) of the customers ``data``, searched on the log scale so that they stay
    positive without bounds."""
    # Customers with the same history count once, weighted: many share one (one-off buyers).
    rows, counts = np.unique(np.column_stack(data), axis=0, return_counts=True)
    columns = tuple(rows.T)
    weights = counts / counts.sum()

    def loss(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(log_params)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            values, gradient = log_likelihood(tuple(params), *columns)
            total, slope = weights @ values, weights @ gradient * params
        if not (np.isfinite(total) and np.isfinite(slope).all()):
            return np.inf, np.zeros_like(log_params)
        return -float(total), -slope

    found = optimize.minimize(loss, np.log(start), jac=True, method="BFGS", options={"gtol": 1e-9})
    if not np.isfinite(found.fun):
        raise ValueError(f"the likelihood has no finite maximum here ({found.message})")
    return tuple(float(v) for v in np.exp(found.x))


def discounted_purchases(
    bgnbd: BgNbd,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    horizon: float,
    discount_per_period: float,
) -> np.ndarray:
    """Each customer's expected purchases over ``horizon`` periods, each period's discounted
    from its end at ``discount_per_period`` to ``T`` (the period is the unit of ``t_x`` and
    ``T``; a last partial period counts as its part). Times the expected spend per order, the
    customer's CLV."""
    x, t_x, T = (np.asarray(v, dtype=float)[:, None] for v in (x, t_x, T))
    ends = np.unique(np.r_[np.arange(0, np.floor(horizon) + 1), horizon])[None, :]
    cumulative = bgnbd.expected_purchases(ends, x, t_x, T)
    per_period = np.diff(cumulative, axis=1)
    return per_period @ ((1.0 + discount_per_period) ** -ends[0, 1:])
