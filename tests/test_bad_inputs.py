"""The bad-input catalogue: every public command fed broken inputs through the real CLI.

Each case ends in its documented exit code; a refusal is one line on stderr naming the file
(and column) and the reason, with no traceback; no output or temporary file is left behind;
and the tracking store and registry stay whole (no run left RUNNING, every alias on an
existing version, the champion reviewed). conftest.py prints the outcomes after the session.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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
        ["export", f"models:/{MODEL}/2", str(tmp / "export-v2")],
    ]
    for step in steps:
        done = runner.invoke(app, [*step, "--tracking-uri", uri])
        assert done.exit_code == 0, done.output
    return {"uri": uri, "tmp": tmp, "export": tmp / "export-v2"}


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
        versions[model.name] = len(client.search_model_versions(f"name={keys.quoted(model.name)}"))
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


# --------------------------------------------------------------------------------------------
# Commands: usage, specs, names, paths and model folders. Each case runs one command in its own
# folder (also the working directory) after ``setup`` wrote its files there; the arguments'
# placeholders are the shared store's files ({customers}, {spec}, {tx}, {txspec}, {export}: an
# export of catalogue v2, {uri}) and the case's folder ({tmp}).

TRACKED = ("tune", "score", "review", "promote", "rollback", "export", "register")
Setup = Callable[[Path, dict], None]


@dataclass(frozen=True)
class Call:
    """One command line, and the exit code and message (stderr, or stdout on exit 0) it gets."""

    name: str
    args: tuple[str, ...]
    code: int
    message: str
    setup: Setup | None = None


def _spec(text: str | bytes | None = None, tx: bool = False, **data) -> Setup:
    """Write spec.yaml: ``text`` as it is, or the store's customer (``tx``: log) spec with
    ``data`` merged into its data section (a ``name``, ``registry`` or ``search`` to the top)."""

    def write(folder: Path, ctx: dict) -> None:
        if text is not None:
            (folder / "spec.yaml").write_bytes(text.encode() if isinstance(text, str) else text)
            return
        spec = tx_log_spec(ctx["tx"], "case") if tx else synthetic_spec(ctx["customers"], "case")
        for key in ("registry", "search", "name"):
            if key in data:
                spec[key] = data.pop(key)
        spec["data"] |= data
        _write_spec(folder / "spec.yaml", spec)

    return write


def _files(**files: str | bytes | Callable[[dict], object]) -> Setup:
    """Write files: text, bytes, a folder for ``"/"``, or a DataFrame (CSV or Parquet, by
    suffix) or Arrow table made from the store's context."""

    def write(folder: Path, ctx: dict) -> None:
        for name, body in files.items():
            path = folder / name
            body = body(ctx) if callable(body) else body
            if isinstance(body, str) and body == "/":
                path.mkdir()
            elif isinstance(body, bytes):
                path.write_bytes(body)
            elif isinstance(body, str):
                path.write_text(body, encoding="utf-8")
            elif isinstance(body, pa.Table):
                pq.write_table(body, path)
            elif path.suffix == ".parquet":
                body.to_parquet(path, index=False)
            else:
                body.to_csv(path, index=False)

    return write


def _both(*setups: Setup) -> Setup:
    def write(folder: Path, ctx: dict) -> None:
        for setup in setups:
            setup(folder, ctx)

    return write


def _export_copy(target: str = "m", damage: Callable[[Path], None] | None = None) -> Setup:
    """Copy the store's export of catalogue v2 to ``target``, then ``damage`` it."""

    def write(folder: Path, ctx: dict) -> None:
        shutil.copytree(ctx["export"], folder / target)
        if damage:
            damage(folder / target)

    return write


def _pickle(folder: Path) -> Path:
    return folder / "artifacts" / "segmenter.joblib"


def _unrecorded(damage: Callable[[Path], object]) -> Callable[[Path], None]:
    """``damage``, and the export record removed: nothing to check the folder against."""

    def apply(folder: Path) -> None:
        damage(folder)
        (folder / "segml_export.json").unlink()

    return apply


