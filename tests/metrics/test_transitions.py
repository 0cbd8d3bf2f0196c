"""MONIC transitions and migration between two assignments of the same customers."""

from __future__ import annotations

import numpy as np
import pytest

from segml.metrics import agreement, migration_matrix, migration_share, transitions


def _labels(*blocks: tuple[int, int]) -> np.ndarray:
    """Concatenate ``(label, count)`` blocks."""
    return np.concatenate([np.full(n, label) for label, n in blocks])


def test_each_fate_is_recognised() -> None:
    # old 0 survives as 10; old 1 and 2 are absorbed into 11; old 3 splits into 12 and 13;
    # old 4 scatters (disappears); new 14 comes from old 4's customers only partly.
    old = _labels((0, 100), (1, 50), (2, 50), (3, 100), (4, 100))
    new = _labels(
        (10, 90), (-1, 10), (11, 50), (11, 50), (12, 45), (13, 45), (-1, 10),
        (14, 30), (10, 10), (11, 10), (12, 10), (13, 10), (-1, 30),
    )  # fmt: skip
    fates, new_only = transitions(old, new)
    assert fates.set_index("segment_id")["fate"].to_dict() == {
        0: "survived",
        1: "absorbed",
        2: "absorbed",
        3: "split",
        4: "disappeared",
    }
    assert fates.set_index("segment_id").loc[3, "into"] == [12, 13]
    assert fates.set_index("segment_id").loc[0, "kept_share"] == pytest.approx(0.9)
    assert new_only == [14]


def test_identical_assignments_agree_fully() -> None:
    old = _labels((0, 40), (1, 60), (-1, 5))
    assert agreement(old, old) == {"ari": pytest.approx(1.0), "ami": pytest.approx(1.0)}
    assert migration_share(old, old) == 0.0
    counts = migration_matrix(old, old)
    assert counts.loc[1, 1] == 60 and counts.loc[-1, -1] == 5 and counts.to_numpy().sum() == 105


def test_migration_counts_moves() -> None:
    old = _labels((0, 80), (1, 20))
    new = _labels((0, 70), (1, 30))
    assert migration_share(old, new) == pytest.approx(0.1)
    assert migration_matrix(old, new).loc[0, 1] == 10


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same customers"):
        migration_share(np.zeros(3, int), np.zeros(4, int))
