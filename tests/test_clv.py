"""CLV models: the published CDNOW fits, parameters recovered from data simulated by the
models, forecasts against simulated futures, and the spec's ``features.clv`` columns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from segml.clv import BgNbd, GammaGamma, fit_bgnbd, fit_gamma_gamma
from segml.features import build_features, feature_columns
from segml.spec import CLV_COLUMNS, Spec, load_spec

from .conftest import EXPERIMENTS


def simulate_bgnbd(
    truth: BgNbd, n: int, T: np.ndarray, horizon: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customers drawn from the BG/NBD story: ``(x, t_x)`` over ``(0, T]`` and the number of
    purchases in ``(T, T + horizon]``."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(truth.r, 1 / truth.alpha, n)
    dropout = rng.beta(truth.a, truth.b, n)
    now, x, t_x, later = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        now = np.where(active, now + rng.exponential(1 / rate), now)
        active &= now <= T + horizon
        before = active & (now <= T)
        x += before
        t_x = np.where(before, now, t_x)
        later += active & (now > T)
        active &= rng.random(n) >= dropout  # drops out after this purchase
    return x, t_x, later


def test_bgnbd_recovers_the_parameters_it_simulated_and_forecasts_their_future() -> None:
    truth = BgNbd(r=0.5, alpha=6.0, a=0.8, b=2.5)
    T = np.random.default_rng(1).uniform(27, 39, 20_000)  # joined over 12 weeks, as CDNOW
    x, t_x, later = simulate_bgnbd(truth, len(T), T, 39.0, seed=2)
    fitted = fit_bgnbd(x, t_x, T)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.12), name
    forecast = fitted.expected_purchases(39.0, x, t_x, T)
    assert forecast.sum() == pytest.approx(later.sum(), rel=0.05)
    for k in (0, 1, 3):  # the conditional expectation, customers grouped by their history
        assert forecast[x == k].mean() == pytest.approx(later[x == k].mean(), rel=0.12), k
    assert (fitted.p_alive(x, t_x, T)[x == 0] == 1).all()


def test_the_forecast_stays_finite_for_customers_with_thousands_of_purchases() -> None:
    model = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)
    x = np.array([10.0, 100.0, 1_000.0, 5_000.0])
    forecast = model.expected_purchases(52.0, x, np.full(4, 52.0), np.full(4, 52.0))
    assert np.isfinite(forecast).all() and (np.diff(forecast) > 0).all()


def test_gamma_gamma_recovers_the_parameters_it_simulated() -> None:
    truth = GammaGamma(p=6.0, q=4.0, gamma=15.0)
    rng = np.random.default_rng(3)
    x = rng.integers(1, 8, 20_000)
    scale = rng.gamma(truth.q, 1 / truth.gamma, x.size)  # nu, each customer's spend rate
    zbar = rng.gamma(truth.p * x, 1 / scale) / x  # the mean of x Gamma(p, nu) orders
    fitted = fit_gamma_gamma(x, zbar)
    for name in ("p", "q", "gamma"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.1), name
    assert fitted.expected_spend(np.array([0]), np.array([np.nan]))[0] == fitted.mean_spend


def sample_spec(**clv: object) -> Spec:
    """The CDNOW demo spec on the bundled 1/10 sample, calibrated on its first 39 weeks."""
    demo = load_spec(EXPERIMENTS / "cdnow.yaml").model_dump()
    demo["data"] |= {
        "source": EXPERIMENTS / "data" / "cdnow_sample.txt",
        "reference_date": dt.date(1997, 9, 30),
    }
    demo["features"]["clv"] = clv
    return Spec.model_validate(demo)


def test_the_published_cdnow_fits_come_back_from_the_sample_log(
    bench: Callable[[str], Any],
) -> None:
    """Fader, Hardie and Lee (2005) on the 1/10 sample, as the CLV benchmark quotes them."""
    built = build_features(sample_spec())
    assert built.value is not None
    purchases, spend = built.value.purchases, built.value.spend
    fitted = {**{k: getattr(purchases, k) for k in "r alpha a b".split()}}
    fitted |= {k: getattr(spend, k) for k in ("p", "q", "gamma")}
    for name, published in bench("bench_clv").PUBLISHED.items():  # to 3 or 4 digits
        assert fitted[name] == pytest.approx(published, rel=2e-3), name
    table = built.table
    assert list(table.columns[-len(CLV_COLUMNS) :]) == list(CLV_COLUMNS)
    assert table["p_alive"].between(0, 1).all() and (table["clv"] > 0).all()
    assert not set(CLV_COLUMNS) & set(built.features), "outcomes only, unless segment_on"


def test_segment_on_makes_clv_columns_features_with_the_spec_defaults(write_spec) -> None:
    spec = sample_spec(segment_on=["clv", "p_alive"])
    assert (spec.features.clv.horizon_days, spec.features.clv.discount_rate) == (365, 0.10)
    table = build_features(spec).table
    assert feature_columns(spec, table)[-2:] == ["clv", "p_alive"]
    path = write_spec(spec.model_dump(mode="json", exclude={"path"}))
    assert load_spec(path).features.clv == spec.features.clv