def _store_customers(ctx: dict) -> pd.DataFrame:
    return pd.read_csv(ctx["customers"])


def _store_tx(ctx: dict) -> pd.DataFrame:
    return pd.read_csv(ctx["tx"])


def _list_column(ctx: dict) -> pa.Table:
    frame = _store_customers(ctx)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    tags = pa.array([["a", "b"][: i % 3] for i in range(len(frame))], pa.list_(pa.string()))
    return table.append_column("tags", tags)


def _duplicate_header(ctx: dict) -> str:
    text = Path(ctx["customers"]).read_text()
    header, rest = text.split("\n", 1)
    return header.replace("basket_index", "engagement") + "\n" + rest


def _duplicate_parquet_column(ctx: dict) -> pa.Table:
    table = pa.Table.from_pandas(_store_customers(ctx), preserve_index=False)
    return table.rename_columns(
        [c if c != "basket_index" else "engagement" for c in table.schema.names]
    )


def _tz_log(offsets: tuple[str, ...]) -> Callable[[dict], pd.DataFrame]:
    def make(ctx: dict) -> pd.DataFrame:
        frame = _store_tx(ctx)
        suffix = [offsets[i % len(offsets)] for i in range(len(frame))]
        return frame.assign(day=frame["day"] + "T12:00:00" + pd.Series(suffix))

    return make


