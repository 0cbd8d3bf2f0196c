"""Customer features: hand-computed RFM, and preprocessing that is fitted once and reused."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import MinMaxScaler

from segml.features import (
    build_features,
    build_preprocessor,
    feature_columns,
    transform_features,
)
from segml.spec import load_spec

from . import lineitems
from .lineitems import ID, line_items
from .test_data import tx_spec

TRANSACTIONS = """cust,day,amount,qty
a,2020-01-01,10.00,1
a,2020-01-01,5.00,2
a,2020-01-11,30.00,1
a,2020-01-21,15.00,1
b,2020-01-20,100.00,4
c,2020-01-05,8.00,1
c,2020-01-31,12.00,1
c,2020-02-10,99.00,1
"""


@pytest.fixture
def rfm(tmp_path: Path, write_spec: Callable[..., Path]) -> pd.DataFrame:
    (tmp_path / "tx.csv").write_text(TRANSACTIONS)
    spec = load_spec(write_spec(tx_spec("tx.csv", reference_date="2020-01-31")))
    built = build_features(spec)
    assert built.intake.reports[0].excluded == {"after reference date 2020-01-31": 1}
    return built.table.set_index("cust")


def test_rfm_matches_hand_computation(rfm: pd.DataFrame) -> None:
    # a: purchase days 01-01 (two lines, 15.00), 01-11 (30.00), 01-21 (15.00); ref 01-31
    assert rfm.loc["a", "recency_days"] == 10
    assert rfm.loc["a", "frequency"] == 3
    assert rfm.loc["a", "monetary_total"] == pytest.approx(60.0)
    assert rfm.loc["a", "monetary_mean"] == pytest.approx(20.0)
    assert rfm.loc["a", "tenure_days"] == 30
    assert rfm.loc["a", "interpurchase_days"] == pytest.approx(10.0)
    assert rfm.loc["a", "quantity_total"] == 5
    # b: a single purchase: no inter-purchase interval
    assert rfm.loc["b", "recency_days"] == 11
    assert rfm.loc["b", "frequency"] == 1
    assert np.isnan(rfm.loc["b", "interpurchase_days"])
    # c: the 02-10 purchase is after the reference date and does not count
    assert rfm.loc["c", "frequency"] == 2
    assert rfm.loc["c", "monetary_total"] == pytest.approx(20.0)
    assert rfm.loc["c", "recency_days"] == 0
    assert rfm.loc["c", "interpurchase_days"] == pytest.approx(26.0)


def test_order_id_defines_frequency(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    (tmp_path / "tx.csv").write_text(
        "cust,day,amount,qty,order\na,2020-01-01,1,1,o1\na,2020-01-01,1,1,o2\na,2020-01-02,1,1,o2\n"
    )
    spec = tx_spec("tx.csv")
    spec["data"]["transactions"]["order_id"] = "order"
    table = build_features(load_spec(write_spec(spec))).table
    assert table.loc[0, "frequency"] == 2


def test_cdnow_has_one_row_per_customer(cdnow_spec: Path) -> None:
    built = build_features(load_spec(cdnow_spec))
    assert len(built.table) == 23_570
    assert built.table["customer_id"].is_unique
    assert built.table["customer_id"].iloc[0] == "00001"
    assert {"recency_days", "frequency", "monetary_total"} <= set(built.features)
    (report,) = built.intake.reports
    assert report.rows_read == 69_659
    assert report.rows_used == 56_902  # purchases in 1997, up to the reference date
    assert report.rows_used + sum(report.excluded.values()) == report.rows_read


def test_preprocessor_excludes_ids_and_outcomes_and_ignores_unseen_categories(
    tmp_path: Path, clean_customers: pd.DataFrame, write_spec: Callable[..., Path]
) -> None:
    table = clean_customers.assign(channel=np.where(clean_customers.index % 2, "web", "store"))
    table.to_csv(tmp_path / "c.csv", index=False)
    spec_dict = {
        "name": "prep",
        "data": {
            "source": "c.csv",
            "kind": "customers",
            "id_column": "customer_id",
            "attributes": {"behavioural": ["engagement", "channel"], "value": ["basket_index"]},
            "outcomes": {"revenue": "revenue"},
        },
    }
    spec = load_spec(write_spec(spec_dict))
    built = build_features(spec)
    assert feature_columns(spec, built.table) == ["engagement", "channel", "basket_index"]
    prep = build_preprocessor(spec, built.table).fit(built.table)
    names = list(prep.get_feature_names_out())
    assert names == ["engagement", "basket_index", "channel_store", "channel_web"]
    X = prep.transform(built.table)
    assert X.shape == (len(table), 4)
    np.testing.assert_allclose(X[:, :2].mean(axis=0), 0, atol=1e-9)
    unseen = built.table.head(3).assign(channel="kiosk")
    assert prep.transform(unseen)[:, 2:].sum() == 0


def test_log1p_applies_to_heavy_tails_only(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(500)],
            "spend": rng.lognormal(3, 1.2, 500),
            "score": rng.normal(0, 1, 500),
        }
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    spec = load_spec(
        write_spec(
            {
                "name": "skew",
                "data": {
                    "source": "t.csv",
                    "kind": "customers",
                    "id_column": "id",
                    "attributes": {"value": ["spend", "score"]},
                },
            }
        )
    )
    built = build_features(spec)
    prep = build_preprocessor(spec, built.table).fit(built.table)
    mask = prep.named_transformers_["num"].named_steps["log1p"].log_mask_
    assert mask.tolist() == [True, False]


# transform_features: sklearn's transform, bit for bit, with numpy -------------------------------


def _customers(n: int, seed: int) -> pd.DataFrame:
    """A skewed non-negative, an integer and a signed column; the float ones miss values."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "id": [f"i{i}" for i in range(n)],
            "spend": rng.lognormal(3, 1.2, n),
            "visits": rng.poisson(2.0, n) ** 2,
            "score": rng.normal(0, 1, n),
        }
    )
    for column in ("spend", "score"):
        table.loc[rng.random(n) < 0.1, column] = np.nan
    return table


