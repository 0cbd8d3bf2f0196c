"""Batch scoring: emerging segments with known truth, bad input, atomic output, tracking, CLI."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from segml import tracking as keys
from segml.cli import app
from segml.data import read_customers
from segml.errors import DataError
from segml.features import build_features, customer_table, with_value
from segml.model import IS_NOVEL, SEGMENT_ID, Segmenter, log_segment_model
from segml.monitoring import EMERGING_FIT_ROWS, EMERGING_ID
from segml.registry import ModelRef
from segml.scoring import MODEL_NAME, MODEL_VERSION, _input, output_schema, score, score_spark
from segml.scoring._clean import trimmed_text
from segml.scoring._collect import Sample
from segml.scoring._ids import SeenIds, id_hashes
from segml.spec import CLV_COLUMNS, Spec, load_spec
from segml.synthetic import (
    FEATURES,
    ID_COLUMN,
    TRUTH_COLUMN,
    synthetic_customers,
    synthetic_spec,
)
from tests.models import PARAMS, fit_segmenter

runner = CliRunner()
NEW_GROUP = 5
COLUMNS = list(output_schema(ID_COLUMN).names)


def _with(spec: Spec, **data: Any) -> Spec:
    return spec.model_copy(update={"data": spec.data.model_copy(update=data)})


def _with_min_share(spec: Spec, share: float) -> Spec:
    monitoring = spec.monitoring.model_copy(update={"candidate_min_share": share})
    return spec.model_copy(update={"monitoring": monitoring})


def _in_batch_order(output: Path, batch: pd.DataFrame) -> pd.DataFrame:
    """The output's rows in the order of the batch's customers (novel customers come last)."""
    return pd.read_parquet(output).set_index(ID_COLUMN).loc[batch[ID_COLUMN]].reset_index()


def _assert_e1_is_the_unseen_group(output: Path, batch: pd.DataFrame) -> None:
    member = (_in_batch_order(output, batch)[EMERGING_ID] == "E1").to_numpy()
    new = (batch[TRUTH_COLUMN] == NEW_GROUP).to_numpy()
    assert new[member].mean() >= 0.8, "purity: members are mostly the unseen group"
    assert member[new].mean() >= 0.8, "recall: the candidate holds most of the unseen group"


def _batch(tmp_path: Path, frame: pd.DataFrame, name: str = "batch.parquet") -> Path:
    path = tmp_path / name
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


# --------------------------------------------------------------------------------------------
# Must show: emerging segments with known truth


@pytest.mark.parametrize("family", list(PARAMS))
def test_unseen_group_is_one_candidate(segmenters, tmp_path: Path, family: str) -> None:
    batch = synthetic_customers(10_000, seed=11, new_group_share=0.03)
    summary = score(segmenters[family], _batch(tmp_path, batch), tmp_path / "out.parquet")
    assert summary.report.emerging.ids == ["E1"]
    _assert_e1_is_the_unseen_group(tmp_path / "out.parquet", batch)
    assert summary.report.alerts and "E1" in summary.report.alerts[0]
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out[EMERGING_ID].isna().sum() == (out[EMERGING_ID] != "E1").sum()


@pytest.mark.parametrize("family", list(PARAMS))
def test_unseen_group_is_found_when_the_other_novel_customers_form_no_cluster(
    segmenters, tmp_path: Path, family: str
) -> None:
    # With a minimum size of 2% (200), the ~100 scattered novel customers cannot form a
    # cluster of their own, so the clustering never splits: the group is its root's densest part.
    batch = synthetic_customers(10_000, seed=11, new_group_share=0.03)
    segmenter = segmenters[family]
    spec = _with_min_share(segmenter.spec, 0.02)
    summary = score(segmenter, _batch(tmp_path, batch), tmp_path / "out.parquet", spec=spec)
    assert summary.report.emerging.ids == ["E1"]
    _assert_e1_is_the_unseen_group(tmp_path / "out.parquet", batch)


def test_candidate_is_found_among_more_novel_customers_than_are_fitted(
    segmenters, tmp_path: Path
) -> None:
    batch = synthetic_customers(300_000, seed=19, new_group_share=0.05)
    summary = score(segmenters["kmeans"], _batch(tmp_path, batch), tmp_path / "out.parquet")
    assert summary.novel > EMERGING_FIT_ROWS, "the candidate clustering is fitted on a sample"
    assert summary.report.emerging.ids == ["E1"]
    _assert_e1_is_the_unseen_group(tmp_path / "out.parquet", batch)


@pytest.mark.parametrize("family", list(PARAMS))
def test_in_distribution_batches_raise_no_alarm(segmenters, tmp_path: Path, family: str) -> None:
    for seed in range(10):
        batch = synthetic_customers(5_000, seed=100 + seed)
        summary = score(segmenters[family], _batch(tmp_path, batch), tmp_path / "out.parquet")
        assert summary.report.emerging.ids == [], f"seed {seed}"
        assert summary.report.alerts == (), f"seed {seed}: {summary.report.alerts}"


@pytest.mark.parametrize("family", list(PARAMS))
def test_small_groups_are_candidates_only_where_they_are_new(
    segmenters, tmp_path: Path, family: str
) -> None:
    # At a minimum size of 50 customers (0.05%), patches of the usual tail of a steady batch
    # are dense and compact enough to pass for groups; only a group the model has not seen
    # is more common than at training. The model keeps micro-clusters of 20 customers, not
    # rows: a group under 10 of its 3,000 training customers (0.33%) could have been there
    # unseen, so a new group must be several times that (here 3%).
    segmenter = segmenters[family]
    spec = _with_min_share(segmenter.spec, 0.0005)
    steady = synthetic_customers(100_000, seed=7)
    summary = score(segmenter, _batch(tmp_path, steady), tmp_path / "out.parquet", spec=spec)
    assert summary.report.emerging.ids == []
    changed = synthetic_customers(100_000, seed=8, new_group_share=0.03)
    summary = score(segmenter, _batch(tmp_path, changed), tmp_path / "out.parquet", spec=spec)
    assert summary.report.emerging.ids == ["E1"]
    assert summary.report.emerging.table["growth"].iloc[0] > 3
    _assert_e1_is_the_unseen_group(tmp_path / "out.parquet", changed)


def test_scattered_outliers_are_not_candidates(segmenters, tmp_path: Path) -> None:
    batch = synthetic_customers(10_000, seed=12)
    rng = np.random.default_rng(0)
    scattered = rng.choice(len(batch), size=400, replace=False)
    batch.loc[scattered, list(FEATURES)] = rng.uniform(-40, 40, size=(400, len(FEATURES)))
    summary = score(segmenters["kmeans"], _batch(tmp_path, batch), tmp_path / "out.parquet")
    assert summary.novel >= 300
    assert summary.report.emerging.ids == []


# --------------------------------------------------------------------------------------------
# Output


def test_output_is_complete_and_identical_when_run_twice(segmenters, tmp_path: Path) -> None:
    batch = synthetic_customers(4_000, seed=13, new_group_share=0.03)
    source = _batch(tmp_path, batch)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    summary = score(segmenters["gmm"], source, first)
    score(segmenters["gmm"], source, second)
    assert first.read_bytes() == second.read_bytes()
    out = pd.read_parquet(first)
    assert list(out.columns) == COLUMNS
    expected = segmenters["gmm"].predict(batch)
    novel_last = np.argsort(expected[IS_NOVEL].to_numpy(), kind="stable")
    assert 0 < expected[IS_NOVEL].sum() < len(batch)
    assert out[ID_COLUMN].tolist() == batch[ID_COLUMN].iloc[novel_last].tolist(), (
        "the customers a segment fits, then the novel ones, each in input order"
    )
    assert set(out[MODEL_NAME]) == {"synthetic"} and out[MODEL_VERSION].isna().all()
    expected = expected.iloc[novel_last].reset_index(drop=True)
    pd.testing.assert_frame_equal(out[expected.columns], expected, check_dtype=False)
    assert summary.rows_read == summary.rows_scored == 4_000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging left"
    assert pq.read_schema(first) == output_schema(ID_COLUMN), "plain text columns, no codes"


def test_novel_customers_come_last_with_their_candidates_ids(
    segmenters, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_input, "READ_ROWS", 200)  # batches with no, some and only novel rows
    batch = synthetic_customers(10_000, seed=11, new_group_share=0.03)
    new = batch[TRUTH_COLUMN] == NEW_GROUP
    batch = pd.concat([batch[new], batch[~new]], ignore_index=True)  # the unseen group first
    segmenter = segmenters["kmeans"]
    expected = segmenter.predict(batch)
    novel = expected[IS_NOVEL].to_numpy()
    per_batch = novel[: len(novel) // 200 * 200].reshape(-1, 200).sum(axis=1)
    assert per_batch[0] == 200 and (per_batch == 0).any() and (per_batch % 200 > 0).any()
    for suffix in (".parquet", ".csv"):
        output = tmp_path / f"out{suffix}"
        emerging = score(segmenter, _batch(tmp_path, batch), output).report.emerging
        out = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
        others, novel_rows = out.iloc[: (~novel).sum()], out.iloc[(~novel).sum() :]
        assert others[ID_COLUMN].tolist() == batch[ID_COLUMN][~novel].tolist()
        assert novel_rows[ID_COLUMN].tolist() == batch[ID_COLUMN][novel].tolist()
        assert others[EMERGING_ID].isna().all() and novel_rows[IS_NOVEL].all()
        labels = emerging.labels
        ids = np.array(["", *emerging.ids], dtype=object)[labels]
        assert novel_rows[EMERGING_ID].fillna("").tolist() == ids.tolist()
        assert (labels > 0).sum() == emerging.table["customers"].sum() > 250


def test_csv_folder_gives_the_same_scores_as_one_parquet_file(segmenters, tmp_path: Path) -> None:
    batch = synthetic_customers(3_000, seed=14, new_group_share=0.03)
    folder = tmp_path / "in"
    folder.mkdir()
    batch.iloc[:1_200].to_csv(folder / "part-0.csv", index=False)
    batch.iloc[1_200:].to_csv(folder / "part-1.csv", index=False)
    (folder / "_SUCCESS").touch()
    score(segmenters["kmeans"], folder, tmp_path / "from_csv.csv")
    score(segmenters["kmeans"], _batch(tmp_path, batch), tmp_path / "from_parquet.parquet")
    from_csv = pd.read_csv(tmp_path / "from_csv.csv", dtype={MODEL_VERSION: str})
    from_parquet = pd.read_parquet(tmp_path / "from_parquet.parquet")
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)
    assert from_csv[EMERGING_ID].notna().sum() > 0


# --------------------------------------------------------------------------------------------
# Bad input: fail early with the column named, or quarantine and count


def _bad(tmp_path: Path, case: str) -> Path:
    frame = synthetic_customers(200, seed=15)
    path = tmp_path / "in.csv"
    if case == "missing column":
        frame = frame.drop(columns=["basket_index"])
    elif case == "missing id column":
        frame = frame.drop(columns=[ID_COLUMN])
    elif case == "not numbers":
        frame["engagement"] = "high"
    elif case == "bad cell":
        frame["engagement"] = frame["engagement"].astype(object)
        frame.loc[2, "engagement"] = "abc"
    elif case == "wrong type":
        frame["engagement"] = pd.Timestamp("2020-01-01")
        path = tmp_path / "in.parquet"
    elif case == "header only":
        frame = frame.iloc[:0]
    if case == "empty file":
        path.write_text("")
    elif case == "malformed row":
        lines = frame.to_csv(index=False).splitlines()
        lines[5] += ",someone@example.com"
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing column", r"in\.csv: missing model input column 'basket_index'"),
        ("missing id column", r"missing id column 'customer_id'"),
        ("not numbers", r"column 'engagement' does not hold numbers .*e\.g\. 'high'"),
        (
            "bad cell",
            r"1 row\(s\) with non-numeric value in column 'engagement' \(first at data row 3\); "
            r".*bad_rows: drop",
        ),
        ("wrong type", r"column 'engagement' has type timestamp.*expects numbers"),
        ("header only", r"no customer to score \(the input has no data rows\)"),
        ("empty file", r"in\.csv: file is empty"),
        ("malformed row", r"CSV parse error: Expected 8 columns, got 9\)$"),
    ],
)
def test_bad_input_fails_early_naming_file_and_column(
    segmenters, tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "out.parquet"
    with pytest.raises(DataError, match=message):
        score(segmenters["kmeans"], _bad(tmp_path, case), out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_rows_are_quarantined_and_counted(segmenters, tmp_path: Path) -> None:
    frame = synthetic_customers(500, seed=16).astype({"engagement": object})
    frame["note"] = "extra column"
    frame.loc[3, "engagement"] = "oops"
    frame.loc[5, "price_sensitivity"] = np.inf
    frame.loc[7, ID_COLUMN] = " "
    frame.loc[9, ID_COLUMN] = frame.loc[8, ID_COLUMN]
    frame.loc[11, "basket_index"] = np.nan
    segmenter = segmenters["kmeans"]
    out = tmp_path / "out.parquet"
    summary = score(
        segmenter,
        _batch(tmp_path, frame, "in.csv"),
        out,
        spec=_with(segmenter.spec, bad_rows="drop"),
    )
    assert summary.rows_read == 500 and summary.rows_scored == 496
    assert summary.quarantined == {
        "non-numeric value in column 'engagement'": 1,
        "non-finite value in column 'price_sensitivity'": 1,
        "missing id in column 'customer_id'": 1,
        "duplicate id in column 'customer_id'": 1,
    }
    assert summary.ignored_columns == ("revenue", "converted", "true_segment", "note")
    assert summary.missing["basket_index"] == 1, "missing values are imputed and counted"
    quarantine = pd.read_csv(summary.quarantine)
    assert quarantine["row"].tolist() == [4, 6, 8, 10]
    assert len(pd.read_parquet(out)) == 496


def test_unseen_category_is_scored_counted_and_drifts(tmp_path: Path) -> None:
    """An unseen category is ignored by the encoder (as documented), counted per column, and
    its share, like a jump in missing values, shows in the drift report."""
    train = synthetic_customers(1_000, seed=17)
    train["region"] = np.random.default_rng(0).choice(["north", "south"], size=len(train))
    spec = synthetic_spec("customers.csv")
    spec["data"]["attributes"]["geographic"] = ["region"]
    spec["features"]["categorical"] = ["region"]
    segmenter = fit_segmenter(tmp_path / "model", "kmeans", train, spec)
    batch = synthetic_customers(300, seed=18).assign(region="north")
    batch.loc[4, "region"] = "mars"
    batch.loc[100:207, "region"] = None  # 36% missing
    summary = score(segmenter, _batch(tmp_path, batch), tmp_path / "out.parquet")
    assert summary.rows_scored == 300 and summary.quarantined == {}
    assert summary.unseen == {"region": 1}
    assert summary.missing["region"] == 108
    expected = segmenter.predict(batch.assign(region=batch["region"].fillna(np.nan)))
    out = _in_batch_order(tmp_path / "out.parquet", batch)
    np.testing.assert_array_equal(out[SEGMENT_ID], expected[SEGMENT_ID])
    region = summary.report.features.set_index("feature").loc["region"]
    assert region["kind"] == "categorical" and bool(region["drifted"])
    assert region["psi"] > 1.0, "a third of the batch missing is a major shift"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_missing_categories_are_imputed_as_at_training(tmp_path: Path, suffix: str) -> None:
    train = synthetic_customers(1_000, seed=17)
    train["region"] = np.random.default_rng(0).choice(["north", "south"], size=len(train))
    train.loc[::50, "region"] = np.nan
    spec = synthetic_spec("customers.csv")
    spec["data"]["attributes"]["geographic"] = ["region"]
    spec["features"]["categorical"] = ["region"]
    segmenter = fit_segmenter(tmp_path / "model", "kmeans", train, spec)
    batch = synthetic_customers(300, seed=18)
    batch["region"] = np.where(np.arange(300) % 10 == 0, None, "south").astype(object)
    summary = score(segmenter, _batch(tmp_path, batch, f"b{suffix}"), tmp_path / "out.parquet")
    assert summary.rows_scored == 300
    assert summary.missing["region"] == sum(summary.missing.values()) == 30
    expected = segmenter.predict(batch.assign(region=batch["region"].fillna(np.nan)))
    out = _in_batch_order(tmp_path / "out.parquet", batch)
    np.testing.assert_array_equal(out[SEGMENT_ID], expected[SEGMENT_ID])


def test_id_hash_depends_on_the_id_alone() -> None:
    short = [f"C{i:07d}" for i in range(1_000)]  # one word each, all as wide
    long = [f"customer-{i:012d}" for i in range(1_000)]  # three words each
    mixed = pa.array([*short, *long, "", "x", "\u00e9t\u00e9"], pa.large_string())
    together = id_hashes(mixed)
    np.testing.assert_array_equal(id_hashes(pa.array(short)), together[:1_000])
    np.testing.assert_array_equal(id_hashes(mixed.slice(1_000, 1_000)), together[1_000:2_000])
    chunks = pa.chunked_array([pa.array(long[:7]), pa.array(long[7:])])
    np.testing.assert_array_equal(id_hashes(chunks), together[1_000:2_000])
    assert np.unique(together).size == together.size


def _duplicate_batches(ascending_first: bool) -> list[np.ndarray]:
    """Id hashes in batches: increasing ids first (a table sorted by its key) or an empty batch
    (as one of bad rows only); then the order breaks and 400,000 random draws follow, so the
    bitmap grows and runs merge."""
    rng = np.random.default_rng(0)
    pool = np.sort(rng.integers(0, 2**64 - 1, 300_000, dtype=np.uint64))
    if ascending_first:  # the last id again at the start of the next batch breaks the order
        batches = [pool[start : start + 10_000] for start in range(0, 50_000, 10_000)]
        batches.append(pool[49_999:60_000])
    else:
        batches = [pool[:0]]
    return batches + [rng.choice(pool, 10_000) for _ in range(40)]


@pytest.mark.parametrize("ascending_first", [True, False], ids=["ascending", "empty"])
def test_duplicate_ids_are_found_as_a_set_would(ascending_first: bool) -> None:
    seen, expected = SeenIds(), set()
    for batch, hashes in enumerate(_duplicate_batches(ascending_first)):
        ids = pa.array([f"{value:020d}" for value in hashes.tolist()], pa.large_string())
        found = seen.duplicated(ids, hashes)
        for i, value in enumerate(hashes.tolist()):
            assert found[i] == (value in expected), f"batch {batch}, row {i}"
            expected.add(value)
    assert seen.count == len(expected)


def test_sample_is_the_smallest_hashes_whatever_the_batches() -> None:
    rng = np.random.default_rng(1)
    hashes = rng.permutation(rng.integers(0, 2**64 - 1, 60_000, dtype=np.uint64))
    kinds = pd.array(np.where(np.arange(hashes.size) % 3, "a", None), dtype="string")
    frame = pd.DataFrame({"row": np.arange(hashes.size), "kind": kinds})
    expected = np.argsort(hashes)[:2_000]
    random_cuts = np.sort(rng.choice(60_000, 40, replace=False))
    for cuts in (np.arange(0, 60_000, 700), random_cuts, np.array([0, 5_000, 25_000, 59_000])):
        sample = Sample(2_000)
        for part in np.split(np.arange(hashes.size), cuts[1:]):
            batch = frame.iloc[part].reset_index(drop=True)
            Z = np.column_stack([part, -part]) * 0.5
            offered = sample.wanted(hashes[part])
            sample.add(offered, hashes[part], batch, part % 7 - 1, part % 2 == 0, Z)
        rows, Z = sample.rows()
        np.testing.assert_array_equal(Z, np.column_stack([expected, -expected]) * 0.5)
        np.testing.assert_array_equal(rows["row"].to_numpy(), expected)
        kinds = frame["kind"].iloc[expected]
        pd.testing.assert_series_equal(rows["kind"], kinds, check_index=False)
        np.testing.assert_array_equal(rows["segment_id"].to_numpy(), expected % 7 - 1)
        np.testing.assert_array_equal(rows["is_novel"].to_numpy(), expected % 2 == 0)


FOLDER = "<the output's folder>"


@pytest.mark.parametrize(
    "suffix, unseen, bad, order",
    [
        (".parquet", 0.0, False, ["scores.parquet"] * 2 + [FOLDER]),
        (".parquet", 0.05, False, ["scores.parquet"] * 2 + [FOLDER]),
        (".csv", 0.05, False, ["scores.csv"] * 2 + [FOLDER]),
        (".parquet", 0.0, True, ["scores.parquet"] * 2 + ["quarantine.csv", FOLDER]),
    ],
    ids=["parquet", "parquet with a candidate", "csv with a candidate", "with a quarantine"],
)
def test_output_is_on_disk_before_it_is_renamed_into_place(
    segmenters,
    tmp_path: Path,
    flushes,
    suffix: str,
    unseen: float,
    bad: bool,
    order: list[str],
) -> None:
    """A crash right after the rename must not leave an output (or quarantine file) whose data
    never reached the disk: each file renamed into place was flushed last when complete (the
    output also once before, while the monitoring ran); then their folder, renames done."""
    output = tmp_path / f"out{suffix}"
    flushed = flushes(lambda path: (path.stat().st_size, output.exists()))
    batch = synthetic_customers(3_000, seed=5, new_group_share=unseen).astype({ID_COLUMN: object})
    if bad:
        batch.loc[3, ID_COLUMN] = " "
    segmenter = segmenters["kmeans"]
    spec = _with(segmenter.spec, bad_rows="drop")
    summary = score(segmenter, _batch(tmp_path, batch), output, spec=spec)
    assert len(summary.report.emerging.table) == (unseen > 0)
    assert [path.name for path, _ in flushed] == [n.replace(FOLDER, tmp_path.name) for n in order]
    last = {path.name: (path, *seen) for path, seen in flushed}
    assert last[tmp_path.name][0] == tmp_path and last[tmp_path.name][2], "after the rename"
    renamed = [(output, order[1])] + [(summary.quarantine, "quarantine.csv")] * bad
    for target, name in renamed:
        path, size, output_existed = last[name]
        assert path.parent.parent == tmp_path and not output_existed
        assert target is not None and size == target.stat().st_size


def test_text_is_trimmed_and_empty_is_missing() -> None:
    values = ["a", " b", "c\t", "", None, "\u00a0d", "e\u3000", "  ", "x\u200b", "\x1fy"]
    reference = pc.utf8_trim_whitespace(pa.array(values))
    expected = [v or None for v in reference.to_pylist()]
    assert trimmed_text(pa.chunked_array([pa.array(values)])).to_pylist() == expected
    assert trimmed_text(pa.array(values)[1:6]).to_pylist() == expected[1:6], "slices keep offsets"
    assert trimmed_text(pa.array(["C1", "C2"])).to_pylist() == ["C1", "C2"]
    assert trimmed_text(pa.array([1, 22, None])).to_pylist() == ["1", "22", None]


# --------------------------------------------------------------------------------------------
# Monitoring across runs


def test_previous_output_gives_the_migration(segmenters, tmp_path: Path) -> None:
    batch = synthetic_customers(2_000, seed=19)
    segmenter = segmenters["kmeans"]
    score(segmenter, _batch(tmp_path, batch), tmp_path / "before.parquet")
    moved = batch.copy()
    moved.loc[:99, list(FEATURES)] = moved.loc[100:199, list(FEATURES)].to_numpy()
    newcomers = synthetic_customers(50, seed=20, id_offset=10_000)
    later = pd.concat([moved.iloc[50:], newcomers], ignore_index=True)
    summary = score(
        segmenter,
        _batch(tmp_path, later, "later.parquet"),
        tmp_path / "after.parquet",
        previous=tmp_path / "before.parquet",
    )
    before = pd.read_parquet(tmp_path / "before.parquet").set_index(ID_COLUMN)[SEGMENT_ID]
    after = pd.read_parquet(tmp_path / "after.parquet").set_index(ID_COLUMN)[SEGMENT_ID]
    both = before.index.intersection(after.index)
    matrix = summary.report.migration
    assert matrix is not None and int(matrix.to_numpy().sum()) == len(both) == 1_950
    expected = pd.crosstab(before[both], after[both])
    assert matrix.loc[expected.index, expected.columns].equals(
        expected.astype(matrix.dtypes.iloc[0])
    )
    metrics = summary.metrics()
    changed = float((before[both] != after[both]).mean())
    assert metrics[keys.MIGRATION_SHARE] == pytest.approx(changed) and changed > 0


def test_candidate_seen_in_the_previous_run(segmenters, tmp_path: Path) -> None:
    segmenter = segmenters["kmeans"]
    first = score(
        segmenter,
        _batch(tmp_path, synthetic_customers(6_000, seed=21, new_group_share=0.03)),
        tmp_path / "first.parquet",
    )
    second = score(
        segmenter,
        _batch(tmp_path, synthetic_customers(6_000, seed=22, new_group_share=0.04), "b.parquet"),
        tmp_path / "second.parquet",
        previous_candidates=first.report.emerging.table,
    )
    table = second.report.emerging.table
    assert table["seen_before"].tolist() == [True]
    assert table["previous_id"].tolist() == ["E1"]
    assert not first.report.emerging.table["seen_before"].any()


def _log(rng: np.random.Generator, n: int, ids: list[str]) -> pd.DataFrame:
    """``n`` purchases in 2024 by ``ids``, with gamma-distributed amounts."""
    return pd.DataFrame(
        {
            ID_COLUMN: ids,
            "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, n), "D"),
            "amount": rng.gamma(2.0, 30.0, size=n).round(2),
        }
    )


def _log_spec(**data: object) -> dict:
    """A transactions spec over ``_log``'s columns in tx.csv; ``data`` adds to its data."""
    return {
        "name": "tx",
        "data": {
            "source": "tx.csv",
            "kind": "transactions",
            "id_column": ID_COLUMN,
            "transactions": {"timestamp": "day", "amount": "amount"},
            **data,
        },
    }


