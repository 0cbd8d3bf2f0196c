"""The algorithm catalogue: every segmentation family segml searches, by name."""

from __future__ import annotations

from segml.families._base import (
    BATCH_ROWS,
    Assigned,
    Choice,
    Dimension,
    Family,
    FloatRange,
    IntRange,
    Space,
    row_batches,
    suggest,
)
from segml.families.gmm import GMMFamily
from segml.families.hdbscan import HDBSCANFamily
from segml.families.kmeans import KMeansFamily
from segml.families.reduction import REDUCTION_SPACE, fit_reducer

FAMILIES: dict[str, Family] = {
    "kmeans": KMeansFamily(),
    "gmm": GMMFamily(),
    "hdbscan": HDBSCANFamily(),
}
"""Every family by name, in the order the study offers them."""

__all__ = [
    "BATCH_ROWS",
    "Assigned",
    "FAMILIES",
    "REDUCTION_SPACE",
    "Choice",
    "Dimension",
    "Family",
    "FloatRange",
    "GMMFamily",
    "HDBSCANFamily",
    "IntRange",
    "KMeansFamily",
    "Space",
    "fit_reducer",
    "row_batches",
    "suggest",
]
