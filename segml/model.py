"""The segment model: a fitted segmentation with its catalogue, as an ``mlflow.pyfunc`` model."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import AnyType, ParamSchema, ParamSpec

from segml import __version__
from segml._intake import clean_ids
from segml._rows import Reasons
from segml.customer_value import ValueModel
from segml.data import read_attribute_table
from segml.errors import DataError, ModelFormatError
from segml.families import FAMILIES
from segml.families.segmentation import Segmentation
from segml.features import (
    CLOCK_COLUMNS,
    column_kinds,
    select_columns,
    transform_features,
    with_missing_category,
)
from segml.metrics.drift import DriftReference, drift_reference
from segml.naming import segment_names
from segml.novelty import (
    TrainingDensity,
    fit_density,
    joint_quantile,
    micro_clusters,
    segment_shapes,
)
from segml.privacy import example_row, pool_rare, without_training_rows
from segml.spec import Spec

FORMAT_VERSION = 5
"""The layout of a saved segment model (the ``Segmenter`` and what it holds). Raise it with any
change a model saved before could not be read back with: models of another version are refused
on load, with what to do, rather than read with guessed defaults. (2: the spec's line items,
returns and attributes from the log; file names instead of paths. 3: the fitted value model.
4: the training density as micro-clusters instead of the novel training customers. 5: the
clock features' ceiling.)"""
FORMAT_VERSION_KEY = "segml_format_version"
"""The key of ``FORMAT_VERSION`` in a logged model's ``model_config`` (its ``MLmodel`` file),
readable before the segmenter is unpickled."""
NOVELTY_QUANTILE = 0.99
"""Training customers above this quantile of novelty count as novel; the scorer's threshold."""
SEES_DENSITY = ("gmm",)
"""Families whose own novelty is a density on the features they cluster (the likelihood):
without a reducer, it sees what the training micro-clusters see, at no extra cost. k-means'
distance to a centroid and HDBSCAN's GLOSH miss an unusual combination of ordinary values
(benchmarks/results/emerging_designs.md)."""
SHAPED = ("kmeans",)
"""Families whose segments, without a reducer, are ellipses in the preprocessed features: their
novelty is judged by the segments' own shapes (:class:`~segml.novelty.SegmentShapes`)."""
SEGMENT_ID = "segment_id"
SEGMENT_NAME = "segment_name"
CONFIDENCE = "confidence"
NOVELTY_SCORE = "novelty_score"
IS_NOVEL = "is_novel"
NO_SEGMENT = "no segment"
"""The segment name of customers no segment takes (segment id -1)."""
ARTIFACT_KEY = "segmenter"
CUSTOMERS_PARAM = "customers"
"""The pyfunc parameter that names the batch's attribute table (``segml score --customers``)."""
RUNTIME_PACKAGES = (
    "mlflow",
    "scikit-learn",
    "hdbscan",
    "umap-learn",
    "pandas",
    "numpy",
    "scipy",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "joblib",
)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Customers' segments as a segment model assigns them, one entry per customer.

    Attributes
    ----------
    X : ndarray of shape (n_customers, n_features)
        The customers' preprocessed features (where novelty and emerging segments are judged).
    Z : ndarray of shape (n_customers, n_dims)
        The customers in the space the clusterer saw (``X`` itself without a reducer).
    segment_ids : ndarray of int64
        Stable segment ids; -1 = no segment.
    confidence, novelty : ndarray of float64
        The family's confidence (0 without a segment) and novelty score.
    is_novel : ndarray of bool
        Novelty above the calibrated threshold, or far from every training customer (see
        :class:`~segml.novelty.TrainingDensity`): unlike the training customers, of whom 1 -
        ``NOVELTY_QUANTILE`` were. A customer no segment takes (HDBSCAN's noise) is not novel
        for that alone: a fifth of the training customers may be noise.
    """

    X: np.ndarray
    Z: np.ndarray
    segment_ids: np.ndarray
    confidence: np.ndarray
    novelty: np.ndarray
    is_novel: np.ndarray


@dataclass(frozen=True, slots=True)
class Segmenter:
    """Everything needed to assign customers, fitted once: preprocessing, reducer, clusterer,
    the segment catalogue, the novelty calibration and the training distribution of the input
    columns (for drift checks) and of its customers as micro-clusters (for novelty and emerging
    segments), the value model of ``features.clv`` (None without it), saved in model format
    ``format_version``. Pure Python; no MLflow inside."""

    spec: Spec
    features: list[str]
    preprocessor: Any
    segmentation: Segmentation
    catalog: pd.DataFrame
    novelty_threshold: float
    reference: DriftReference
    density: TrainingDensity
    clock_ceiling: np.ndarray
    label_to_id: dict[int, int] = field(default_factory=dict)
    value: ValueModel | None = None
    format_version: int = FORMAT_VERSION

    @property
    def id_column(self) -> str:
        """The customer id column of inputs and outputs."""
        return self.spec.data.id_column

    def preprocess(self, table: pd.DataFrame) -> np.ndarray:
        """The customers' preprocessed features: the space every quality figure is measured in,
        with the clock features at most as far as at training (``clock_ceiling``)."""
        X = transform_features(self.preprocessor, select_columns(table, self.features))
        return np.minimum(X, self.clock_ceiling, out=X)

    def embed(self, table: pd.DataFrame) -> np.ndarray:
        """The customers in the space the clusterer saw."""
        return self.segmentation.embed(self.preprocess(table))

    def assign(self, table: pd.DataFrame) -> Assignment:
        """The segments of customers (one row each), with their features and model-space
        coordinates."""
        X = self.preprocess(table)
        Z = self.segmentation.embed(X)
        found = FAMILIES[self.segmentation.family].assign(self.segmentation.estimator, Z)
        ids = self.segment_ids(found.labels)
        is_novel = found.novelty > self.novelty_threshold
        if judged_by_density(self.segmentation):
            is_novel |= self.density.novelty(X) > self.density.threshold
        confidence = np.where(ids >= 0, found.confidence, 0.0)
        return Assignment(X, Z, ids, confidence, found.novelty, is_novel)

    def predict(self, table: pd.DataFrame) -> pd.DataFrame:
        """One row per customer: id, segment id and name, confidence, novelty, is_novel.

        ``table`` holds one row per customer (the id and the model's feature columns), as the
        pyfunc signature says; a transaction log is aggregated by ``segml score`` or
        :func:`segml.features.customer_table`, never guessed from its columns.
        """
        found = self.assign(table)
        return pd.DataFrame(
            {
                self.id_column: table[self.id_column].to_numpy(),
                SEGMENT_ID: found.segment_ids,
                SEGMENT_NAME: np.asarray(self.names_by_position(), dtype=object)[
                    found.segment_ids + 1
                ],
                CONFIDENCE: found.confidence,
                NOVELTY_SCORE: found.novelty,
                IS_NOVEL: found.is_novel,
            }
        )

    def with_attributes(self, rows: pd.DataFrame, customers: Path) -> pd.DataFrame:
        """``rows`` (one per customer) with the columns of this batch's attribute table
        ``customers`` (read and checked as at intake), joined by id; for a transaction model
        trained with one (``data.customers``)."""
        data = self.spec.data
        if not data.table_attributes:
            raise DataError(f"{customers}: this model takes no attribute table")
        table = read_attribute_table(self.spec, customers)
        ids = clean_ids(rows[self.id_column], Reasons(len(rows)))
        known = table.set_index(self.id_column)[list(data.table_attributes)]
        joined = known.reindex(ids.to_numpy()).set_axis(rows.index)
        return rows.drop(columns=list(data.table_attributes), errors="ignore").join(joined)

    def segment_names(self) -> dict[int, str]:
        """Segment id to name, from the catalogue."""
        return dict(zip(self.catalog[SEGMENT_ID], self.catalog[SEGMENT_NAME], strict=True))

    def names_by_position(self) -> list[str]:
        """Segment names at position ``segment id + 1``: ``NO_SEGMENT`` first and in id gaps."""
        named = self.segment_names()
        names = [NO_SEGMENT] * (max(named, default=-1) + 2)
        for segment, name in named.items():
            names[segment + 1] = name
        return names

    def segment_ids(self, labels: np.ndarray) -> np.ndarray:
        """Stable segment ids for the clusterer's raw labels (-1 stays -1)."""
        lookup = np.full(labels.max(initial=-1) + 2, -1, dtype=np.int64)
        for label, segment in self.label_to_id.items():
            if label + 1 < len(lookup):
                lookup[label + 1] = segment
        return lookup[labels + 1]

    def with_ids(self, label_to_id: dict[int, int], catalog: pd.DataFrame) -> Segmenter:
        """A copy whose segments carry other ids (and names), e.g. aligned to the champion."""
        return replace(self, label_to_id=label_to_id, catalog=catalog)


def clock_ceiling(preprocessor: Any, X: np.ndarray, transactions: bool) -> np.ndarray:
    """The most each preprocessed column may be: for a transaction model's clock features
    (:data:`~segml.features.CLOCK_COLUMNS`) the training maximum, infinity for the others.

    Scored at a later reference date, customers who stopped buying have a recency no training
    customer could have had; capped, they read as the most lapsed customers seen at training
    (what they are) instead of as a new kind of customer (the drift check shows the shift).
    """
    ceiling = np.full(X.shape[1], np.inf)
    if transactions:
        for position, name in enumerate(column_kinds(preprocessor)[0]):  # numeric come first
            if name in CLOCK_COLUMNS:
                ceiling[position] = X[:, position].max()
    return ceiling


def judged_by_density(segmentation: Segmentation) -> bool:
    """Whether the training density flags novel customers besides the family's own novelty:
    for every family behind a reducer, and for those whose own novelty sees no density."""
    return segmentation.reducer is not None or segmentation.family not in SEES_DENSITY


def novelty_thresholds(
    novelty: np.ndarray, distance: np.ndarray, joint: bool
) -> tuple[float, float]:
    """Thresholds of the family's novelty and of the distance to the training density, each
    at the training quantile ``NOVELTY_QUANTILE``, or, when both flag customers (``joint``),
    at the quantile that leaves ``1 - NOVELTY_QUANTILE`` of them above either (two tests
    would otherwise flag nearly twice as many customers, each one paid again by the
    emerging-segment search)."""
    quantile = NOVELTY_QUANTILE
    if joint:
        quantile = joint_quantile([novelty, distance], NOVELTY_QUANTILE)
    return float(np.quantile(novelty, quantile)), float(np.quantile(distance, quantile))


def build_segmenter(
    spec: Spec,
    features: list[str],
    preprocessor: Any,
    segmentation: Segmentation,
    table: pd.DataFrame,
    Z: np.ndarray,
    value: ValueModel | None = None,
) -> Segmenter:
    """Package a refitted segmentation with its catalogue and novelty calibration (``Z``: the
    training customers in the clusterer's space; ``value``: the model that scoring predicts
    the ``features.clv`` columns with)."""
    spec = spec.model_copy(update={"data": spec.data.recorded()})
    categorical = column_kinds(preprocessor)[1]
    k = spec.min_report_size
    shown = pool_rare(with_missing_category(table[features], categorical), categorical, k)
    labels = segmentation.labels
    segments = sorted(int(s) for s in np.unique(labels) if s >= 0)
    label_to_id = {label: i for i, label in enumerate(segments)}
    X = transform_features(preprocessor, select_columns(table, features))
    customers = micro_clusters(X, k)
    shaped = segmentation.reducer is None and segmentation.family in SHAPED
    shapes = segment_shapes(X, labels) if shaped else None
    novelty = FAMILIES[segmentation.family].assign(segmentation.estimator, Z).novelty
    distance = (shapes or customers).distance(X)
    own, far = novelty_thresholds(novelty, distance, judged_by_density(segmentation))
    novel = (novelty > own) | (labels < 0) | (distance > far)
    draft = Segmenter(
        spec,
        features,
        preprocessor,
        segmentation,
        catalog=pd.DataFrame(),
        novelty_threshold=own,
        reference=drift_reference(shown, categorical, k),
        density=fit_density(X, customers, far, k, novel, shapes),
        clock_ceiling=clock_ceiling(preprocessor, X, spec.data.kind == "transactions"),
        label_to_id=label_to_id,
        value=value,
    )
    ids = draft.segment_ids(labels)
    return replace(draft, catalog=segment_catalog(shown, ids))


def segment_catalog(features: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Per segment: id, generated name (see :mod:`segml.naming`), customers and share of the
    training base."""
    segments = sorted(int(s) for s in np.unique(ids) if s >= 0)
    names = segment_names(features, ids, segments)
    counts = pd.Series(ids).value_counts()
    return pd.DataFrame(
        {
            SEGMENT_ID: segments,
            SEGMENT_NAME: [names[s] for s in segments],
            "customers": [int(counts[s]) for s in segments],
            "share": [float(counts[s] / len(ids)) for s in segments],
        }
    )


class SegmentModel(PythonModel):
    """The MLflow face of a ``Segmenter``: ``predict`` returns one row per customer."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the fitted segmenter from the model's artifacts.

        Raises
        ------
        ModelFormatError
            The model was saved in another model format than ``FORMAT_VERSION``.
        """
        config = context.model_config or {}
        check_format(config.get(FORMAT_VERSION_KEY))
        segmenter: Segmenter = joblib.load(context.artifacts[ARTIFACT_KEY])
        check_format(segmenter.format_version)
        self.segmenter = segmenter

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Assign each customer (one row each: id and feature columns) to a segment.

        ``params={"customers": PATH}`` joins a transaction model's attribute columns from this
        batch's table, as ``segml score --customers`` does.
        """
        customers = (params or {}).get(CUSTOMERS_PARAM)
        if customers:
            model_input = self.segmenter.with_attributes(model_input, Path(customers))
        return self.segmenter.predict(natural_input(self.segmenter, model_input))


def natural_input(segmenter: Segmenter, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as the segmenter takes it: numeric features as numbers (the signature lets
    integers, decimals and Python objects through; see ``_input_schema``).

    Raises
    ------
    DataError
        A missing id or feature column, or a numeric feature holding something else.
    """
    wanted = [segmenter.id_column, *segmenter.features]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        attributes = set(missing) & set(segmenter.spec.data.table_attributes)
        hint = f'; pass params={{"{CUSTOMERS_PARAM}": PATH}} for them' if attributes else ""
        raise DataError(f"model input lacks column(s) {', '.join(missing)}{hint}")
    numeric = column_kinds(segmenter.preprocessor)[0]
    converted: dict[str, pd.Series] = {}
    for column in numeric:
        if frame[column].dtype.kind not in "fiub":
            try:
                converted[column] = pd.to_numeric(frame[column])
            except (ValueError, TypeError) as exc:
                raise DataError(f"model input column {column!r}: not a number ({exc})") from None
    return frame.assign(**converted) if converted else frame


def check_format(found: object) -> None:
    """Refuse a segment model saved in model format ``found`` (None: before formats were
    recorded) unless it is this segml's ``FORMAT_VERSION``.

    Raises
    ------
    ModelFormatError
        With what to do: a model cannot be converted, only trained again.
    """
    if found != FORMAT_VERSION:
        saved = "no recorded format" if found is None else f"format {found}"
        raise ModelFormatError(
            f"segment model saved in {saved}; segml {__version__} reads format "
            f"{FORMAT_VERSION} only: re-train it with this segml (segml tune SPEC), then "
            "register or export the new model (or load this one with the segml that saved it)"
        )


def log_segment_model(
    segmenter: Segmenter,
    table: pd.DataFrame,
    run_id: str,
    pages: Mapping[str, str] | None = None,
) -> str:
    """Log ``segmenter`` as the pyfunc model ``model`` of ``run_id``, with ``pages`` (file name
    to text, e.g. the segment report) among its artifacts; return its model URI."""
    example = input_example(segmenter, table)
    output = segmenter.predict(example)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        path = Path(tmp) / "segmenter.joblib"
        joblib.dump(saved(segmenter), path)
        artifacts = {ARTIFACT_KEY: str(path)}
        for name, text in (pages or {}).items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
            artifacts[Path(name).stem] = str(Path(tmp) / name)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts=artifacts,
            code_paths=[str(Path(__file__).parent)],
            signature=ModelSignature(
                _input_schema(segmenter, table),
                _output_schema(output),
                params=ParamSchema([ParamSpec(CUSTOMERS_PARAM, "string", "")]),
            ),
            input_example=example,
            pip_requirements=pinned_requirements(),
            model_config={FORMAT_VERSION_KEY: segmenter.format_version},
        )
    return info.model_uri


def input_example(segmenter: Segmenter, table: pd.DataFrame) -> pd.DataFrame:
    """A made-up customer (:func:`segml.privacy.example_row`), so no real row leaves the data."""
    k = segmenter.spec.min_report_size
    return pd.DataFrame([example_row(table, segmenter.id_column, segmenter.features, k)])


def saved(segmenter: Segmenter) -> Segmenter:
    """``segmenter`` as a model file keeps it: the clusterer without the training rows that
    assigning does not read, and no training labels."""
    segmentation = segmenter.segmentation
    stripped = replace(
        segmentation,
        estimator=without_training_rows(segmentation.estimator),
        labels=np.empty(0, dtype=segmentation.labels.dtype),
    )
    return replace(segmenter, segmentation=stripped)


def _input_schema(segmenter: Segmenter, table: pd.DataFrame) -> Schema:
    """The id and the features, as customers' data holds them.

    Ids and numeric features are ``Any``, converted by ``natural_input``: MLflow's ``double``
    refuses 64-bit integers and its ``long`` refuses decimals, yet ids and counts are integers
    as often as not. A transaction model's attribute-table columns are optional, because
    ``params={"customers": PATH}`` may supply them; every other feature is required.
    """
    optional = set(segmenter.spec.data.table_attributes)
    columns: list[ColSpec | TensorSpec] = [ColSpec(AnyType(), segmenter.id_column)]
    for column in segmenter.features:
        text = not pd.api.types.is_numeric_dtype(table[column])
        kind = "string" if text else AnyType()
        columns.append(ColSpec(kind, column, required=column not in optional))
    return Schema(columns)


def _output_schema(output: pd.DataFrame) -> Schema:
    kinds = {"i": "long", "f": "double", "b": "boolean"}
    columns: list[ColSpec | TensorSpec] = [
        ColSpec(kinds.get(output[c].dtype.kind, "string"), c) for c in output.columns
    ]
    return Schema(columns)


def pinned_requirements() -> list[str]:
    """The installed versions of what a segment model needs at load time."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]
