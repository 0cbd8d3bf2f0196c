"""The benchmark scripts still measure what they claim, on a small run (no timing)."""

from __future__ import annotations

import joblib
import pytest

from .conftest import ROOT


@pytest.fixture
def false_alarms(monkeypatch):
    """``benchmarks/bench_false_alarms.py`` imported as its own directory's script."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_false_alarms

    return bench_false_alarms


def test_false_alarm_benchmark_finds_the_unseen_group_and_no_alarm(false_alarms, tmp_path):
    segmenter = joblib.load(false_alarms.fit_model(tmp_path, "kmeans", 3_000))
    spec = false_alarms.growth_off(segmenter.spec, 0.005)
    changed = false_alarms.scored(segmenter, spec, 20_000, 100, 0.03)
    growth = false_alarms.group_growth(*changed)
    # The script must match output rows to the batch by id: novel customers come last in the
    # output, and a match by position once reported no group, silently.
    assert growth >= 3, "the unseen group is a candidate, well above the default growth"
    steady, _ = false_alarms.scored(segmenter, spec, 20_000, 100, 0.0)
    assert (steady.emerging.table["growth"] < 3).all()