def test_transaction_log_is_aggregated_as_at_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3_000
    tx = _log(rng, n, [f"C{i:04d}" for i in rng.integers(0, 400, size=n)])
    segmenter = fit_segmenter(tmp_path, "kmeans", tx, _log_spec(), {"n_clusters": 3})
    cutoff = pd.Timestamp("2024-10-31")
    summary = score(
        segmenter, tmp_path / "tx.csv", tmp_path / "out.parquet", reference_date=cutoff.date()
    )
    late = int((tx["day"] > cutoff).sum())
    assert summary.rows_read == n and sum(summary.excluded.values()) == late
    customers = build_features(load_spec(tmp_path / "spec.yaml"), cutoff.date()).table
    expected = segmenter.predict(customers)
    assert summary.rows_scored == len(expected)
    out = _in_batch_order(tmp_path / "out.parquet", expected)
    assert out[SEGMENT_ID].tolist() == expected[SEGMENT_ID].tolist()


def test_a_model_with_clv_adds_its_training_fits_predictions_per_customer(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3_000
    tx = _log(rng, n, [f"C{i:04d}" for i in rng.integers(0, 400, size=n)])
    spec = _log_spec(reference_date="2024-08-31") | {"features": {"clv": {}}}
    segmenter = fit_segmenter(tmp_path, "kmeans", tx, spec, {"n_clusters": 3})
    cutoff = dt.date(2024, 12, 31)
    score(segmenter, tmp_path / "tx.csv", tmp_path / "out.parquet", reference_date=cutoff)
    out = pd.read_parquet(tmp_path / "out.parquet").set_index(ID_COLUMN)
    assert list(out.columns[-len(CLV_COLUMNS) :]) == list(CLV_COLUMNS)
    later = load_spec(tmp_path / "spec.yaml")
    later = later.model_copy(
        update={"data": later.data.model_copy(update={"reference_date": None})}
    )
    intake = read_customers(later, cutoff)
    customers = customer_table(later, intake, cutoff)
    assert segmenter.value is not None
    expected = with_value(later, intake, customers, segmenter.value).set_index(ID_COLUMN)
    found = out.loc[expected.index, list(CLV_COLUMNS)]
    np.testing.assert_allclose(found.to_numpy(), expected[list(CLV_COLUMNS)].to_numpy())
    refit = build_features(later, cutoff).table.set_index(ID_COLUMN).loc[expected.index]
    assert not np.allclose(refit["clv"], found["clv"]), "the training fit, not a refit"


# --------------------------------------------------------------------------------------------
# The command: registry model, tracking, exit codes, kill and rerun


def _score_cli(registered: dict, *args: str) -> Any:
    return runner.invoke(
        app,
        ["score", "--spec", str(registered["spec"]), "--tracking-uri", registered["uri"], *args],
    )


def test_score_command_tracks_the_run_and_fails_on_emerging(registered, tmp_path: Path) -> None:
    emerging = _batch(tmp_path, synthetic_customers(6_000, seed=23, new_group_share=0.03))
    out = tmp_path / "scores.parquet"
    result = _score_cli(
        registered,
        "--input",
        str(emerging),
        "--output",
        str(out),
        "--fail-on-emerging",
        "--report",
        str(tmp_path / "report"),
    )
    assert result.exit_code == 4, result.output
    assert "segml: error: 1 emerging-segment candidate(s): E1" in result.output
    assert (tmp_path / "report" / "scoring.html").is_file()
    out_frame = pd.read_parquet(out)
    assert set(out_frame[MODEL_VERSION]) == {registered["version"]}

    client = mlflow.tracking.MlflowClient(registered["uri"])
    runs = client.search_runs(
        [client.get_experiment_by_name("synthetic").experiment_id],
        filter_string=f"tags.`{keys.TAG_ROLE}` = '{keys.ROLE_SCORING}'",
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags[keys.TAG_SCORED_MODEL] == f"synthetic v{registered['version']}"
    assert run.data.metrics[keys.EMERGING_CANDIDATES] == 1
    assert run.data.metrics[keys.SCORING_ROWS_SCORED] == 6_000
    assert set(run.data.metrics) <= set(keys.METRICS)
    version = client.get_model_version("synthetic", registered["version"])
    inputs = client.get_run(run.info.run_id).inputs.model_inputs
    assert [f"models:/{m.model_id}" for m in inputs] == [version.source]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "scoring")}
    assert {
        "scoring/candidates.json",
        "scoring/segment_shares.json",
        "scoring/feature_drift.json",
        "scoring/summary.md",
        "scoring/summary.html",
    } <= artifacts

    again = _score_cli(
        registered,
        "--input",
        str(emerging),
        "--output",
        str(tmp_path / "again.parquet"),
        "--previous",
        str(out),
    )
    assert again.exit_code == 0, again.output
    assert "| E1 |" in again.output and "True | E1 |" in again.output, "seen in the last run"
    assert "0.0% changed segment" in again.output


