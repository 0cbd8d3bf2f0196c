"""Stable segment identities: match a new segmentation's segments to the champion's ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

MIN_MATCH_JACCARD = 0.3
"""A new segment inherits a champion id only if they share at least this Jaccard overlap."""


@dataclass(frozen=True, slots=True)
class Alignment:
    """How a new segmentation's raw labels map to segment ids, and why."""

    label_to_id: dict[int, int]
    matched: dict[int, float]
    new_ids: tuple[int, ...]
    champion: str = ""

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready record of the mapping (logged with the model)."""
        return {
            "champion": self.champion,
            "label_to_id": {str(k): v for k, v in self.label_to_id.items()},
            "matched_jaccard": {str(k): round(v, 4) for k, v in self.matched.items()},
            "new_ids": list(self.new_ids),
        }


def align_labels(
    new_labels: np.ndarray, champion_ids: np.ndarray, next_id: int | None = None
) -> Alignment:
    """Map raw labels to the champion's ids by optimal assignment on shared customers.

    Both arrays describe the same customers in the same order (-1: no segment). Matching
    maximises the total number of customers kept in their segment (Hungarian algorithm);
    pairs with Jaccard below ``MIN_MATCH_JACCARD`` are not matched. Unmatched new segments
    get fresh ids from ``next_id`` (default: one above the champion's largest id).
    """
    labels = sorted(int(x) for x in np.unique(new_labels) if x >= 0)
    champions = sorted(int(x) for x in np.unique(champion_ids) if x >= 0)
    both = (new_labels >= 0) & (champion_ids >= 0)
    counts = pd.crosstab(new_labels[both], champion_ids[both]).reindex(
        index=labels, columns=champions, fill_value=0
    )
    overlap = counts.to_numpy(dtype=float)
    new_sizes = np.array([(new_labels == x).sum() for x in labels], dtype=float)[:, None]
    old_sizes = np.array([(champion_ids == x).sum() for x in champions], dtype=float)[None, :]
    jaccard = overlap / np.maximum(new_sizes + old_sizes - overlap, 1)
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    label_to_id: dict[int, int] = {}
    matched: dict[int, float] = {}
    for r, c in zip(rows, cols, strict=True):
        if jaccard[r, c] >= MIN_MATCH_JACCARD:
            label_to_id[labels[r]] = champions[c]
            matched[champions[c]] = float(jaccard[r, c])
    fresh = next_id if next_id is not None else max(champions, default=-1) + 1
    new_ids = []
    for label in labels:
        if label not in label_to_id:
            label_to_id[label] = fresh
            new_ids.append(fresh)
            fresh += 1
    return Alignment(label_to_id, matched, tuple(new_ids))
