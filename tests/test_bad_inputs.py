"""The bad-input catalogue: every public command fed broken inputs through the real CLI.

Each case ends in its documented exit code; a refusal is one line on stderr naming the file
(and column) and the reason, with no traceback; no output or temporary file is left behind;
and the tracking store and registry stay whole (no run left RUNNING, every alias on an
existing version, the champion reviewed). conftest.py prints the outcomes after the session.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner, Result

from segml import tracking as keys
from segml.cli import app
from segml.errors import EXIT_BAD_INPUT, EXIT_OK
from segml.registry import CHAMPION
from segml.synthetic import FEATURES, ID_COLUMN, synthetic_customers, synthetic_spec

from .conftest import CATALOGUE
from .test_data import tx_spec

runner = CliRunner()
MODEL = "catalogue"
TX_MODEL = "catalogue_tx"
SEARCH = {
    "seed": 1,
    "reduction": {"reducer": "none"},
    "families": {"kmeans": {"n_clusters": 5}},
    "bootstrap_search": 2,
    "bootstrap_final": 2,
    "silhouette_sample": 100,
}
TX_SEARCH = {**SEARCH, "families": {"kmeans": {"n_clusters": 3}}}
SPEC_COMMANDS = ("validate", "features", "tune")
DATA_COMMANDS = (*SPEC_COMMANDS, "score", "review")
Expect = tuple[int, str]


# --------------------------------------------------------------------------------------------
# Inputs


def customers(n: int = 300, seed: int = 2) -> pd.DataFrame:
    """Synthetic customers of five known segments (the shared model's training kind)."""
    return synthetic_customers(n, seed=seed)


def transactions(seed: int = 3) -> pd.DataFrame:
    """A year of purchases by 60 customers (the shared transaction model's kind)."""
    rng = np.random.default_rng(seed)
    n = 600
    return pd.DataFrame(
        {
            "cust": [f"T{i:03d}" for i in rng.integers(0, 60, size=n)],
            "day": (
                pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 365, n), "D")
            ).strftime("%Y-%m-%d"),
            "amount": rng.gamma(2.0, 30.0, size=n).round(2),
            "qty": rng.integers(1, 4, size=n),
        }
    )


def tx_log_spec(source: str, name: str) -> dict:
    """The transaction spec of test_data, as of 2024-01-01, with the catalogue's tiny search."""
    return tx_spec(source, reference_date="2024-01-01") | {"name": name, "search": TX_SEARCH}


def _edit(frame: pd.DataFrame, **cells: object) -> pd.DataFrame:
    """A copy with ``column=value`` for whole columns, or ``column=(row, value)`` for one cell."""
    frame = frame.copy()
    for column, value in cells.items():
        if isinstance(value, tuple):
            frame[column] = frame[column].astype(object)
            frame.loc[value[0], column] = value[1]
        else:
            frame[column] = value
    return frame


def _mixed() -> pd.DataFrame:
    frame = customers().astype({"engagement": object})
    frame.loc[:110, "engagement"] = "high"
    return frame


def _many_categories() -> pd.DataFrame:
    frame = synthetic_customers(10_000, seed=4)
    frame["city"] = [f"city {i}" for i in range(len(frame))]
    return frame


def _unicode() -> pd.DataFrame:
    return customers().rename(columns={ID_COLUMN: "顧客番号", "engagement": "engagement_é"})


@dataclass(frozen=True)
class Case:
    """One broken (or odd but fine) input, and what each command must do with it."""

    name: str
    body: Callable[[], pd.DataFrame | str | bytes | None]
    expect: dict[str, Expect]
    transactions: bool = False
    suffix: str = ".csv"
    spec: dict = field(default_factory=dict)
    own_model: bool = False
    """Score and review with the model this case's own tune registered."""

    @property
    def slug(self) -> str:
        return re.sub(r"\W+", "_", self.name).strip("_")


def _all(code: int, message: str, commands: tuple[str, ...] = DATA_COMMANDS) -> dict[str, Expect]:
    return dict.fromkeys(commands, (code, message))


