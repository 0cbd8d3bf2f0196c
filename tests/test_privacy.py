"""Privacy: no customer id or personal value reaches MLflow, a model file or a report, and no
published figure shows a segment smaller than ``min_report_size``."""

from __future__ import annotations

import io
import json
import math
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from segml import privacy, report
from segml._usage import one_line_warning as cli_warning
from segml.cli import app
from segml.errors import SegmlWarning
from segml.families import FAMILIES
from segml.features import RareCategories
from segml.synthetic import FEATURES, ID_COLUMN, synthetic_customers, synthetic_spec

K = 20
"""The fixture's ``min_report_size``."""
SMALL = 8
"""Customers of the far-away group that becomes a segment of its own (fewer than ``K``)."""
N = 808
LATER = 15
"""More customers of the far-away group in the second scored batch: ``SMALL + LATER`` >= K."""
COMMON_POSTCODES = ("AB1 0AA", "CD2 1BB", "EF3 2CC", "GH4 3DD")


def _customers(n: int = N, far: int = SMALL) -> pd.DataFrame:
    """Synthetic customers, ``far`` of them moved far from the rest, with personal columns:
    declared (email, phone, full name), undeclared and unused (birth date, IP address) and one
    used as an attribute (postcode: four shared by many customers, one in five customers with
    a postcode of their own)."""
    table = synthetic_customers(n, n_segments=4, seed=5)
    moved = np.random.default_rng(6).normal(30.0, 0.5, size=(far, len(FEATURES)))
    table.loc[: far - 1, list(FEATURES)] = moved
    i = np.arange(n)
    table["email"] = [f"person{j:05d}@example.org" for j in i]
    table["phone"] = [f"+44 20 7946 {j:04d}" for j in i]
    table["full_name"] = [f"Forename{j:05d} Surname" for j in i]
    table["birth_date"] = [f"19{50 + j % 40}-{1 + j % 12:02d}-{1 + j % 28:02d}" for j in i]
    table["ip_address"] = [f"10.{j // 256}.{j % 256}.7" for j in i]
    table["postcode"] = [f"ZZ{j:04d} 9QQ" if j % 5 == 0 else COMMON_POSTCODES[j % 4] for j in i]
    return table


PERSONAL = re.compile(
    rb"C\d{7}|person\d{5}@example\.org|\+44 20 7946 \d{4}|Forename\d{5}"
    rb"|19[5-8]\d-\d\d-\d\d|10\.\d{1,3}\.\d{1,3}\.7|ZZ\d{4} 9QQ"
)
"""Every raw id and personal value of ``_customers`` (each column's values follow one
pattern; only the postcodes of one customer are personal, the four shared ones are not)."""


def _spec(tmp_path: Path) -> Path:
    base = synthetic_spec("customers.csv")["data"]
    raw = synthetic_spec(
        "customers.csv",
        data={
            **base,
            "personal": ["email", "phone", "full_name"],
            "attributes": {**base["attributes"], "geographic": ["postcode"]},
        },
        search={
            "seed": 1,
            "n_trials": 2,
            "bootstrap_search": 2,
            "bootstrap_final": 2,
            "reduction": {"reducer": "none"},
            "families": {"kmeans": {"n_clusters": 5}},
        },
        constraints={"min_segments": 5, "max_segments": 5, "min_share": 0.0},
        min_report_size=K,
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    return spec


def _run(args: list[str], uri: str, codes: tuple[int, ...] = (0,)) -> str:
    result = CliRunner().invoke(app, [*args, "--tracking-uri", uri])
    assert result.exit_code in codes, result.output
    return result.output


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, list[str]]:
    """Tune, promote, review against the champion, score the customers and then a later
    batch where the small segment has grown past K (with --previous), with the warnings
    intake gave."""
    tmp = tmp_path_factory.mktemp("privacy")
    table = _customers()
    table.to_csv(tmp / "customers.csv", index=False)
    _customers(N + LATER, SMALL + LATER).to_csv(tmp / "later.csv", index=False)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    spec = _spec(tmp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SegmlWarning)
        _run(["tune", str(spec)], uri)
        _run(["promote", "1", "--spec", str(spec), "--force", "--reason", "test"], uri)
        review = ["review", "--data", str(spec), "--challenger", "1", "--out", str(tmp / "review")]
        _run(review, uri, (0, 3))
        score = ["score", "--spec", str(spec), "--input"]
        _run([*score, str(tmp / "customers.csv"), "--output", str(tmp / "scores.csv")], uri)
        later = [str(tmp / "later.csv"), "--output", str(tmp / "scores2.csv")]
        previous = ["--previous", str(tmp / "scores.csv"), "--report", str(tmp / "scoring")]
        _run([*score, *later, *previous], uri)
    said = sorted({str(w.message) for w in caught if issubclass(w.category, SegmlWarning)})
    return tmp, table, said


