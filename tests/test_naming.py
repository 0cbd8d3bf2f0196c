"""Segment names: categorical traits, heavy-tailed value columns by rank, no contradiction."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segml.model import SEGMENT_NAME, segment_catalog


def _names(features: pd.DataFrame, ids: np.ndarray) -> list[str]:
    return segment_catalog(features, ids)[SEGMENT_NAME].tolist()


def test_categorical_attributes_name_the_segments_they_set_apart() -> None:
    ids = np.repeat([0, 1, 2], 100)
    channel = np.repeat(["web", "store", "phone"], 100).astype(object)
    channel[::10] = "web"  # a little mixing; each segment is still mostly one channel
    features = pd.DataFrame({"channel": channel, "region": np.tile(["north", "south"], 150)})
    assert _names(features, ids) == ["Channel web", "Channel store", "Channel phone"]


def test_heavy_tailed_spend_is_named_by_rank() -> None:
    rng = np.random.default_rng(0)
    spend = np.sort(rng.lognormal(3.0, 2.0, size=1_000))
    ids = (np.arange(1_000) >= 950).astype(int)  # segment 1: the 5% who spend the most
    frame = pd.DataFrame({"monetary_total": spend})
    assert spend[ids == 1].sum() / spend.sum() > 0.5
    assert _names(frame, ids) == ["Typical", "Top 10% spend"]


def test_a_segment_is_called_repeat_only_when_most_of_it_repeats() -> None:
    rng = np.random.default_rng(1)
    ids = np.repeat([0, 1, 2], 200)
    interval = rng.normal(60.0, 5.0, size=600)
    interval[:200] = rng.normal(10.0, 2.0, size=200)  # segment 0: fast repeaters
    interval[200:330] = np.nan  # segment 1: 65% one-off buyers, the rest fast
    interval[330:400] = rng.normal(10.0, 2.0, size=70)
    frequency = np.where(np.isnan(interval), 1.0, 3.0)
    frame = pd.DataFrame({"interpurchase_days": interval, "frequency": frequency})
    names = _names(frame, ids)
    assert "fast repeat" in names[0].lower()
    assert "repeat" not in names[1].lower() and "one-off" in names[1].lower()