def _fitted(
    write_spec: Callable[..., Path], table: pd.DataFrame, **features: Any
) -> ColumnTransformer:
    spec = {
        "name": "fast",
        "data": {
            "source": "t.csv",
            "kind": "customers",
            "id_column": "id",
            "attributes": {"value": [c for c in table.columns if c != "id"]},
        },
        "features": features,
    }
    return build_preprocessor(load_spec(write_spec(spec)), table)


@pytest.mark.parametrize("log1p", ["auto", "none", ["spend", "score"]])
@pytest.mark.parametrize(
    "with_mean, with_std", [(True, True), (False, True), (True, False), (False, False)]
)
def test_transform_features_equals_the_preprocessors_transform(
    write_spec: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    log1p: Any,
    with_mean: bool,
    with_std: bool,
) -> None:
    prep = _fitted(write_spec, _customers(500, seed=0), log1p=log1p)
    prep.set_params(num__scale__with_mean=with_mean, num__scale__with_std=with_std)
    prep.fit(_customers(500, seed=0))
    mask = prep.named_transformers_["num"].named_steps["log1p"].log_mask_
    assert mask.any() == (log1p != "none")
    new = _customers(2_000, seed=1)
    new.loc[::7, "spend"] = -new.loc[::7, "spend"]  # negatives under log1p are clipped to 0
    new.loc[::5, ["spend", "score"]] = np.nan
    assert new["visits"].dtype == np.int64
    expected = prep.transform(new)
    monkeypatch.setattr(prep, "transform", None)  # the numpy path, not a fallback
    np.testing.assert_array_equal(transform_features(prep, new), expected, strict=True)