OK = (EXIT_OK, "")
CASES = [
    Case("empty file", lambda: "", _all(2, r"file is empty \(no header and no rows\)")),
    Case(
        "header only",
        lambda: customers().head(0),
        _all(2, r"no data rows \(only a header\)")
        | {"score": (2, r"no customer to score \(the input has no data rows\)")},
    ),
    Case(
        "wrong delimiter",
        lambda: customers().to_csv(index=False, sep=";"),
        _all(2, r"missing id column 'customer_id' \(found: customer_id;engagement;.*\)")
        | _all(2, r"; is data\.delimiter right\?$", ("validate", "features", "tune", "review")),
    ),
    Case(
        "UTF-8 BOM", lambda: b"\xef\xbb\xbf" + customers().to_csv(index=False).encode(), _all(*OK)
    ),
    Case(
        "mixed types",
        _mixed,
        _all(
            2,
            r"column 'engagement' mixes numbers and text \(63% of its values are numbers, "
            r"e\.g\. 'high'\); fix the values or declare it in features\.categorical",
        )
        | {"score": (2, r"column 'engagement' does not hold numbers .*e\.g\. 'high'")},
    ),
    Case(
        "NaN in a feature",
        lambda: _edit(customers(), engagement=(4, np.nan)),
        _all(*OK)
        | {"validate": (0, r"missing   0\.3%  engagement"), "features": (0, r"missing   0\.3%")},
    ),
    Case(
        "inf in a feature",
        lambda: _edit(customers(), engagement=(4, np.inf)),
        _all(
            2, r"1 row\(s\) with non-finite value in column 'engagement' \(first at data row 5\)"
        ),
    ),
    Case(
        "feature all missing",
        lambda: _edit(customers(), engagement=np.nan),
        _all(2, r"column 'engagement' has no values \(all 300 missing\)")
        | {"score": (2, r"column 'engagement' has no values \(all of the first 300 missing\)")},
    ),
    Case(
        "date in the future",
        lambda: _edit(transactions(), day=(7, "2999-01-01")),
        _all(2, r"1 row\(s\) with date out of range in column 'day' \(first at data row 8\)"),
        transactions=True,
    ),
    Case(
        "date before 1900",
        lambda: _edit(transactions(), day=(7, "1899-12-31")),
        _all(2, r"1 row\(s\) with date out of range in column 'day' \(first at data row 8\)"),
        transactions=True,
    ),
    Case(
        "negative amount",
        lambda: _edit(transactions(), amount=(9, -5.0)),
        _all(2, r"1 row\(s\) with negative amount in column 'amount' \(first at data row 10\)"),
        transactions=True,
    ),
    Case(
        "duplicate ids",
        lambda: _edit(customers(), customer_id=(1, "C0000000")),
        _all(2, r"2 row\(s\) with duplicate id in column 'customer_id' \(first at data row 1\)")
        | {
            "score": (
                2,
                r"1 row\(s\) with duplicate id in column 'customer_id' \(first at data row 2\)",
            )
        },
    ),
    Case(
        "ids equal once trimmed",
        lambda: _edit(customers(), customer_id=(1, "  C0000000 ")),
        _all(2, r"2 row\(s\) with duplicate id in column 'customer_id' \(first at data row 1\)")
        | {
            "score": (
                2,
                r"1 row\(s\) with duplicate id in column 'customer_id' \(first at data row 2\)",
            )
        },
    ),
    Case(
        "ids differing in case only",
        lambda: _edit(customers(), customer_id=(1, "c0000000")),
        _all(*OK, ("validate", "features", "score")),
    ),
    Case(
        "10,000 categories in a column",
        _many_categories,
        _all(*OK) | {"features": (0, r"customers: 10,000")},
        spec={"attributes": {"behavioural": list(FEATURES), "geographic": ["city"]}},
    ),
    Case(
        "a single customer",
        lambda: customers().head(1),
        _all(*OK, ("features", "score"))
        | _all(
            2,
            r"1 customer\(s\); segmenting needs at least constraints\.min_segments \(3\)",
            ("validate", "tune"),
        )
        | {
            "review": (
                2,
                r"1 customer\(s\) to review; a review needs at least min_report_size \(20\)",
            ),
        },
    ),
    Case(
        "all customers identical",
        lambda: _edit(customers(), **dict.fromkeys(FEATURES, 1.5)),
        _all(*OK, ("features", "score", "review"))
        | _all(
            2,
            r"all 300 customers have identical features; nothing to segment",
            ("validate", "tune"),
        ),
    ),
    Case(
        "zero-variance feature",
        lambda: _edit(customers(), engagement=2.0),
        _all(*OK)
        | {"review": (3, r"^segml: error: catalogue v2 failed review gates: min_share$")},
    ),
    Case(
        "more segments than customers",
        lambda: customers().head(6),
        _all(*OK, ("validate", "features"))
        | {
            "tune": (
                2,
                r"no trial completed \(trial 0: n_samples=6 should be >= n_clusters=10\.?\)",
            )
        },
        spec={"search": {**SEARCH, "families": {"kmeans": {"n_clusters": 10}}}},
    ),
    Case(
        "unicode column names",
        _unicode,
        _all(*OK),
        spec={
            "id_column": "顧客番号",
            "attributes": {"behavioural": ["engagement_é", *FEATURES[1:]]},
        },
        own_model=True,
    ),
    Case(
        "corrupt Parquet",
        lambda: b"PAR1 this is not a parquet file",
        _all(2, r"not a readable Parquet file or folder \(")
        | {"score": (2, r"not a readable CSV or Parquet file \(")},
        suffix=".parquet",
    ),
    Case("spec names a missing file", lambda: None, _all(2, r": file not found$")),
    Case(
        "id column missing",
        lambda: customers().rename(columns={ID_COLUMN: "id"}),
        _all(2, r"missing id column 'customer_id' \(found: id, engagement, "),
    ),
    Case(
        "declared column missing",
        lambda: transactions().drop(columns=["amount"]),
        _all(
            2,
            r"missing column declared at data\.transactions\.amount 'amount' "
            r"\(found: cust, day, qty\)",
        ),
        transactions=True,
    ),
    Case(
        "unparseable date",
        lambda: _edit(transactions(), day=(2, "2023-02-30")),
        _all(2, r"1 row\(s\) with unparseable date in column 'day' \(first at data row 3\)"),
        transactions=True,
    ),
]


