"""Customer features: transactions -> one row per customer, and the fitted preprocessing."""

from __future__ import annotations

import datetime as dt
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from segml import privacy
from segml.customer_value import History, ValueModel, fit_value_model, history
from segml.data import RETURN_COLUMN, Intake, read_customers
from segml.spec import Spec

RFM_COLUMNS = (
    "recency_days",
    "frequency",
    "monetary_total",
    "monetary_mean",
    "tenure_days",
    "interpurchase_days",
)
QUANTITY_COLUMN = "quantity_total"
CLOCK_COLUMNS = ("recency_days", "tenure_days")
"""Days counted up to the reference date: they grow as time passes even when no customer
changes, so scoring the same customers later shifts them by construction."""
CUMULATIVE_COLUMNS = ("frequency", "monetary_total", QUANTITY_COLUMN)
"""Totals over every purchase up to the reference date: a later date can only add to them, so
they drift when customers keep buying (counted as drift: how much they grow is news)."""
MISSING_CATEGORY = "missing"
"""What a missing categorical value is imputed as (and counted as, in drift checks)."""
MAX_CATEGORIES = 30
"""Categories beyond the most frequent ones are pooled, so a free-text column cannot explode X."""


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """The customer table (id, features, outcomes), its feature columns, the intake and the
    value model fitted for ``features.clv`` (None without it)."""

    table: pd.DataFrame
    features: list[str]
    intake: Intake
    value: ValueModel | None = None


def build_features(spec: Spec, reference_date: dt.date | None = None) -> FeatureSet:
    """Read the spec's data and build one row per customer as of ``reference_date``, with the
    ``features.clv`` columns of a value model fitted on them."""
    intake = read_customers(spec, reference_date)
    table = customer_table(spec, intake, reference_date)
    value = None
    if spec.features.clv is not None:
        past = value_history(spec, intake, table)
        value = fit_value_model(spec.features.clv, past)
        table = _joined(table, value.columns(past))
    return FeatureSet(table, feature_columns(spec, table), intake, value)


def value_history(spec: Spec, intake: Intake, table: pd.DataFrame) -> History:
    """The customers of ``table`` (from ``customer_table``) as the value models see them."""
    repeat_value = repeat_order_value(intake.frame, spec)
    return history(table, repeat_value.reindex(table[spec.data.id_column]))


def with_value(spec: Spec, intake: Intake, table: pd.DataFrame, value: ValueModel) -> pd.DataFrame:
    """``table`` with the ``features.clv`` columns that ``value`` predicts for its customers."""
    return _joined(table, value.columns(value_history(spec, intake, table)))


