"""Stable segment ids: a relabelled but equal segmentation keeps the champion's ids."""

from __future__ import annotations

import numpy as np

from segml.alignment import align_labels


def test_permuted_labels_map_back_to_champion_ids() -> None:
    champion = np.repeat([0, 1, 2, 3], 50)
    relabelled = np.repeat([2, 0, 3, 1], 50)
    alignment = align_labels(relabelled, champion)
    assert alignment.label_to_id == {2: 0, 0: 1, 3: 2, 1: 3}
    assert alignment.new_ids == ()
    assert all(j == 1.0 for j in alignment.matched.values())


def test_unmatched_segments_get_fresh_ids_above_the_champions() -> None:
    champion = np.repeat([0, 1, -1], [60, 60, 30])
    new = np.repeat([5, 7, 9], [60, 60, 30])  # 9 is a group the champion called noise
    alignment = align_labels(new, champion)
    assert alignment.label_to_id == {5: 0, 7: 1, 9: 2}
    assert alignment.new_ids == (2,)


def test_weak_overlap_is_not_a_match() -> None:
    champion = np.repeat([0, 1], [100, 100])
    new = np.tile([0, 1, 2, 3, 4], 40)  # each new segment is spread over both old ones
    alignment = align_labels(new, champion, next_id=10)
    assert alignment.matched == {}
    assert sorted(alignment.label_to_id.values()) == [10, 11, 12, 13, 14]
