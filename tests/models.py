"""Segment models fitted directly (no search) for the scoring tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from segml.families.segmentation import fit_segmentation
from segml.features import build_features, build_preprocessor
from segml.model import Segmenter, build_segmenter
from segml.spec import Spec, load_spec

PARAMS: dict[str, dict[str, Any]] = {
    "kmeans": {"n_clusters": 5},
    "gmm": {"n_components": 5},
    "hdbscan": {"min_cluster_size": 50, "min_samples": 10},
}


def fit_segmenter(
    folder: Path, family: str, table: pd.DataFrame, spec: dict, params: dict | None = None
) -> Segmenter:
    """A segmenter fitted directly (no search, no MLflow) on ``table``, the spec's source."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / spec["data"]["source"], index=False)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return fit_spec(load_spec(folder / "spec.yaml"), family, params or PARAMS[family])[0]


def fit_spec(spec: Spec, family: str, params: dict[str, Any]) -> tuple[Segmenter, pd.DataFrame]:
    """A segmenter fitted directly on a spec's data, and the customer table it was fitted on."""
    built = build_features(spec)
    preprocessor = build_preprocessor(spec, built.table).fit(built.table)
    X = preprocessor.transform(built.table)
    segmentation = fit_segmentation(X, family, params, {}, 0)
    segmenter = build_segmenter(
        spec, built.features, preprocessor, segmentation, built.table, X, built.value
    )
    return segmenter, built.table
