"""Segment models fitted directly (no search) for the scoring tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from segml.families.segmentation import fit_segmentation
from segml.features import build_features, build_preprocessor
from segml.model import Segmenter, build_segmenter
from segml.spec import load_spec

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
    loaded = load_spec(folder / "spec.yaml")
    built = build_features(loaded)
    preprocessor = build_preprocessor(loaded, built.table).fit(built.table)
    X = preprocessor.transform(built.table)
    segmentation = fit_segmentation(X, family, params or PARAMS[family], {}, 0)
    return build_segmenter(loaded, built.features, preprocessor, segmentation, built.table, X)