def _float32(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({"score": np.float32})


def _infinite(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame["score"].fillna(np.inf))


@pytest.mark.parametrize(
    "change",
    [lambda f: f, _float32, _infinite, lambda f: f.head(0), lambda f: f.assign(kind="z")],
    ids=["categorical", "float32", "infinite", "empty", "unseen-category"],
)
def test_transform_features_falls_back_on_categorical_columns_and_odd_input(
    write_spec: Callable[..., Path], change: Callable[[pd.DataFrame], pd.DataFrame]
) -> None:
    train = _customers(300, seed=0).assign(kind=np.where(np.arange(300) % 3, "a", "b"))
    prep = _fitted(write_spec, train, categorical=["kind"]).fit(train)
    plain = _fitted(write_spec, train.drop(columns="kind")).fit(train.drop(columns="kind"))
    new = change(_customers(100, seed=1).assign(kind="b"))
    for fitted, frame in ((prep, new), (plain, new.drop(columns="kind"))):
        try:
            expected = fitted.transform(frame)
        except ValueError as error:
            with pytest.raises(ValueError, match=re.escape(str(error))):
                transform_features(fitted, frame)
        else:
            np.testing.assert_array_equal(transform_features(fitted, frame), expected, strict=True)


def test_transform_features_falls_back_on_steps_it_does_not_know(
    write_spec: Callable[..., Path],
) -> None:
    train, new = _customers(300, seed=0), _customers(100, seed=1)
    other_step = _fitted(write_spec, train).set_params(num__scale=MinMaxScaler())
    weighted = _fitted(write_spec, train).set_params(transformer_weights={"num": 2.0})
    for prep in (other_step.fit(train), weighted.fit(train)):
        expected = prep.transform(new)
        np.testing.assert_array_equal(transform_features(prep, new), expected, strict=True)


def test_line_items_give_the_known_truth_per_customer(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    """Spend net of cancellations, orders, recency and the most frequent country, per customer
    of the generated line-item log, as the generator drew them."""
    log = line_items()
    log.lines.to_csv(tmp_path / "lines.csv", index=False)
    data = {"source": "lines.csv", **lineitems.SPEC_DATA, "reference_date": "2023-12-31"}
    built = build_features(load_spec(write_spec({"name": "retail", "data": data})))
    truth = log.truth.set_index(lineitems.ID)
    table = built.table.set_index(lineitems.ID).loc[truth.index]
    assert len(built.table) == len(truth), "every customer, and only those with an id"
    np.testing.assert_allclose(table["monetary_total"], truth["spend"], atol=1e-9)
    assert table["frequency"].tolist() == truth["orders"].tolist()
    assert table["Country"].tolist() == truth["Country"].tolist()
    recency = (pd.Timestamp("2023-12-31") - truth["last_day"]).dt.days
    assert table["recency_days"].tolist() == recency.tolist()
    assert "Country" in built.features and "Description" not in built.table
    (report,) = built.intake.reports
    guest_cancellations = (log.lines["Invoice"].str.startswith("C") & (log.lines[ID] == "")).sum()
    assert report.netted == log.cancellation_lines - guest_cancellations
    assert report.quarantined == {"missing id in column 'Customer ID'": log.guest_lines}


@pytest.mark.parametrize(
    ("how", "expected"),
    [("most_frequent", ["FR", "DE"]), ("latest", ["UK", "DE"]), ("sum", [6.0, 2.0])],
)
def test_attributes_derived_from_the_log(
    tmp_path: Path, write_spec: Callable[..., Path], how: str, expected: list
) -> None:
    (tmp_path / "tx.csv").write_text(
        "cust,day,amount,qty,where,visits\n"
        "a,2020-01-01,1,1,UK,1\n"
        "a,2020-01-02,1,1,FR,2\n"
        "a,2020-01-03,1,1,FR,\n"
        "a,2020-01-04,1,1,UK,3\n"
        "a,2020-01-05,1,1,FR,\n"
        "a,2020-01-06,1,1,UK,\n"
        "b,2020-01-01,1,1,DE,2\n"
    )
    column = "visits" if how == "sum" else "where"
    spec = tx_spec("tx.csv")
    spec["data"]["attributes"] = {"behavioural": [column], "from_log": {column: how}}
    built = build_features(load_spec(write_spec(spec)))
    assert built.table[column].tolist() == expected
    assert column in built.features