def _big_ints(ctx: dict) -> pd.DataFrame:
    frame = _store_customers(ctx)
    return frame.assign(engagement=(frame.index.to_numpy(np.int64) + 1) * (2**60 // 400))


def _booleans(ctx: dict) -> pd.DataFrame:
    frame = _store_customers(ctx)
    return frame.assign(**{c: frame[c] > frame[c].median() for c in FEATURES})


ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
SCORE = ("score", "--input", "{customers}", "--output", "{tmp}/s.csv")
REVIEW = ("review", "--data", "{customers}", "--challenger", "models:/catalogue/2")

CALLS = [
    # 7. Usage errors: one line, exit 2
    Call(
        "--n-trials 0",
        ("tune", "{spec}", "--n-trials", "0"),
        2,
        r"'--n-trials': Input should be greater than or equal to 1",
    ),
    Call(
        "--timeout -1",
        ("tune", "{spec}", "--timeout", "-1"),
        2,
        r"'--timeout': Input should be greater than or equal to 1",
    ),
    Call(
        "--n-trials abc",
        ("tune", "{spec}", "--n-trials", "abc"),
        2,
        r"'--n-trials': Input should be a valid integer",
    ),
    Call(
        "--n-trials without a value",
        ("tune", "{spec}", "--n-trials"),
        2,
        r"'--n-trials': Input should be a valid integer",
    ),
    Call(
        "--seed 1.5",
        ("tune", "{spec}", "--seed", "1.5"),
        2,
        r"'--seed': Input should be a valid integer",
    ),
    Call(
        "a bad --reference-date",
        (*SCORE, "--reference-date", "2024-13-01"),
        2,
        r"--reference-date.*'2024-13-01'",
    ),
    Call("a misspelt option", ("tune", "{spec}", "--trials", "3"), 2, r"No such option: --trials"),
    Call(
        "score without --output",
        ("score", "--input", "{customers}"),
        2,
        r"Missing option '--output'",
    ),
    Call("features without --out", ("features", "{spec}"), 2, r"Missing option '--out'"),
    Call("an unknown command", ("tunes", "{spec}"), 2, r"No such command 'tunes'"),
    Call("an unknown --engine", (*SCORE, "--engine", "dask"), 2, r"'dask' is not one of"),
    Call(
        "an extra argument",
        ("validate", "{spec}", "more"),
        2,
        r"unexpected extra argument\(s\) \(more\)",
    ),
    Call("tune without a spec", ("tune",), 2, r"Missing argument 'spec'"),
    Call(
        "promote without a version",
        ("promote", "--model", "catalogue"),
        2,
        r"Missing argument 'version'",
    ),
    # 5. Spec parsing
    Call(
        "YAML alias bomb",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: .*alias",
        _spec(ALIAS_BOMB),
    ),
    Call(
        "spec over the size limit",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: .*larger than",
        _spec("# pad\n" * 400_000 + "name: x\n"),
    ),
    Call(
        "spec nested 1,100 deep",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: .*nest",
        _spec("name: " + "[" * 1100 + "]" * 1100 + "\n"),
    ),
    Call(
        "duplicate top-level key",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: line 2: duplicate key 'name'",
        _spec("name: a\nname: b\n"),
    ),
    Call(
        "duplicate registry.model_name",
        ("promote", "1", "--spec", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: line 4: duplicate key 'registry\.model_name'",
        _spec("name: a\nregistry:\n  model_name: catalogue\n  model_name: other\n"),
    ),
    Call(
        "spec is a list",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"a spec is a YAML mapping of keys \(got list\)",
        _spec("- a\n- b\n"),
    ),
    Call(
        "empty spec",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"a spec is a YAML mapping of keys",
        _spec(""),
    ),
    Call(
        "spec not UTF-8",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: not a readable YAML spec",
        _spec(b"name: \xff\xfe\n"),
    ),
    Call(
        "spec is a folder",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: .*folder",
        _files(**{"spec.yaml": "/"}),
    ),
    Call(
        "spec with a Python tag",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: not a readable YAML spec",
        _spec("name: !!python/object/apply:os.system ['true']\n"),
    ),
    Call(
        "spec with tabs",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: not a readable YAML spec",
        _spec("name: a\ndata:\n\tsource: x\n"),
    ),
    Call(
        "spec misspelt key",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: data\.delimter: unknown key",
        _spec(delimter=";"),
    ),
    Call(
        "spec file missing", ("validate", "{tmp}/nope.yaml"), 2, r"nope\.yaml: spec file not found"
    ),
    # 4. Names checked before any work
    Call(
        "model name MLflow refuses",
        ("tune", "{tmp}/spec.yaml", "--n-trials", "2"),
        2,
        r"spec\.yaml: registry\.model_name: .*'team/seg'",
        _spec(registry={"model_name": "team/seg"}),
    ),
    Call(
        "model name '..'",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: registry\.model_name: ",
        _spec(registry={"model_name": ".."}),
    ),
    Call(
        "spec name with a slash",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: name: String should match",
        _spec(name="a/b"),
    ),
    Call(
        "--model with a slash",
        ("promote", "1", "--model", "team/seg"),
        2,
        r"model reference '1': not found in the registry",
    ),
    Call(
        "--model with a quote",
        ("promote", "1", "--model", "o'brien"),
        2,
        r"model reference '1': not found in the registry",
    ),
    Call(
        "model name with a quote",
        ("tune", "{tmp}/spec.yaml", "--n-trials", "1"),
        0,
        r"registered: o'brien v1 \(alias challenger\)",
        _spec(registry={"model_name": "o'brien"}, search=SEARCH),
    ),
    # 6. Accepted without a word
    Call(
        "Parquet list column",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"c\.parquet: column 'tags' holds lists",
        _both(
            _files(**{"c.parquet": _list_column}),
            _spec(
                source="c.parquet",
                attributes={"behavioural": list(FEATURES), "geographic": ["tags"]},
            ),
        ),
    ),
    Call(
        "duplicated column name (CSV)",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"c\.csv: column 'engagement' appears 2 times",
        _both(_files(**{"c.csv": _duplicate_header}), _spec(source="c.csv")),
    ),
    Call(
        "duplicated column name (Parquet)",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"c\.parquet: column 'engagement' appears 2 times",
        _both(_files(**{"c.parquet": _duplicate_parquet_column}), _spec(source="c.parquet")),
    ),
    Call(
        "duplicated column in a batch",
        (
            "score",
            "--input",
            "{tmp}/c.csv",
            "--output",
            "{tmp}/s.csv",
            "--model",
            "models:/catalogue/1",
        ),
        2,
        r"c\.csv: column 'engagement' appears 2 times",
        _files(**{"c.csv": _duplicate_header}),
    ),
    Call(
        "reference date centuries ahead",
        ("validate", "{txspec}", "--reference-date", "2500-01-01"),
        2,
        r"reference date 2500-01-01 is after today",
    ),
    Call(
        "spec reference date centuries ahead",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: data\.reference_date: .*2999-01-01 is after today",
        _spec(tx=True, reference_date="2999-01-01"),
    ),
    Call(
        "score as of centuries ahead",
        (
            "score",
            "--input",
            "{tx}",
            "--output",
            "{tmp}/s.csv",
            "--model",
            "models:/catalogue_tx/1",
            "--reference-date",
            "2500-01-01",
        ),
        2,
        r"reference date 2500-01-01 is after today",
    ),
    Call(
        "outcome also an attribute",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: data: .*'engagement' is both data\.attributes\.behavioural and data\.outc",
        _spec(outcomes={"revenue": "engagement"}),
    ),
    Call(
        "id column also an attribute",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: data: .*'customer_id' is both data\.id_column and data\.attributes\.",
        _spec(attributes={"behavioural": [*FEATURES, ID_COLUMN]}),
    ),
    # 1. Library errors that ended as exit 1
    Call(
        "time-zone-aware timestamps",
        ("validate", "{tmp}/spec.yaml"),
        0,
        r"valid$",
        _both(
            _files(**{"t.csv": _tz_log(("+02:00",))}),
            _spec(
                tx=True,
                source="t.csv",
                transactions={"timestamp": "day", "amount": "amount", "quantity": "qty"},
            ),
        ),
    ),
    Call(
        "mixed-offset timestamps",
        ("validate", "{tmp}/spec.yaml"),
        0,
        r"valid$",
        _both(
            _files(**{"t.csv": _tz_log(("+02:00", "-05:00", "Z"))}),
            _spec(
                tx=True,
                source="t.csv",
                transactions={"timestamp": "day", "amount": "amount", "quantity": "qty"},
            ),
        ),
    ),
    Call(
        "timestamp_format with an unknown directive",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: data\.transactions\.timestamp_format: .*'Q' is a bad directive",
        _both(
            _files(**{"t.csv": _store_tx}),
            _spec(
                tx=True,
                source="t.csv",
                transactions={
                    "timestamp": "day",
                    "timestamp_format": "%Y-%Q",
                    "amount": "amount",
                    "quantity": "qty",
                },
            ),
        ),
    ),
    Call(
        "empty delimiter",
        ("validate", "{tmp}/spec.yaml"),
        2,
        r"spec\.yaml: data\.delimiter: ",
        _spec(delimiter=""),
    ),
    Call(
        "reference date before all the data",
        ("validate", "{txspec}", "--reference-date", "1990-01-01"),
        2,
        r"tx\.csv: no transaction on or before 1990-01-01",
    ),
    Call(
        "int64 above 2^53 in Parquet",
        (
            "score",
            "--input",
            "{tmp}/c.parquet",
            "--output",
            "{tmp}/s.csv",
            "--model",
            "models:/catalogue/1",
        ),
        0,
        r"scoring run",
        _files(**{"c.parquet": _big_ints}),
    ),
    Call(
        "all features boolean",
        (
            "score",
            "--input",
            "{tmp}/c.parquet",
            "--output",
            "{tmp}/s.csv",
            "--model",
            "models:/catalogue/1",
        ),
        0,
        r"scoring run",
        _files(**{"c.parquet": _booleans}),
    ),
    Call(
        "export with a broken MLmodel",
        (*SCORE, "--model", "{tmp}/m"),
        2,
        r"model .*m: cannot be loaded",
        _export_copy(
            damage=_unrecorded(lambda m: (m / "MLmodel").write_text("flavors: [unclosed\n"))
        ),
    ),
    Call(
        "export with a truncated pickle",
        (*SCORE, "--model", "{tmp}/m"),
        2,
        r"model .*m: cannot be loaded",
        _export_copy(
            damage=_unrecorded(lambda m: _pickle(m).write_bytes(_pickle(m).read_bytes()[:100]))
        ),
    ),
    Call(
        "export with a garbage record",
        (*SCORE, "--model", "{tmp}/m"),
        2,
        r"m/segml_export\.json: not a segml export record",
        _export_copy(damage=lambda m: (m / "segml_export.json").write_text("{not json")),
    ),
    Call(
        "unknown --tracking-uri scheme",
        (*SCORE, "--tracking-uri", "nosuch://x"),
        2,
        r"tracking URI 'nosuch://x': .*unsupported URI",
    ),
    Call(
        "features --out in a folder nobody may write",
        ("features", "{spec}", "--out", "/proc/segml-features.parquet"),
        2,
        r"/proc: cannot write here",
    ),
    Call(
        "score --output in a folder nobody may write",
        (*SCORE[:4], "/proc/segml/s.csv", "--model", "models:/catalogue/1"),
        2,
        r"/proc: cannot write here",
    ),
    # 2. Exit 2 that left something behind
    Call(
        "score refused into new folders",
        (*SCORE[:4], "{tmp}/a/b/s.csv", "--model", "models:/nope/1"),
        2,
        r"'models:/nope/1': not found",
    ),
    Call(
        "score of a bad batch into new folders",
        (
            "score",
            "--input",
            "{tmp}/c.csv",
            "--output",
            "{tmp}/a/b/s.csv",
            "--model",
            "models:/catalogue/1",
            "--report",
            "{tmp}/r/s",
        ),
        2,
        r"c\.csv: file is empty",
        _files(**{"c.csv": ""}),
    ),
    Call(
        "review refused into new folders",
        (
            "review",
            "--data",
            "{customers}",
            "--challenger",
            "models:/nope/1",
            "--out",
            "{tmp}/a/b",
        ),
        2,
        r"'models:/nope/1': not found",
    ),
    Call(
        "features of a bad spec into new folders",
        ("features", "{tmp}/spec.yaml", "--out", "{tmp}/a/b/f.parquet"),
        2,
        r"spec\.yaml: data\.kind: ",
        _spec(kind="people"),
    ),
    Call(
        "export refused into new folders",
        ("export", "models:/nope/1", "{tmp}/a/b/m"),
        2,
        r"'models:/nope/1': not found",
    ),
    Call(
        "store in a missing folder",
        (
            *SCORE,
            "--model",
            "models:/catalogue/1",
            "--tracking-uri",
            "sqlite:///{tmp}/gone/mlflow.db",
        ),
        2,
        r"gone/mlflow\.db: no MLflow store here",
    ),
    Call(
        "store file missing (promote)",
        ("promote", "1", "--model", "catalogue", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        2,
        r"mlflow\.db: no MLflow store here",
    ),
    Call(
        "store file missing (rollback)",
        ("rollback", "--model", "catalogue", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        2,
        r"mlflow\.db: no MLflow store here",
    ),
    Call(
        "store file missing (export)",
        (
            "export",
            "models:/catalogue/1",
            "{tmp}/m",
            "--tracking-uri",
            "sqlite:///{tmp}/mlflow.db",
        ),
        2,
        r"mlflow\.db: no MLflow store here",
    ),
    Call(
        "store file missing (register)",
        ("register", "0123456789abcdef", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        2,
        r"mlflow\.db: no MLflow store here",
    ),
    Call(
        "store file missing (review)",
        (*REVIEW, "--tracking-uri", "sqlite:///{tmp}/mlflow.db"),
        2,
        r"mlflow\.db: no MLflow store here",
    ),
    Call(
        "tune with its store in a missing folder",
        ("tune", "{spec}", "--tracking-uri", "sqlite:///{tmp}/gone/mlflow.db"),
        2,
        r"gone: the store's folder does not exist",
    ),
    Call(
        "store is a folder",
        ("promote", "1", "--model", "catalogue", "--tracking-uri", "sqlite:///{tmp}/db"),
        2,
        r"db: no MLflow store here",
        _files(db="/"),
    ),
    Call(
        "store is not a database",
        ("promote", "1", "--model", "catalogue", "--tracking-uri", "sqlite:///{tmp}/x.db"),
        2,
        r"x\.db: not an MLflow store",
        _files(**{"x.db": "hello"}),
    ),
    # 3. Work done before a path was checked
    Call(
        "score --output is a folder",
        (*SCORE[:4], "{tmp}/o.csv", "--model", "models:/catalogue/1"),
        2,
        r"o\.csv: is a folder; name a file",
        _files(**{"o.csv": "/"}),
    ),
    Call(
        "score --output under a file",
        (*SCORE[:4], "{tmp}/f/s.csv", "--model", "models:/catalogue/1"),
        2,
        r"f: is a file, not a folder",
        _files(f="x"),
    ),
    Call(
        "score --report is a file",
        (*SCORE, "--model", "models:/catalogue/1", "--report", "{tmp}/r"),
        2,
        r"r: is a file; name a folder",
        _files(r="x"),
    ),
    Call(
        "review --out is a file",
        (*REVIEW, "--champion", "none", "--out", "{tmp}/r"),
        2,
        r"r: is a file; name a folder",
        _files(r="x"),
    ),
    Call(
        "features --out is a folder",
        ("features", "{spec}", "--out", "{tmp}/f.parquet"),
        2,
        r"f\.parquet: is a folder; name a file",
        _files(**{"f.parquet": "/"}),
    ),
    Call(
        "features --out of an unknown kind",
        ("features", "{spec}", "--out", "{tmp}/f.xlsx"),
        2,
        r"f\.xlsx: the output must end in \.parquet or \.csv",
    ),
    Call(
        "export into a file",
        ("export", "models:/catalogue/1", "{tmp}/m"),
        2,
        r"m: is a file; name a folder",
        _files(m="x"),
    ),
    Call(
        "export under a file",
        ("export", "models:/catalogue/1", "{tmp}/f/m"),
        2,
        r"f: is a file, not a folder",
        _files(f="x"),
    ),
    Call(
        "score --output overwrites the input",
        (
            "score",
            "--input",
            "{tmp}/c.csv",
            "--output",
            "{tmp}/c.csv",
            "--model",
            "models:/catalogue/1",
        ),
        2,
        r"c\.csv: the output would overwrite an input",
        _files(**{"c.csv": _store_customers}),
    ),
    Call(
        "score --previous missing",
        (*SCORE, "--model", "models:/catalogue/1", "--previous", "{tmp}/p.csv"),
        2,
        r"p\.csv: file not found",
    ),
    Call(
        "score --input missing",
        (
            "score",
            "--input",
            "{tmp}/c.csv",
            "--output",
            "{tmp}/s.csv",
            "--model",
            "models:/catalogue/1",
        ),
        2,
        r"c\.csv: file not found",
    ),
    # 8. A local folder does not shadow the registry
    Call(
        "folder named champion (promote)",
        ("promote", "champion", "--model", "catalogue"),
        0,
        r"catalogue: champion v1$",
        _export_copy("champion"),
    ),
    Call(
        "folder named champion (score)",
        (*SCORE, "--spec", "{spec}"),
        0,
        r"catalogue v1",
        _export_copy("champion"),
    ),
    Call(
        "folder named champion, no model name",
        SCORE,
        2,
        r"model reference 'champion': .*write ./champion",
        _export_copy("champion"),
    ),
    Call(
        "folder written as ./challenger",
        (*SCORE, "--model", "./challenger"),
        0,
        r"scoring run",
        _export_copy("challenger"),
    ),
    Call(
        "promote a model folder",
        ("promote", "./m", "--model", "catalogue"),
        2,
        r"'\./m': promote takes a registered version or alias",
        _export_copy(),
    ),
    # 12. Model folders are code: checked against the registry
    Call(
        "export with a tampered pickle",
        (*SCORE, "--model", "{tmp}/m"),
        2,
        r"m: differs from its registered version catalogue v2 \(artifacts/segmenter\.joblib\)",
        _export_copy(damage=lambda m: _pickle(m).write_bytes(_pickle(m).read_bytes() + b"\0")),
    ),
    Call(
        "export with tampered code",
        (*SCORE, "--model", "{tmp}/m"),
        2,
        r"m: differs from its registered version catalogue v2 \(code/segml/model\.py\)",
        _export_copy(damage=lambda m: (m / "code/segml/model.py").write_text("import os\n")),
    ),
    Call(
        "export with a tampered record",
        (*SCORE, "--model", "{tmp}/m"),
        2,
        r"m: differs from its registered version catalogue v1",
        _export_copy(
            damage=lambda m: (m / "segml_export.json").write_text(
                json.dumps({"name": "catalogue", "version": "1", "source": "models:/catalogue/1"})
            )
        ),
    ),
    Call(
        "review with a tampered folder",
        ("review", "--data", "{customers}", "--challenger", "{tmp}/m", "--champion", "none"),
        2,
        r"m: differs from its registered version catalogue v2",
        _export_copy(damage=lambda m: _pickle(m).write_bytes(_pickle(m).read_bytes() + b"\0")),
    ),
]


def _snapshot(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


def _store_state(uri: str) -> dict[str, object]:
    """Runs by status, model versions and aliases, read straight from the SQLite store."""
    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db:
        return {
            "runs": sorted(db.execute("SELECT status, count(*) FROM runs GROUP BY status")),
            "versions": sorted(db.execute("SELECT name, version, status FROM model_versions")),
            "aliases": sorted(
                db.execute("SELECT name, alias, version FROM registered_model_aliases")
            ),
        }


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
def test_command_case(
    call: Call,
    store: dict,
    tmp_path: Path,
    record: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = {
        "uri": store["uri"],
        "tmp": str(tmp_path),
        "customers": str(store["tmp"] / "customers.csv"),
        "spec": str(store["tmp"] / "spec.yaml"),
        "tx": str(store["tmp"] / "tx.csv"),
        "txspec": str(store["tmp"] / "tx.yaml"),
        "export": str(store["export"]),
    }
    if call.setup:
        call.setup(tmp_path, ctx)
    args = [a.format(**ctx) for a in call.args]
    if args and args[0] in TRACKED and "--tracking-uri" not in args:
        args += ["--tracking-uri", store["uri"]]
    files, state = _snapshot(tmp_path, store["tmp"]), _store_state(store["uri"])
    result = runner.invoke(app, args)
    record(call.name, " ".join(call.args[:1]), result, tmp_path)
    assert result.exit_code == call.code, result.output
    after = _store_state(store["uri"])
    assert after["runs"] == [r for r in after["runs"] if r[0] != "RUNNING"], after["runs"]
    if call.code == EXIT_OK:
        assert re.search(call.message, result.stdout, re.MULTILINE), result.stdout
        if args[0] != "tune":  # the registry is as it was (a folder named champion moved nothing)
            assert (after["versions"], after["aliases"]) == (state["versions"], state["aliases"])
        left = [p for p in _snapshot(tmp_path) - files if p.name.startswith(".")]
        assert not left, left
        return
    assert result.stderr.count("\n") == 1 and len(result.stderr) < 400, result.stderr
    assert result.stderr.startswith("segml: error: "), result.stderr
    assert re.search(call.message, result.stderr), result.stderr
    assert _snapshot(tmp_path, store["tmp"]) == files, "left behind"
    assert after == state, "the store changed"