def test_score_command_bad_input_is_one_line_exit_2(registered, tmp_path: Path) -> None:
    source = _batch(tmp_path, synthetic_customers(100, seed=24).drop(columns=["engagement"]))
    result = _score_cli(registered, "--input", str(source), "--output", str(tmp_path / "o.csv"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"segml: error: {source}: missing model input column 'engagement' (found: customer_id, "
        "price_sensitivity, basket_index, digital_affinity, revenue, converted, true_segment)"
    ]


def test_failed_write_leaves_no_output(
    segmenters, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = []

    class FullDisk(pq.ParquetWriter):
        def write_batch(self, batch: pa.RecordBatch, *args: Any, **kwargs: Any) -> None:
            writes.append(batch.num_rows)
            if len(writes) == 3:
                raise OSError(28, "No space left on device")
            if len(writes) > 3:  # as Arrow's sink, closed by the failure
                raise pa.ArrowInvalid("Operation on closed file")
            time.sleep(0.05)  # later writes are still queued when the third fails
            super().write_batch(batch, *args, **kwargs)

    monkeypatch.setattr(_input, "READ_ROWS", 500)
    monkeypatch.setattr(pq, "ParquetWriter", FullDisk)
    source = _batch(tmp_path, synthetic_customers(6_000, seed=26))
    with pytest.raises(OSError, match="No space left"):  # the first failure, not a later one
        score(segmenters["kmeans"], source, tmp_path / "scores.parquet")
    assert len(writes) > 3, "writes were queued behind the failed one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.parquet"]


def test_killed_scoring_leaves_no_output_and_a_rerun_completes(registered, tmp_path: Path) -> None:
    source = _batch(tmp_path, synthetic_customers(250_000, seed=25))
    out = tmp_path / "scores.parquet"
    args = ["--input", str(source), "--output", str(out)]
    command = [sys.executable, "-m", "segml", "score", "--spec", str(registered["spec"]), *args]
    worker = subprocess.Popen(
        [*command, "--tracking-uri", registered["uri"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        if list(tmp_path.glob(".scores.parquet.*/scores.parquet")):
            break
        time.sleep(0.02)
    assert worker.poll() is None, "still scoring when killed"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not out.exists()
    assert list(tmp_path.glob(f".scores.parquet.pid{worker.pid}.*")), "the killed run's staging"

    rerun = _score_cli(registered, *args)
    assert rerun.exit_code == 0, rerun.output
    assert len(pd.read_parquet(out, columns=[SEGMENT_ID])) == 250_000
    assert not list(tmp_path.glob(".scores.parquet.*")), "the rerun removed the dead staging"


def _log_model(tmp_path: Path) -> tuple[Segmenter, pd.DataFrame]:
    """A transaction model whose customers' country comes from an attribute table, and its
    log, which has a ``country`` column too (the country of each sale)."""
    rng = np.random.default_rng(4)
    n = 2_000
    tx = _log(rng, n, [f"{i}.0" for i in rng.integers(10_000, 10_300, size=n)])
    tx["country"] = rng.choice(["UK", "FR"], size=n)
    ids = sorted(tx[ID_COLUMN].unique())
    table = pd.DataFrame({ID_COLUMN: ids, "country": rng.choice(["UK", "FR"], size=len(ids))})
    table.to_csv(tmp_path / "customers.csv", index=False)
    spec = _log_spec(customers="customers.csv", attributes={"geographic": ["country"]})
    spec["features"] = {"categorical": ["country"]}
    return fit_segmenter(tmp_path, "kmeans", tx, spec, {"n_clusters": 3}), tx


def test_the_spec_says_the_input_is_a_log_whatever_its_columns(tmp_path: Path) -> None:
    """A log with a column named like a model feature is still a log; its ids are written as
    the integers they are; the attribute table is this batch's, passed at scoring time."""
    segmenter, tx = _log_model(tmp_path)
    batch = tmp_path / "batch"
    batch.mkdir()
    table = pd.read_csv(tmp_path / "customers.csv").assign(country="FR")
    table.to_csv(batch / "customers.csv", index=False)
    summary = score(
        segmenter, tmp_path / "tx.csv", batch / "out.csv", customers=batch / "customers.csv"
    )
    assert summary.rows_read == len(tx) and summary.rows_scored == tx[ID_COLUMN].nunique()
    out = pd.read_csv(batch / "out.csv", dtype={ID_COLUMN: str})
    assert sorted(out[ID_COLUMN]) == sorted(i.removesuffix(".0") for i in tx[ID_COLUMN].unique())
    drift = summary.report.features.set_index("feature")
    assert bool(drift.loc["country", "drifted"]), "every customer in FR: the batch's table"


def test_a_log_column_named_like_a_feature_does_not_make_it_a_customer_table(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(5)
    n = 1_000
    tx = _log(rng, n, [f"C{i:03d}" for i in rng.integers(0, 200, size=n)])
    tx["frequency"] = "weekly"  # a column of the log, not the model's feature
    segmenter = fit_segmenter(tmp_path, "kmeans", tx, _log_spec(), {"n_clusters": 3})
    summary = score(segmenter, tmp_path / "tx.csv", tmp_path / "out.parquet")
    assert summary.rows_read == n and summary.rows_scored == tx[ID_COLUMN].nunique()


def test_a_log_model_without_its_attribute_table_is_refused(tmp_path: Path) -> None:
    segmenter, _ = _log_model(tmp_path)
    assert segmenter.spec.data.customers == Path("customers.csv"), "a name, never a path"
    with pytest.raises(
        DataError,
        match=r"tx\.csv: the model needs this batch's attribute "
        r"table \(columns country, by customer_id\); pass --customers PATH$",
    ):
        score(segmenter, tmp_path / "tx.csv", tmp_path / "out.csv")
    with pytest.raises(DataError, match=r"--engine spark does not aggregate"):
        score_spark(segmenter, tmp_path / "tx.csv", tmp_path / "out.parquet", model=ModelRef("m"))
    assert not list(tmp_path.glob("out*"))


def test_integer_ids_held_as_floats_are_written_as_integers(segmenters, tmp_path: Path) -> None:
    frame = synthetic_customers(300, seed=19)
    frame[ID_COLUMN] = [f"{12_346 + i}.0" for i in range(len(frame))]
    summary = score(segmenters["kmeans"], _batch(tmp_path, frame, "in.csv"), tmp_path / "o.csv")
    out = pd.read_csv(tmp_path / "o.csv", dtype={ID_COLUMN: str})
    assert summary.rows_scored == 300
    assert sorted(out[ID_COLUMN]) == [str(12_346 + i) for i in range(300)]


def test_every_bad_row_of_every_file_is_counted(segmenters, tmp_path: Path) -> None:
    """Under bad_rows: fail the streaming engine stops scoring at the first fault, but checks
    every batch, so that the error counts each reason exactly."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed, name in enumerate(["a", "b"]):
        frame = synthetic_customers(300, seed=40 + seed).astype({"engagement": object})
        frame[ID_COLUMN] = [f"{name}{i}" for i in range(len(frame))]
        frame.loc[[2, 7], "engagement"] = "oops"
        frame.loc[5, ID_COLUMN] = "" if name == "b" else frame.loc[5, ID_COLUMN]
        frame.to_csv(folder / f"{name}.csv", index=False)
    with pytest.raises(DataError) as info:
        score(segmenters["kmeans"], folder, tmp_path / "out.parquet")
    assert str(info.value).splitlines() == [
        f"{folder / 'a.csv'}: bad rows for 2 reasons; fix them or set data.bad_rows: drop to "
        "quarantine them:",
        "  4 row(s) with non-numeric value in column 'engagement' (first at data row 3)",
        f"  1 row(s) with missing id in column 'customer_id' (first at data row 6 of "
        f"{folder / 'b.csv'})",
    ]
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.slow
def test_the_pyfunc_model_takes_the_batch_attribute_table_as_a_parameter(
    tmp_path: Path, tracking_uri: str
) -> None:
    segmenter, _ = _log_model(tmp_path)
    table = build_features(load_spec(tmp_path / "spec.yaml")).table
    client = keys.connect(tracking_uri)
    run_id = client.create_run(keys.experiment_id(client, "pyfunc")).info.run_id
    model = mlflow.pyfunc.load_model(log_segment_model(segmenter, table, run_id))
    batch = pd.read_csv(tmp_path / "customers.csv").assign(country="FR")
    batch.to_csv(tmp_path / "batch.csv", index=False)
    rows = table.drop(columns=["country"])
    found = model.predict(rows, params={"customers": str(tmp_path / "batch.csv")})
    expected = segmenter.predict(rows.assign(country="FR"))
    pd.testing.assert_frame_equal(found, expected)
    plain = fit_segmenter(
        tmp_path / "plain", "kmeans", synthetic_customers(300, seed=1), synthetic_spec("c.csv")
    )
    with pytest.raises(DataError, match=r"batch\.csv: this model takes no attribute table"):
        plain.with_attributes(rows, tmp_path / "batch.csv")


def test_an_attribute_table_for_a_model_without_one_is_refused(segmenters, tmp_path: Path) -> None:
    source = _batch(tmp_path, synthetic_customers(100, seed=3))
    with pytest.raises(DataError, match=r"c\.csv: this model takes no attribute table"):
        score(segmenters["kmeans"], source, tmp_path / "o.csv", customers=tmp_path / "c.csv")
    assert not (tmp_path / "o.csv").exists()