def _joined(table: pd.DataFrame, predicted: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([table, predicted.set_axis(table.index)], axis=1)


def repeat_order_value(transactions: pd.DataFrame, spec: Spec) -> pd.Series:
    """Per customer, the mean value of their orders after the first (orders as ``frequency``
    counts them; returns left out), NaN without a repeat order: the Gamma-Gamma model's
    spend, which leaves out the first purchase as the papers do."""
    tx = spec.data.transactions
    assert tx is not None
    id_col = spec.data.id_column
    purchases = transactions
    if RETURN_COLUMN in transactions:
        purchases = transactions[~transactions[RETURN_COLUMN]]
    day = purchases[tx.timestamp].dt.normalize()
    order = purchases[tx.order_id] if tx.order_id else day
    orders = (
        purchases.assign(_order=order, _day=day)
        .groupby([id_col, "_order"], sort=False)
        .agg(_day=("_day", "min"), _value=(tx.amount_column, "sum"))
        .reset_index()
        .sort_values([id_col, "_day", "_order"], kind="stable")
    )
    repeats = orders[orders.duplicated(id_col)]
    return repeats.groupby(id_col)["_value"].mean()


def customer_table(
    spec: Spec, intake: Intake, reference_date: dt.date | None = None
) -> pd.DataFrame:
    """One row per customer: the id column, feature columns and outcome columns.

    For transactions, features are computed as of ``reference_date`` (default: the spec's,
    else the last transaction's day) and declared attributes are joined by id.
    """
    data = spec.data
    if data.kind == "customers":
        return intake.frame
    assert data.transactions is not None
    when = reference_date or data.reference_date or intake.frame[data.transactions.timestamp].max()
    table = rfm_features(intake.frame, spec, pd.Timestamp(when))
    if intake.attributes is not None:
        table = table.merge(intake.attributes, on=data.id_column, how="left")
    return table


def rfm_features(transactions: pd.DataFrame, spec: Spec, reference: pd.Timestamp) -> pd.DataFrame:
    """Recency, frequency, monetary, tenure and inter-purchase interval per customer.

    Frequency counts distinct orders (the spec's ``order_id``) or else distinct purchase days;
    return lines (kept under ``returns: net``) count in the spend and quantity, never as
    orders or purchase days. ``monetary_mean`` is the mean order value;
    ``interpurchase_days`` is NaN for one-time buyers.
    """
    tx = spec.data.transactions
    assert tx is not None
    id_col = spec.data.id_column
    day = transactions[tx.timestamp].dt.normalize()
    order_key = transactions[tx.order_id] if tx.order_id else day
    purchase = (
        ~transactions[RETURN_COLUMN]
        if RETURN_COLUMN in transactions
        else pd.Series(True, index=transactions.index)
    )
    lines = transactions.assign(_day=day.where(purchase), _order=order_key.where(purchase))
    grouped = lines.groupby(id_col, sort=True)
    first = grouped["_day"].min()
    last = grouped["_day"].max()
    frequency = grouped["_order"].nunique()
    total = grouped[tx.amount_column].sum()
    table = pd.DataFrame(
        {
            "recency_days": (reference - last).dt.days.astype("float64"),
            "frequency": frequency.astype("float64"),
            "monetary_total": total,
            "monetary_mean": total / frequency,
            "tenure_days": (reference - first).dt.days.astype("float64"),
            "interpurchase_days": ((last - first).dt.days / (frequency - 1)).where(frequency > 1),
        }
    )
    if tx.quantity:
        table[QUANTITY_COLUMN] = grouped[tx.quantity].sum()
    for column, how in spec.data.attributes.from_log.items():
        table[column] = _from_log(lines, id_col, tx.timestamp, column, how)
    return table.rename_axis(id_col).reset_index()


def _from_log(
    lines: pd.DataFrame, id_col: str, timestamp: str, column: str, how: str
) -> pd.Series:
    """Per customer, an attribute derived from their lines' ``column`` (missing values left
    out): the most frequent value (ties: the smallest), the latest, or an aggregate."""
    present = lines[[id_col, timestamp, column]].dropna(subset=[column])
    if how == "latest":
        return present.sort_values(timestamp, kind="stable").groupby(id_col)[column].last()
    if how != "most_frequent":
        return present.groupby(id_col)[column].agg(how)
    counts = present.groupby([id_col, column]).size().rename("n").reset_index()
    ranked = counts.sort_values([id_col, "n", column], ascending=[True, False, True])
    return ranked.drop_duplicates(id_col).set_index(id_col)[column]


def feature_columns(spec: Spec, table: pd.DataFrame) -> list[str]:
    """The columns of ``table`` that enter the feature matrix (never ids, outcomes, personal)."""
    data = spec.data
    never = {data.id_column, *data.outcomes.columns().values(), *data.personal}
    never |= set(spec.features.exclude)
    if data.kind == "transactions":
        derived = [c for c in (*RFM_COLUMNS, QUANTITY_COLUMN) if c in table.columns]
        if spec.features.clv is not None:
            derived += list(spec.features.clv.segment_on)
        candidates = derived + list(data.attributes.columns())
    else:
        candidates = list(data.attributes.columns())
    return [c for c in dict.fromkeys(candidates) if c not in never]


def build_preprocessor(spec: Spec, table: pd.DataFrame) -> ColumnTransformer:
    """An unfitted preprocessing step for ``table``'s feature columns.

    Numeric columns: median imputation, log1p of heavy-tailed non-negative columns, scaling.
    Categorical columns: imputation, categories of fewer than ``min_report_size`` customers
    (and unseen ones) pooled, and one-hot encoding.
    """
    columns = feature_columns(spec, table)
    categorical = [
        c
        for c in columns
        if c in spec.features.categorical or not pd.api.types.is_numeric_dtype(table[c])
    ]
    numeric = [c for c in columns if c not in categorical]
    numeric_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("log1p", SkewedLog1p(_log1p_columns(spec, numeric), spec.features.skew_threshold)),
            ("scale", StandardScaler()),
        ]
    )
    categorical_steps = Pipeline(
        [
            # pandas' NA also matches NaN and None: text columns hold either, by reader.
            (
                "impute",
                SimpleImputer(
                    strategy="constant", fill_value=MISSING_CATEGORY, missing_values=pd.NA
                ),
            ),
            ("pool", RareCategories(spec.min_report_size)),
            (
                "onehot",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    max_categories=MAX_CATEGORIES,
                    sparse_output=False,
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [("num", numeric_steps, numeric), ("cat", categorical_steps, categorical)],
        verbose_feature_names_out=False,
    )


def with_missing_category(frame: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """``frame`` with missing values of its ``categorical`` columns as ``MISSING_CATEGORY``, as
    the model sees them: a jump in missing values then shows as drift of the column."""
    present = [c for c in categorical if c in frame.columns]
    if not present:
        return frame
    return frame.assign(**{c: frame[c].astype("string").fillna(MISSING_CATEGORY) for c in present})


def column_kinds(preprocessor: ColumnTransformer) -> tuple[list[str], list[str]]:
    """The numeric and the categorical input columns of a fitted ``build_preprocessor`` step."""
    columns = {name: list(cols) for name, _, cols in preprocessor.transformers_}
    return columns.get("num", []), columns.get("cat", [])


def select_columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``frame[names]``; ``frame`` itself when it has exactly those columns, in that order
    (a selection copies every column)."""
    return frame if frame.columns.tolist() == names else frame[names]


def transform_features(preprocessor: ColumnTransformer, frame: pd.DataFrame) -> np.ndarray:
    """``preprocessor.transform(frame)``, bit for bit, without sklearn's per-call overhead.

    A fitted ``build_preprocessor`` step with numeric columns only is applied with numpy from
    its fitted arrays; any other step, and input it rejects or converts otherwise (no rows,
    columns not float64, integer or bool, infinities), goes to ``preprocessor.transform``.
    """
    steps = _numeric_steps(preprocessor)
    if steps is None or len(frame) == 0:
        return preprocessor.transform(frame)
    columns, imputer, log1p, scaler = steps
    numeric = select_columns(frame, columns)
    if not all(
        isinstance(d, np.dtype) and (d == np.float64 or d.kind in "iub") for d in numeric.dtypes
    ):
        return preprocessor.transform(frame)
    X = numeric.to_numpy(dtype=np.float64, copy=True)
    np.copyto(X, imputer.statistics_, where=np.isnan(X))
    if not np.isfinite(X).all():
        return preprocessor.transform(frame)  # it raises on infinities
    if log1p.log_mask_.any():
        X[:, log1p.log_mask_] = np.log1p(np.clip(X[:, log1p.log_mask_], 0, None))
    if scaler.with_mean:
        X -= scaler.mean_
    if scaler.with_std:
        X /= scaler.scale_
    return X


def _numeric_steps(
    preprocessor: ColumnTransformer,
) -> tuple[list[str], SimpleImputer, SkewedLog1p, StandardScaler] | None:
    """The numeric columns and fitted steps of a ``build_preprocessor`` step without
    categorical columns; None for any other step."""
    if (
        type(preprocessor) is not ColumnTransformer
        or not hasattr(preprocessor, "transformers_")
        or preprocessor.transformer_weights
        or preprocessor.remainder != "drop"
    ):
        return None
    numeric, categorical = column_kinds(preprocessor)
    names = {name for name, _, _ in preprocessor.transformers_}
    if categorical or names - {"num", "cat", "remainder"} or not numeric:
        return None
    pipeline = preprocessor.named_transformers_["num"]
    steps = [step for _, step in pipeline.steps] if type(pipeline) is Pipeline else []
    if [type(step) for step in steps] != [SimpleImputer, SkewedLog1p, StandardScaler]:
        return None
    imputer, log1p, scaler = steps
    if not (
        all(isinstance(c, str) for c in numeric)
        and imputer.strategy in ("mean", "median")
        and not imputer.add_indicator
        and isinstance(imputer.missing_values, float)
        and np.isnan(imputer.missing_values)
        and not np.isnan(imputer.statistics_).any()  # a NaN statistic drops its column
        and imputer.statistics_.dtype == np.float64  # a median of float32 columns is float32
        and _fills_with_statistics(imputer)  # a mean of float32 columns fills as float32
    ):
        return None
    return numeric, imputer, log1p, scaler


_EXACT_FILLS: weakref.WeakKeyDictionary[SimpleImputer, tuple[np.ndarray, bool]] = (
    weakref.WeakKeyDictionary()
)
"""Per fitted imputer, its ``statistics_`` and whether it fills with exactly them."""


def _fills_with_statistics(imputer: SimpleImputer) -> bool:
    """Whether ``imputer.transform`` fills missing float64 values with exactly ``statistics_``.

    It fills with the statistics cast to the dtype it was fitted on, so an imputer fitted on
    float32 columns fills with rounded values, although a mean's ``statistics_`` are float64;
    scikit-learn does not expose that dtype, so one all-missing row shows what it fills with.
    The answer is kept per imputer (a refit replaces ``statistics_``): the check costs as
    much as the fast path it guards.
    """
    statistics = imputer.statistics_
    known = _EXACT_FILLS.get(imputer)
    if known is not None and known[0] is statistics:
        return known[1]
    row = np.full((1, statistics.shape[0]), np.nan)
    names = getattr(imputer, "feature_names_in_", None)
    filled = np.asarray(
        imputer.transform(row if names is None else pd.DataFrame(row, columns=names))
    )
    exact = filled.shape == row.shape and np.array_equal(filled[0], statistics)
    _EXACT_FILLS[imputer] = (statistics, exact)
    return exact


def _log1p_columns(spec: Spec, numeric: list[str]) -> tuple[int, ...] | None:
    """Indices of the numeric columns to log1p; None lets the transformer decide by skewness."""
    log1p = spec.features.log1p
    if log1p == "auto":
        return None
    if log1p == "none":
        return ()
    return tuple(numeric.index(c) for c in log1p if c in numeric)


class SkewedLog1p(TransformerMixin, BaseEstimator):
    """Apply log1p to heavy-tailed non-negative columns.

    ``columns=None`` learns them at fit (skewness above ``threshold``); a tuple of indices
    fixes them. The learnt mask is ``log_mask_``.
    """

    def __init__(self, columns: tuple[int, ...] | None = None, threshold: float = 1.0) -> None:
        self.columns = columns
        self.threshold = threshold

    def fit(self, X: np.ndarray, y: object = None) -> SkewedLog1p:
        """Learn which columns to transform."""
        X = np.asarray(X, dtype=float)
        mask = np.zeros(X.shape[1], dtype=bool)
        if self.columns is not None:
            mask[list(self.columns)] = True
        elif len(X) > 2:
            non_negative = np.nanmin(X, axis=0) >= 0
            skewed = np.nan_to_num(stats.skew(X, axis=0, nan_policy="omit")) > self.threshold
            mask = non_negative & skewed
        self.log_mask_ = mask
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """log1p on the learnt columns (negative values are clipped to 0 first)."""
        X = np.array(X, dtype=float)
        X[:, self.log_mask_] = np.log1p(np.clip(X[:, self.log_mask_], 0, None))
        return X

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names pass through unchanged."""
        return np.asarray(input_features, dtype=object)


class RareCategories(TransformerMixin, BaseEstimator):
    """Pool the categories fewer than ``min_count`` training rows share into
    ``privacy.RARE_CATEGORY``, at fit and at transform (unseen ones too), so that the fitted
    encoders after it keep no category of fewer than ``min_count`` customers."""

    def __init__(self, min_count: int = 1) -> None:
        self.min_count = min_count

    def fit(self, X: Any, y: object = None) -> RareCategories:
        """Learn each column's categories shared by at least ``min_count`` rows."""
        frame = pd.DataFrame(np.asarray(X, dtype=object))
        self.kept_ = [privacy.common_values(frame[c], self.min_count) for c in frame.columns]
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """The columns with every category not kept at fit as ``privacy.RARE_CATEGORY``."""
        out = np.array(X, dtype=object)
        for j, kept in enumerate(self.kept_):
            column = pd.Series(out[:, j])
            out[:, j] = column.where(column.isin(kept), privacy.RARE_CATEGORY).to_numpy()
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names pass through unchanged."""
        return np.asarray(input_features, dtype=object)


def outcome_frame(spec: Spec, table: pd.DataFrame) -> pd.DataFrame:
    """Business outcomes per customer, one column per role (revenue, clv, conversion, ...).

    Transactions add what they imply: revenue (total spend, unless declared; a declared revenue
    keeps the spend as ``monetary``), repeat (bought more than once) and recency; customer
    tables contribute the spec's declared outcome columns.
    """
    roles = {role: table[col] for role, col in spec.data.outcomes.columns().items()}
    if spec.features.clv is not None:
        roles |= {role: table[role] for role in ("clv", "p_alive", "expected_purchases")}
    if spec.data.kind == "transactions":
        if "revenue" in roles:  # else revenue is the spend, and one name is enough for it
            roles["monetary"] = table["monetary_total"]
        roles.setdefault("revenue", table["monetary_total"])
        roles |= {
            "repeat": (table["frequency"] > 1).astype(float),
            "recency": table["recency_days"],
        }
    return pd.DataFrame(roles, index=table.index).apply(pd.to_numeric, errors="coerce")


def value_outcome(spec: Spec, table: pd.DataFrame) -> np.ndarray | None:
    """The value whose separation by segment is ``business.value_r2``: CLV, else revenue."""
    outcomes = outcome_frame(spec, table)
    for role in ("clv", "revenue"):
        if role in outcomes:
            return outcomes[role].to_numpy(dtype=float)
    return None
