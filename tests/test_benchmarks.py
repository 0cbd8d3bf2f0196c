"""The benchmark scripts still measure what they claim, on a small run (no timing)."""

from __future__ import annotations

import joblib
import pandas as pd
import pytest

from segml.model import SEGMENT_ID
from segml.synthetic import ID_COLUMN


def test_false_alarm_benchmark_finds_the_unseen_group_and_no_alarm(bench, tmp_path):
    false_alarms = bench("bench_false_alarms")
    segmenter = joblib.load(false_alarms.fit_model(tmp_path, "kmeans", 3_000))
    spec = false_alarms.growth_off(segmenter.spec, 0.005)
    changed = false_alarms.scored(segmenter, spec, 20_000, 100, 0.03)
    growth = false_alarms.group_growth(*changed)
    # The script must match output rows to the batch by id: novel customers come last in the
    # output, and a match by position once reported no group, silently.
    assert growth >= 3, "the unseen group is a candidate, well above the default growth"
    steady, _ = false_alarms.scored(segmenter, spec, 20_000, 100, 0.0)
    assert (steady.emerging.table["growth"] < 3).all()


@pytest.mark.parametrize(("unseen", "shuffled", "candidates"), [(0.0, False, 0), (0.03, True, 1)])
def test_scoring_benchmark_times_the_same_assignment_on_both_sides(
    bench, tmp_path, unseen, shuffled, candidates
):
    scoring = bench("bench_scoring")
    model = scoring.fit_model(tmp_path, "kmeans", 3_000)
    source = scoring.write_input(tmp_path / "in.parquet", 20_000, unseen, "parquet", shuffled)
    found = scoring.child_score(model, source, tmp_path / "scores.parquet")
    assert (found["rows"], found["candidates"]) == (20_000, candidates)
    job = scoring.child_bare(model, source, 4_096, str(tmp_path / "bare.parquet"))
    loop = scoring.child_bare(model, source, 4_096, "")
    assert job["rows"] == loop["rows"] == 20_000
    # The bare job writes the clusterer's raw labels: segml names them by the model's ids.
    segml = pd.read_parquet(tmp_path / "scores.parquet").set_index(ID_COLUMN)[SEGMENT_ID]
    bare = pd.read_parquet(tmp_path / "bare.parquet").set_index(ID_COLUMN)[SEGMENT_ID]
    segmenter = joblib.load(model)
    bare = pd.Series(segmenter.segment_ids(bare.to_numpy()), bare.index)
    assert bare.index.is_unique and len(bare) == 20_000
    pd.testing.assert_series_equal(bare.sort_index(), segml.sort_index(), check_names=False)


def test_hdbscan_assign_benchmark_compares_the_same_assignments(bench, monkeypatch, capsys):
    assign = bench("bench_hdbscan_assign")
    monkeypatch.setattr(
        "sys.argv", ["bench_hdbscan_assign.py", "--train", "3000", "--rows", "5000"]
    )
    assign.main()
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert printed["labels identical"] == "100.0000%"
    assert float(printed["strength max |diff|"]) == float(printed["GLOSH max |diff|"]) == 0.0


def test_selection_benchmark_scores_every_method_on_every_dataset(bench, tmp_path):
    selection = bench("bench_selection")
    output = tmp_path / "selection.md"
    frame = selection.main(["--quick", "--output", str(output), "--work", str(tmp_path)])
    names = [d.name for d in selection.quick_datasets()]
    assert frame["dataset"].tolist() == names, "no dataset failed or went missing"
    aris = list(selection.METHODS.values())
    assert frame[aris].notna().all().all()
    text = output.read_text()
    for name in names:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert len(row.split("|")) == 17, "every column of the per-dataset table is filled"
    blobs = frame.set_index("dataset").loc["blobs3_separated"]
    assert blobs["kmeans_silhouette_ari"] > 0.95
    trials = pd.read_csv(tmp_path / "selection_trials.csv")
    assert trials.groupby("dataset")["chosen"].sum().eq(1).all()
    assert {"ari", "quality.silhouette", "stability.jaccard_mean"} <= set(trials.columns)
    # The pick's labels come from the registered model, the trial's from a refit: they agree.
    picked = trials[trials["chosen"]].set_index("dataset")["ari"]
    assert picked.loc[names].to_numpy() == pytest.approx(frame["segml_ari"], abs=0.02)


def test_privacy_benchmark_compares_saved_clusterers_and_drift_references(bench):
    privacy = bench("bench_privacy")
    rows = privacy.saved_clusterers(600, 2_000)
    assert [r.split(" | ")[3] for r in rows] == ["1.0000"] * 3  # identical labels, each family
    steady = privacy.drift_agreement(800, 500, 0.0, 2).split(" | ")
    assert steady[3] == "KS p-value" and steady[6] == "8/8"


@pytest.mark.parametrize(
    ("model", "kind"),
    [("hdbscan+umap", "EXTREME"), ("hdbscan", "gap"), ("kmeans", "COMBINATION")],
)
def test_emerging_benchmark_finds_the_injected_group_and_nothing_in_a_steady_batch(
    bench, tmp_path, model, kind
):
    # Real CDNOW customers the model never saw, plus 3% built as raw transaction rows: the
    # group is one candidate; the same customers without it (80% of them) give none, even
    # with candidates of 20 customers allowed. UMAP + HDBSCAN is the model of issue 26, whose
    # candidate search found no group: UMAP's transform hides outliers, one flat density cut
    # merged the group with scattered noise. Plain HDBSCAN split a dense group inside the
    # training range ("gap") on the whole benchmark (its tight cores set the allowed radius;
    # trained on 3,000 customers it did not). k-means' distance to a centroid caught 64% of the
    # frequent buyers of tiny baskets ("combination"); its segments' ellipses catch them all.
    emerging = bench("bench_emerging")
    sizes = (None, None) if kind == "gap" else (3_000, 2_500)
    data = emerging.split(emerging.read_log(), *sizes)
    segmenter, X = emerging.fit_model(model, data.train, tmp_path)
    if kind == "gap":  # inside the training range, where HDBSCAN's GLOSH sees nothing
        pattern = emerging.gap_pattern(segmenter, X, tmp_path)
    else:
        pattern = getattr(emerging, kind)
    table, _, precision, recall = emerging.injected_batch(
        segmenter, data, pattern, 0.03, 0, tmp_path
    )
    assert len(table) == 1 and precision >= 0.8 and recall >= 0.8, table.iloc[:, :9]
    assert emerging.steady_batch(segmenter, data, 0, tmp_path).empty
