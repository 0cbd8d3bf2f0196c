"""The optional UMAP step between preprocessing and clustering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from segml.families._base import Choice, FloatRange, IntRange, Space

if TYPE_CHECKING:
    import umap

REDUCTION_SPACE: Space = {
    "reducer": Choice(("none", "umap")),
    "n_components": IntRange(2, 10),
    "n_neighbors": IntRange(5, 50, default=15),
    "min_dist": FloatRange(0.0, 0.5, default=0.0),
}
"""Default search space of the reduction step; ``reducer="none"`` skips it."""


def fit_reducer(X: np.ndarray, params: dict[str, Any], seed: int) -> umap.UMAP | None:
    """Fit the reduction step on ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Preprocessed features.
    params : dict
        ``reducer`` ("none" or "umap"; default "none") and, for UMAP, ``n_components``,
        ``n_neighbors`` and ``min_dist``.
    seed : int
        UMAP's random state. A seed makes UMAP deterministic and single-threaded.

    Returns
    -------
    umap.UMAP or None
        The fitted reducer (its ``embedding_`` holds ``X`` reduced), or None for "none".

    Raises
    ------
    ValueError
        If ``reducer`` is neither "none" nor "umap".
    """
    reducer = params.get("reducer", "none")
    if reducer == "none":
        return None
    if reducer != "umap":
        raise ValueError(f"reducer must be 'none' or 'umap' (got {reducer!r})")
    import umap  # numba-compiled: imported only when a trial asks for it

    model = umap.UMAP(
        n_components=int(params.get("n_components", 2)),
        n_neighbors=int(params.get("n_neighbors", 15)),
        min_dist=float(params.get("min_dist", 0.1)),
        random_state=seed,
        n_jobs=1,
        # Below 4,096 rows UMAP otherwise computes every pairwise distance through a Python
        # callback: 4.0 s against 1.7 s for 1,797 rows (benchmarks/bench_umap_exact.py),
        # paid again on every bootstrap refit.
        force_approximation_algorithm=True,
    )
    return model.fit(X)