def test_personal_columns_are_named_once_each_at_intake(
    workflow: tuple[Path, pd.DataFrame, list[str]],
) -> None:
    _, _, said = workflow
    flagged = {re.search(r"column '(\w+)'", m).group(1): m for m in said}  # type: ignore[union-attr]
    assert sorted(flagged) == ["birth_date", "ip_address", "postcode"]
    assert "looks like a birth date; it is not used" in flagged["birth_date"]
    assert "looks like an IP address; it is not used" in flagged["ip_address"]
    assert "looks like a postcode; the model uses it" in flagged["postcode"]
    shown = cli_warning(SegmlWarning(flagged["postcode"]), SegmlWarning, "data.py", 1)
    assert shown == f"segml: warning: {flagged['postcode']}\n", "one line, as errors are shown"


def _texts(obj: object, seen: dict[int, object] | None = None) -> Iterator[str]:
    """Every text inside an unpickled object: containers, arrays, frames and attributes."""
    seen = {} if seen is None else seen
    if id(obj) in seen:
        return
    seen[id(obj)] = obj  # kept alive: a freed temporary's id may be reused
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _texts(key, seen)
            yield from _texts(value, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _texts(item, seen)
    elif isinstance(obj, pd.DataFrame | pd.Series | pd.Index):
        yield from _texts(obj.astype(object).to_numpy().ravel().tolist(), seen)
        yield from _texts(list(obj.index) + list(getattr(obj, "columns", [])), seen)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind in "OUS":
            yield from _texts(obj.ravel().tolist(), seen)
    else:
        attributes = dict(getattr(obj, "__dict__", {}))
        for slot in getattr(type(obj), "__slots__", ()):
            attributes[slot] = getattr(obj, slot, None)
        yield from _texts(attributes, seen)


def _store_places(tmp: Path) -> list[tuple[str, bytes]]:
    """Every file of the MLflow store (its database and artifacts), the Optuna study, the
    review and scoring reports; outside them only the user's own scores and quarantine."""
    files = [tmp / "mlflow.db", *(p for p in (tmp / "mlartifacts").rglob("*") if p.is_file())]
    files += [p for p in tmp.glob("*.db") if p not in files]
    files += [p for d in ("review", "scoring") for p in (tmp / d).rglob("*") if p.is_file()]
    return [(str(p.relative_to(tmp)), p.read_bytes()) for p in files]


def test_no_id_or_personal_value_in_the_store_models_or_reports(
    workflow: tuple[Path, pd.DataFrame, list[str]],
) -> None:
    tmp, table, _ = workflow
    places = _store_places(tmp)
    models = [p for p in (tmp / "mlartifacts").rglob("segmenter.joblib")]
    assert len(models) == 1 and len(places) > 40, "the scan must see both models and reports"
    places += [(f"{p} unpickled", "\n".join(_texts(joblib.load(p))).encode()) for p in models]
    leaks = [(where, f.decode()) for where, content in places for f in PERSONAL.findall(content)]
    print(f"privacy scan: {len(places)} places, {len(leaks)} leaks {sorted(set(leaks))[:8]}")
    assert leaks == []


def test_saved_clusterers_hold_no_training_rows_and_assign_the_same(
    workflow: tuple[Path, pd.DataFrame, list[str]],
) -> None:
    tmp, table, _ = workflow
    model = next((tmp / "mlartifacts").rglob("segmenter.joblib"))
    segmenter = joblib.load(model)
    estimator = segmenter.segmentation.estimator
    assert not hasattr(estimator, "labels_") and segmenter.segmentation.labels.size == 0
    scores = pd.read_csv(tmp / "scores.csv").set_index(ID_COLUMN)
    assigned = segmenter.predict(table).set_index(ID_COLUMN)
    assert (assigned["segment_id"] == scores.loc[assigned.index, "segment_id"]).all()


def _shown(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").dropna()


def _assert_sizes_safe(where: str, sizes: pd.Series, total: int) -> None:
    """No shown size under K, and what the shown sizes leave of the total is 0 or >= K."""
    shown = _shown(sizes)
    assert not ((shown > 0) & (shown < K)).any(), f"{where}: a size under {K} is shown"
    rest = total - shown.sum()
    assert rest == 0 or rest >= K, f"{where}: the total minus the shown sizes is {rest}"


def _assert_cells_safe(where: str, matrix: pd.DataFrame) -> None:
    """No shown count under K; a row or column with a blank has at least two, but a row that
    shows nothing but zeros (its total, a previous segment's size, is not published)."""
    values = matrix.apply(pd.to_numeric, errors="coerce")
    shown = values.stack()
    assert not ((shown > 0) & (shown < K)).any(), f"{where}: a count under {K} is shown"
    lone = values.isna().sum(axis=1) == 1
    assert not (lone & (values.fillna(0).sum(axis=1) > 0)).any(), f"{where}: a lone blank row"
    assert not (values.isna().sum(axis=0) == 1).any(), f"{where}: a lone blank column"


def test_no_published_figure_shows_the_small_segment(
    workflow: tuple[Path, pd.DataFrame, list[str]],
) -> None:
    tmp, _, _ = workflow
    counts = pd.read_csv(tmp / "scores.csv")["segment_id"].value_counts()
    assert SMALL in counts.to_numpy(), "the fixture's small group must be a segment"
    client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    artifacts = tmp / "mlartifacts"
    for path in artifacts.rglob("segments/business.json"):
        frame = pd.read_json(io.StringIO(path.read_text()), orient="split")
        _assert_sizes_safe(str(path), frame["customers"], N)
    for path in artifacts.rglob("segments/report.json"):
        frame = pd.read_json(io.StringIO(path.read_text()), orient="split")
        _assert_sizes_safe(str(path), frame["customers"], N)
    business = pd.read_csv(next(artifacts.rglob("review/business.csv")))
    for column in ("champion.customers", "challenger.customers"):
        _assert_sizes_safe(f"review {column}", business[column], N)
    migration = pd.read_csv(next(artifacts.rglob("review/migration.csv")), index_col=0)
    _assert_cells_safe("review migration", migration)
    grown = []
    for path in artifacts.rglob("scoring/segment_shares.json"):
        shares = json.loads(path.read_text())
        frame = pd.DataFrame(shares["data"], columns=shares["columns"])
        total = client.get_run(path.parents[2].name).data.metrics["scoring.rows_scored"]
        _assert_sizes_safe(str(path), frame["customers"], int(total))
        trained = _shown(frame["expected_share"]) * N  # the training share: of N customers
        assert not ((trained > 0) & (trained < K)).any(), f"{path}: a training share under {K}"
        in_batch = pd.to_numeric(frame["customers"], errors="coerce")
        grown += frame.loc[in_batch == SMALL + LATER, "expected_share"].tolist()
    assert len(grown) == 1 and pd.isna(grown[0]), "the grown segment without its training share"
    migration = pd.read_csv(next(artifacts.rglob("scoring/migration.csv")), index_col=0)
    _assert_cells_safe("scoring migration", migration)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        for key, value in run.data.metrics.items():
            if key.endswith(("min_share", "max_share", "noise_share")) and not math.isnan(value):
                shown = value == 0 or value * N >= K
                assert shown, f"{run.info.run_name}: {key} {value} shows a small group"
    for version in client.search_model_versions():
        share = version.tags.get("business.min_share")
        assert share in (None, "nan") or float(share) * N >= K, "a tag shows a small segment"
        card = version.description or ""
        assert f"| {SMALL} |" not in card and f"{SMALL / N:.1%}" not in card


def test_hidden_segments_and_cells_protect_the_complement() -> None:
    sizes = pd.DataFrame({"customers": [8, 400, 30, 370]}, index=[0, 1, 2, 3])
    assert privacy.hidden_segments(sizes, K) == {0, 2}  # 8 and the next smallest
    assert privacy.hidden_segments(sizes.assign(customers=[25, 400, 30, 370]), K) == set()
    counts = pd.DataFrame([[50, 3, 0], [10, 80, 0], [0, 0, 200]])
    assert privacy.hidden_cells(counts, K).tolist() == [
        [True, True, False],
        [True, True, False],
        [False, False, False],
    ]
    table = pd.DataFrame(
        {"segment_id": [0, 1, 2, 3], "segment_name": list("abcd"), "customers": [8, 400, 30, 370]}
    )
    shown = report.suppress_small(table.assign(share=table["customers"] / 808), K)
    assert shown["customers"].tolist() == [f"<{K}", 400, f">={K}", 370]
    assert shown["share"].isna().tolist() == [True, False, True, False]
    bars = report.size_chart(table.assign(share=0.25), {0, 2}).axes[0].patches
    assert [b.get_width() for b in bars] == [0.0, 0.25, 0.0, 0.25]


def test_rare_categories_are_pooled_and_the_example_is_made_up() -> None:
    table = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, 40.0], "p": ["Q", "Q", "R"]})
    pooled = RareCategories(2).fit(table[["p"]])
    assert pooled.transform(pd.DataFrame({"p": ["Q", "R", "S"]})).ravel().tolist() == [
        "Q",
        privacy.RARE_CATEGORY,
        privacy.RARE_CATEGORY,
    ]
    assert privacy.example_row(table, "id", ["x", "p"], 2) == {
        "id": privacy.EXAMPLE_ID,
        "x": 2,
        "p": "Q",
    }
    assert privacy.example_row(table, "id", ["p"], 3)["p"] == privacy.RARE_CATEGORY
    # Means of (1, 3) and (5, 100) at ranks 1 and 3; the ranks between interpolated.
    aggregated = privacy.microaggregate(np.array([5.0, 1, 3, 100]), 2)
    assert aggregated.tolist() == [2.0, 14.625, 39.875, 52.5]


@pytest.mark.parametrize("family", ["kmeans", "gmm", "hdbscan"])
def test_a_saved_clusterer_assigns_as_the_fitted_one(family: str) -> None:
    X = synthetic_customers(400, n_segments=3, seed=2)[list(FEATURES)].to_numpy()
    params = {"kmeans": {"n_clusters": 3}, "gmm": {"n_components": 3}}.get(
        family, {"min_cluster_size": 20}
    )
    fitted = FAMILIES[family].fit(X, params, 0)
    saved = pickle.loads(pickle.dumps(privacy.without_training_rows(fitted)))
    assert not set(privacy.TRAINING_ROW_ATTRIBUTES) & set(vars(saved))
    new = np.random.default_rng(3).normal(0, 10, size=(300, len(FEATURES)))
    before, after = FAMILIES[family].assign(fitted, new), FAMILIES[family].assign(saved, new)
    assert len(np.unique(before.labels[before.labels >= 0])) == 3
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