# --------------------------------------------------------------------------------------------
# The shared store: one tiny tuned, reviewed and promoted model of each kind


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``catalogue`` v1 (champion, reviewed) and v2 (challenger); ``catalogue_tx`` v1."""
    tmp = tmp_path_factory.mktemp("catalogue")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    customers(seed=1).to_csv(tmp / "customers.csv", index=False)
    transactions(seed=5).to_csv(tmp / "tx.csv", index=False)
    spec = _write_spec(tmp / "spec.yaml", synthetic_spec("customers.csv", MODEL, search=SEARCH))
    tx = _write_spec(tmp / "tx.yaml", tx_log_spec("tx.csv", TX_MODEL))
    steps = [
        ["tune", str(spec), "--n-trials", "2"],
        ["review", "--data", str(spec), "--champion", "none"],
        ["promote", "1", "--model", MODEL],
        ["tune", str(spec), "--n-trials", "2", "--seed", "2", "--study", "second"],
        ["tune", str(tx), "--n-trials", "2"],
    ]
    for step in steps:
        done = runner.invoke(app, [*step, "--tracking-uri", uri])
        assert done.exit_code == 0, done.output
    return {"uri": uri, "tmp": tmp}


def _write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Add one outcome to the table conftest.py prints at the end of the session."""
    rows = request.config.stash.setdefault(CATALOGUE, [])

    def add(case: str, command: str, result: Result, folder: Path) -> None:
        text = result.stderr.strip() if result.exit_code else result.stdout.strip()
        outcome = text.splitlines()[-1].replace(f"{folder}/", "") if text else ""
        rows.append((case, command, result.exit_code, outcome))

    return add


# --------------------------------------------------------------------------------------------
# Checks


def assert_refused_in_one_line(result: Result, message: str, names: Path | str) -> None:
    """One line on stderr, ``segml: error: <file>: ...``, matching ``message``."""
    assert result.stderr.count("\n") == 1, result.stderr
    line = result.stderr.rstrip("\n")
    assert line.startswith(f"segml: error: {names}"), line
    assert "Traceback" not in result.output
    assert re.search(message, line), (message, line)


def assert_no_partial_output(out: Path, completed: bool) -> None:
    """Nothing at all after a refusal; no staging or temporary file after a completed run."""
    left = [p for p in out.rglob("*") if p.is_file() or p.name.startswith(".")]
    if completed:
        left = [p for p in left if p.name.startswith(".") or p.suffix == ".part"]
    assert not left, f"left behind: {left}"


def assert_store_whole(uri: str) -> dict[str, int]:
    """No run left RUNNING; every alias on an existing, ready version; the champion reviewed
    (or promoted with --force and a reason). Returns the version count per model."""
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, "attributes.status = 'RUNNING'")
    assert not running, [r.info.run_name for r in running]
    versions = {}
    for model in client.search_registered_models():
        versions[model.name] = len(client.search_model_versions(f"name='{model.name}'"))
        for alias, number in model.aliases.items():
            version = client.get_model_version(model.name, number)
            assert version.status == "READY", (model.name, alias, number)
            if alias == CHAMPION:
                tags = version.tags
                reviewed = tags.get(keys.TAG_VERDICT) == keys.VERDICT_PASSED
                assert reviewed or tags.get("segml.promote.forced") == "true", (model.name, tags)
    return versions


# --------------------------------------------------------------------------------------------
# The catalogue


def _write_input(case: Case, folder: Path) -> Path:
    path = folder / f"data{case.suffix}"
    body = case.body()
    if isinstance(body, pd.DataFrame):
        body.to_csv(path, index=False)
    elif isinstance(body, bytes):
        path.write_bytes(body)
    elif isinstance(body, str):
        path.write_text(body, encoding="utf-8")
    return path


