"""How one segmentation became another on the same customers (MONIC-style transitions).

Spiliopoulou et al. (2006), "MONIC: modeling and monitoring cluster transitions": with the
overlap of an old segment X with a new segment Y defined as |X ∩ Y| / |X|,

- X *survived* as Y when Y holds at least ``SURVIVAL`` of X and no other old segment does so;
- X was *absorbed* into Y when Y holds at least ``SURVIVAL`` of X and of another old segment;
- X *split* when at least two new segments each hold ``SPLIT_PART`` of it and together at least
  ``SURVIVAL``;
- X *disappeared* otherwise; a new segment that no old one survived, was absorbed or split into
  is *new*.

Labels are integers; -1 (no segment) is never a segment but its customers count in overlaps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

SURVIVAL = 0.5
SPLIT_PART = 0.2
SURVIVED, ABSORBED, SPLIT, DISAPPEARED = "survived", "absorbed", "split", "disappeared"


def migration_matrix(old: np.ndarray, new: np.ndarray) -> pd.DataFrame:
    """Customers per (old segment, new segment); rows old ids, columns new ids, -1 included."""
    _check_pair(old, new)
    return pd.crosstab(
        pd.Series(old, name="from_segment"), pd.Series(new, name="to_segment"), dropna=False
    )


def migration_share(old: np.ndarray, new: np.ndarray) -> float:
    """Share of customers whose segment id differs between the two assignments."""
    _check_pair(old, new)
    return float(np.mean(old != new)) if old.size else float("nan")


def agreement(old: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """ARI and AMI between two assignments of the same customers."""
    _check_pair(old, new)
    return {
        "ari": float(adjusted_rand_score(old, new)),
        "ami": float(adjusted_mutual_info_score(old, new)),
    }


def transitions(old: np.ndarray, new: np.ndarray) -> tuple[pd.DataFrame, list[int]]:
    """The fate of every old segment, and the new segments nothing old turned into.

    Returns a frame with one row per old segment (``segment_id``, ``fate``, ``into``: the
    new ids it went to, ``kept_share``: its largest overlap) and the sorted new-only ids.
    """
    counts = migration_matrix(old, new)
    segments_old = [s for s in counts.index.astype(int).tolist() if s >= 0]
    segments_new = [s for s in counts.columns.astype(int).tolist() if s >= 0]
    totals = counts.loc[segments_old].sum(axis=1).to_numpy(dtype=float)
    overlap = counts.loc[segments_old, segments_new].to_numpy(dtype=float) / totals[:, None]
    holders = (overlap >= SURVIVAL).sum(axis=0)
    rows, reached = [], set()
    for segment, share in zip(segments_old, overlap, strict=True):
        fate, into = _fate(share, holders, segments_new)
        reached.update(into)
        rows.append((segment, fate, into, float(share.max()) if share.size else 0.0))
    fates = pd.DataFrame(rows, columns=["segment_id", "fate", "into", "kept_share"])
    return fates, [s for s in segments_new if s not in reached]


def _fate(share: np.ndarray, holders: np.ndarray, ids: list[int]) -> tuple[str, list[int]]:
    """An old segment's fate from its overlaps ``share`` with the new segments ``ids``."""
    best = int(share.argmax()) if share.size else None
    if best is not None and share[best] >= SURVIVAL:
        return (SURVIVED if holders[best] == 1 else ABSORBED), [ids[best]]
    parts = np.flatnonzero(share >= SPLIT_PART)
    if parts.size >= 2 and share[parts].sum() >= SURVIVAL:
        return SPLIT, sorted(ids[i] for i in parts)
    return DISAPPEARED, []


def _check_pair(old: np.ndarray, new: np.ndarray) -> None:
    if old.shape != new.shape:
        raise ValueError(f"{old.size} old labels for {new.size} new ones; pass the same customers")
