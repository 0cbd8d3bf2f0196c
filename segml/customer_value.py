"""Predicted customer value from a transaction log: the spec's ``features.clv`` columns,
fitted on the training customers and applied, with the same fit, to the customers scored later."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segml.clv import (
    WEEKS_PER_YEAR,
    BgNbd,
    GammaGamma,
    discounted_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
)
from segml.spec import CLV_COLUMNS, ClvSpec

DAYS_PER_WEEK = 7.0
"""The models count time in weeks, as the papers do (their ``alpha`` is in weeks)."""


@dataclass(frozen=True, slots=True)
class History:
    """Customers as the models see them: ``x`` repeat purchases, ``t_x`` weeks from the first
    purchase to the last, ``T`` weeks from the first purchase to the reference date and
    ``zbar`` the mean value of the repeat purchases (NaN without one)."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    zbar: np.ndarray


@dataclass(frozen=True, slots=True)
class ValueModel:
    """The fitted purchase (BG/NBD) and spend (Gamma-Gamma) models and the spec's horizon and
    discount rate: what turns a customer's history into the ``features.clv`` columns."""

    purchases: BgNbd
    spend: GammaGamma
    horizon_days: int
    discount_rate: float

    def columns(self, history: History) -> pd.DataFrame:
        """Per customer: expected purchases over the horizon, probability alive, expected
        spend per order and the discounted CLV over the horizon (``CLV_COLUMNS``)."""
        weeks = self.horizon_days / DAYS_PER_WEEK
        weekly_rate = (1.0 + self.discount_rate) ** (1.0 / WEEKS_PER_YEAR) - 1.0
        # Purchases depend on (x, t_x, T) only, which customers share (one-off buyers of the
        # same day): each distinct history is computed once.
        rows, inverse = np.unique(
            np.column_stack([history.x, history.t_x, history.T]), axis=0, return_inverse=True
        )
        x, t_x, T = rows.T
        spend = self.spend.expected_spend(history.x, history.zbar)
        values = {
            "expected_purchases": self.purchases.expected_purchases(weeks, x, t_x, T)[inverse],
            "p_alive": self.purchases.p_alive(x, t_x, T)[inverse],
            "expected_spend": spend,
            "clv": spend
            * discounted_purchases(self.purchases, x, t_x, T, weeks, weekly_rate)[inverse],
        }
        return pd.DataFrame({c: values[c] for c in CLV_COLUMNS})


def fit_value_model(spec: ClvSpec, history: History) -> ValueModel:
    """Fit both models to the customers' histories (up to the reference date)."""
    return ValueModel(
        fit_bgnbd(history.x, history.t_x, history.T),
        fit_gamma_gamma(history.x, history.zbar),
        spec.horizon_days,
        spec.discount_rate,
    )


def history(rfm: pd.DataFrame, repeat_spend: pd.Series) -> History:
    """The models' view of customers from their RFM row (``segml.features.rfm_features``) and
    the mean value of their repeat orders (aligned by position)."""
    frequency = rfm["frequency"].to_numpy(dtype=float)
    tenure = rfm["tenure_days"].to_numpy(dtype=float)
    recency = rfm["recency_days"].to_numpy(dtype=float)
    return History(
        x=frequency - 1,
        t_x=(tenure - recency) / DAYS_PER_WEEK,
        T=tenure / DAYS_PER_WEEK,
        zbar=repeat_spend.to_numpy(dtype=float),
    )