def _case_spec(case: Case, folder: Path, source: Path) -> Path:
    if case.transactions:
        spec = tx_log_spec(source.name, case.slug)
    else:
        spec = synthetic_spec(source.name, case.slug, search=SEARCH)
    spec["data"] |= {k: v for k, v in case.spec.items() if k != "search"}
    spec["search"] = case.spec.get("search", spec["search"])
    return _write_spec(folder / "spec.yaml", spec)


def _arguments(case: Case, command: str, spec: Path, source: Path, out: Path) -> list[str]:
    model = case.slug if case.own_model else TX_MODEL if case.transactions else MODEL
    score_model = f"models:/{model}/1"
    challenger = f"models:/{model}/{1 if case.own_model or case.transactions else 2}"
    return {
        "validate": ["validate", str(spec)],
        "features": ["features", str(spec), "--out", str(out / "features.parquet")],
        "tune": ["tune", str(spec), "--n-trials", "2"],
        "score": [
            "score",
            "--input",
            str(source),
            "--output",
            str(out / "scores.parquet"),
            "--model",
            score_model,
            "--report",
            str(out / "report"),
        ],
        "review": [
            "review",
            "--data",
            str(source),
            "--challenger",
            challenger,
            "--champion",
            "none",
            "--out",
            str(out / "review"),
        ],
    }[command]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.slug for c in CASES])
def test_data_case(case: Case, store: dict, tmp_path: Path, record: Callable) -> None:
    source = _write_input(case, tmp_path)
    spec = _case_spec(case, tmp_path, source)
    for command in DATA_COMMANDS:
        if command not in case.expect:
            continue
        code, message = case.expect[command]
        out = tmp_path / f"out-{command}"
        out.mkdir()
        before = assert_store_whole(store["uri"])
        args = _arguments(case, command, spec, source, out)
        if command not in ("validate", "features"):
            args += ["--tracking-uri", store["uri"]]
        result = runner.invoke(app, args)
        record(case.name, command, result, tmp_path)
        assert result.exit_code == code, (command, result.output)
        if code == EXIT_OK:
            assert re.search(message, result.stdout), (command, message, result.stdout)
        else:
            names = tmp_path if code == EXIT_BAD_INPUT else ""
            assert_refused_in_one_line(result, message, names)
        assert_no_partial_output(out, completed=code != EXIT_BAD_INPUT)
        after = assert_store_whole(store["uri"])
        if code == EXIT_BAD_INPUT:
            assert after == before, f"{command} changed the registry: {before} -> {after}"


REFERENCES = [
    (
        ("score", "--model", "models:/nope@champion"),
        r"model reference 'models:/nope@champion': "
        r"not found in the registry",
    ),
    (("review", "--challenger", f"models:/{MODEL}/99"), rf"'models:/{MODEL}/99': not found"),
    (("promote", "99", "--model", MODEL), r"model reference '99': not found in the registry"),
    (("promote", "2", "--model", "no_such_model"), r"'2': not found in the registry"),
    (("promote", "1", "--model", MODEL, "--force"), r"--force needs --reason"),
    (("register", "0123456789abcdef"), r"run 0123456789abcdef: not found in sqlite:///"),
    (("export", "nonsense"), r"model reference 'nonsense': expected models:/NAME@ALIAS"),
    (("export", "models:/nope/1"), r"model reference 'models:/nope/1': not found"),
    (("rollback", "--model", MODEL), rf"{MODEL}: no previous champion to roll back to"),
    (("rollback",), r"name the registered model with --model NAME or --spec SPEC"),
]


@pytest.mark.parametrize(("args", "message"), REFERENCES, ids=[" ".join(a) for a, _ in REFERENCES])
def test_model_reference_that_does_not_exist(
    args: tuple[str, ...], message: str, store: dict, tmp_path: Path, record: Callable
) -> None:
    command, *rest = args
    out = tmp_path / "out"
    targets = {
        "score": ["--input", str(store["tmp"] / "customers.csv"), "--output", str(out / "s.csv")],
        "review": ["--data", str(store["tmp"] / "customers.csv"), "--out", str(out)],
        "export": [str(out / "model")],
    }
    before = assert_store_whole(store["uri"])
    result = runner.invoke(
        app, [command, *rest, *targets.get(command, []), "--tracking-uri", store["uri"]]
    )
    record("bad model reference", " ".join(args), result, tmp_path)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert_refused_in_one_line(result, message, "")
    assert not out.exists()
    assert assert_store_whole(store["uri"]) == before
