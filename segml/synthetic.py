"""Deterministic synthetic customers with known segments, for tests, demos and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ("engagement", "price_sensitivity", "basket_index", "digital_affinity")
ID_COLUMN = "customer_id"
TRUTH_COLUMN = "true_segment"
REVENUE_COLUMN = "revenue"
CONVERSION_COLUMN = "converted"


def segment_centres(n_segments: int, separation: float, seed: int) -> np.ndarray:
    """``n_segments + 1`` centres at least ``separation`` apart; the last is the unseen group's.

    The centres depend only on ``seed`` and ``separation``, so a model trained on one sample
    and a batch drawn later share the same segments.
    """
    rng = np.random.default_rng(seed)
    centres: list[np.ndarray] = []
    while len(centres) < n_segments + 1:
        candidate = rng.uniform(-2 * separation, 2 * separation, size=len(FEATURES))
        if all(np.linalg.norm(candidate - c) >= separation for c in centres):
            centres.append(candidate)
    return np.array(centres)


def synthetic_customers(
    n: int = 2_000,
    n_segments: int = 5,
    *,
    seed: int = 0,
    new_group_share: float = 0.0,
    separation: float = 8.0,
    structure_seed: int = 0,
    id_offset: int = 0,
) -> pd.DataFrame:
    """Customers drawn from ``n_segments`` unit-variance Gaussian segments of equal size.

    Parameters
    ----------
    n
        Number of customers (including the new group).
    new_group_share
        Share of customers drawn from an extra, previously unseen segment (truth id
        ``n_segments``), placed as far from the others as the generator allows.
    separation
        Minimum distance between segment centres, in units of the segments' spread.
    seed
        Seeds the draw of customers; ``structure_seed`` seeds the segment centres.

    Returns
    -------
    DataFrame
        ``customer_id``, the feature columns, outcomes ``revenue`` and ``converted``, and the
        truth ``true_segment`` (never a feature).
    """
    rng = np.random.default_rng(seed)
    centres = segment_centres(n_segments, separation, structure_seed)
    n_new = round(n * new_group_share)
    truth = np.concatenate(
        [rng.integers(0, n_segments, size=n - n_new), np.full(n_new, n_segments)]
    )
    rng.shuffle(truth)
    X = centres[truth] + rng.normal(size=(n, len(FEATURES)))
    value_level = np.linspace(3.0, 6.0, n_segments + 1)[truth]
    conversion_rate = np.linspace(0.02, 0.4, n_segments + 1)[truth]
    frame = pd.DataFrame(X, columns=list(FEATURES))
    frame.insert(0, ID_COLUMN, [f"C{i:07d}" for i in range(id_offset, id_offset + n)])
    frame[REVENUE_COLUMN] = np.round(np.exp(value_level + 0.3 * rng.normal(size=n)), 2)
    frame[CONVERSION_COLUMN] = (rng.random(n) < conversion_rate).astype(int)
    frame[TRUTH_COLUMN] = truth
    return frame


def structure_free_customers(n: int = 2_000, *, seed: int = 0) -> pd.DataFrame:
    """Customers with no segment structure: one isotropic Gaussian cloud."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
    frame.insert(0, ID_COLUMN, [f"C{i:07d}" for i in range(n)])
    frame[REVENUE_COLUMN] = np.round(np.exp(4 + 0.5 * rng.normal(size=n)), 2)
    frame[CONVERSION_COLUMN] = (rng.random(n) < 0.1).astype(int)
    return frame


def synthetic_spec(source: str, name: str = "synthetic", **overrides: object) -> dict:
    """A spec (as a YAML-ready dict) for a table written from ``synthetic_customers``."""
    spec: dict = {
        "name": name,
        "question": "Recover the known synthetic segments.",
        "data": {
            "source": source,
            "kind": "customers",
            "id_column": ID_COLUMN,
            "attributes": {"behavioural": list(FEATURES)},
            "outcomes": {"revenue": REVENUE_COLUMN, "conversion": CONVERSION_COLUMN},
        },
        "features": {"log1p": "none"},
        "registry": {"model_name": name},
    }
    spec.update(overrides)
    return spec
