"""Data intake: every row is used, quarantined with a reason, or the run is rejected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from segml.data import read_customers
from segml.errors import DataError
from segml.spec import load_spec
from segml.synthetic import synthetic_spec

TX_HEADER = "cust,day,amount,qty\n"


def tx_spec(source: str, **data: object) -> dict:
    return {
        "name": "tx",
        "data": {
            "source": source,
            "kind": "transactions",
            "id_column": "cust",
            "transactions": {
                "timestamp": "day",
                "timestamp_format": "%Y-%m-%d",
                "amount": "amount",
                "quantity": "qty",
            },
            **data,
        },
    }


@pytest.fixture
def tx_file(tmp_path: Path, write_spec: Callable[..., Path]) -> Callable[..., Path]:
    """Write a transactions CSV body and a spec for it; return the spec path."""

    def make(body: str, **data: object) -> Path:
        (tmp_path / "tx.csv").write_text(TX_HEADER + body)
        return write_spec(tx_spec("tx.csv", **data))

    return make


BAD_TRANSACTIONS = [
    (
        "a,2020-01-01,5,1\na,2020-13-01,5,1\n",
        r"1 row\(s\) with unparseable date in column 'day' "
        r"\(first at data row 2\)",
    ),
    ("a,2020-01-01,-5,1\n", r"negative amount in column 'amount' \(first at data row 1\)"),
    ("a,2020-01-01,inf,1\n", r"non-finite value in column 'amount'"),
    ("a,2020-01-01,ten,1\n", r"non-numeric value in column 'amount'"),
    (",2020-01-01,5,1\n", r"missing id in column 'cust'"),
    ("a,1850-01-01,5,1\n", r"date out of range in column 'day'"),
]


@pytest.mark.parametrize(("body", "message"), BAD_TRANSACTIONS)
def test_bad_transaction_rows_fail_by_default(
    tx_file: Callable[..., Path], tmp_path: Path, body: str, message: str
) -> None:
    spec = load_spec(tx_file(body))
    with pytest.raises(DataError, match=message) as info:
        read_customers(spec)
    assert str(info.value).startswith(f"{tmp_path / 'tx.csv'}: ")
    assert "data.bad_rows: drop" in str(info.value)


def test_drop_quarantines_bad_rows_and_accounts_for_all(tx_file: Callable[..., Path]) -> None:
    body = (
        "a,2020-01-01,5,1\n"
        "a,2020-01-05,x,1\n"
        "b,not-a-date,3,1\n"
        "b,2020-01-03,-1,1\n"
        "c,2020-01-02,7,2\n"
        "c,2020-03-01,7,2\n"
    )
    spec = load_spec(tx_file(body, bad_rows="drop", reference_date="2020-02-01"))
    intake = read_customers(spec)
    (report,) = intake.reports
    assert report.rows_read == 6
    assert report.rows_used == 2
    assert report.quarantined == {
        "non-numeric value in column 'amount'": 1,
        "unparseable date in column 'day'": 1,
        "negative amount in column 'amount'": 1,
    }
    assert report.excluded == {"after reference date 2020-02-01": 1}
    assert intake.quarantine["row"].tolist() == [2, 3, 4]
    assert intake.quarantine["cust"].tolist() == ["a", "b", "b"]
    assert set(intake.frame["cust"]) == {"a", "c"}


def test_missing_columns_name_the_spec_key(tx_file: Callable[..., Path], tmp_path: Path) -> None:
    spec_path = tx_file("a,2020-01-01,5,1\n")
    (tmp_path / "tx.csv").write_text("cust,day,qty\na,2020-01-01,1\n")
    with pytest.raises(
        DataError,
        match=r"missing column declared at data\.transactions\.amount "
        r"'amount' \(found: cust, day, qty\)",
    ):
        read_customers(load_spec(spec_path))
    (tmp_path / "tx.csv").write_text("id,day,amount,qty\na,2020-01-01,1,1\n")
    with pytest.raises(DataError, match=r"missing id column 'cust'"):
        read_customers(load_spec(spec_path))


def test_empty_and_header_only_files(tx_file: Callable[..., Path], tmp_path: Path) -> None:
    spec_path = tx_file("")
    with pytest.raises(DataError, match=r"no data rows \(only a header\)"):
        read_customers(load_spec(spec_path))
    (tmp_path / "tx.csv").write_text("")
    with pytest.raises(DataError, match=r"file is empty"):
        read_customers(load_spec(spec_path))


def test_duplicate_customer_ids(
    tmp_path: Path, clean_customers: pd.DataFrame, write_spec: Callable[..., Path]
) -> None:
    table = pd.concat([clean_customers.head(5), clean_customers.head(1)])
    table.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match=r"2 row\(s\) with duplicate id in column 'customer_id'"):
        read_customers(load_spec(write_spec(synthetic_spec("c.csv"))))
    dropping = synthetic_spec("c.csv")
    dropping["data"]["bad_rows"] = "drop"
    intake = read_customers(load_spec(write_spec(dropping, "drop.yaml")))
    assert len(intake.frame) == 4 and len(intake.quarantine) == 2


def test_parquet_file_and_folder_read_like_csv(
    tmp_path: Path, clean_customers: pd.DataFrame, write_spec: Callable[..., Path]
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    clean_customers.iloc[:1000].to_parquet(folder / "part-0.parquet")
    clean_customers.iloc[1000:].to_parquet(folder / "part-1.parquet")
    intake = read_customers(load_spec(write_spec(synthetic_spec("parts"))))
    assert len(intake.frame) == len(clean_customers)
    assert intake.frame["engagement"].dtype == "float64"


def test_corrupt_parquet(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    (tmp_path / "c.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"c\.parquet: not a readable Parquet file"):
        read_customers(load_spec(write_spec(synthetic_spec("c.parquet"))))


# --------------------------------------------------------------------------------------------
# Real data as it comes: every fault at once, line items, returns, time zones, float ids


def test_every_fault_is_listed_with_its_exact_count_and_first_row(
    tx_file: Callable[..., Path], tmp_path: Path
) -> None:
    body = (
        "a,2020-01-01,5,1\n"
        ",2020-01-02,-5,1\n"  # two reasons: counted under each
        "b,2020-01-03,-1,1\n"
        "b,someday,2,1\n"
        ",2020-01-05,3,1\n"
        "c,2020-01-06,-2,1\n"
    )
    spec = load_spec(tx_file(body))
    with pytest.raises(DataError) as info:
        read_customers(spec)
    assert str(info.value).splitlines() == [
        f"{tmp_path / 'tx.csv'}: bad rows for 3 reasons; fix them or set data.bad_rows: drop "
        "to quarantine them:",
        "  2 row(s) with missing id in column 'cust' (first at data row 2)",
        "  3 row(s) with negative amount in column 'amount' (first at data row 2)",
        "  1 row(s) with unparseable date in column 'day' (first at data row 4)",
    ]
    dropping = load_spec(tx_file(body, bad_rows="drop"))
    intake = read_customers(dropping)
    (report,) = intake.reports
    assert report.rows_quarantined == 5 and report.rows_used == 1
    assert report.quarantined == {
        "missing id in column 'cust'": 2,
        "unparseable date in column 'day'": 1,
        "negative amount in column 'amount'": 3,
    }
    assert intake.quarantine["reason"].tolist()[0] == (
        "missing id in column 'cust'; negative amount in column 'amount'"
    )


def test_time_zones_are_normalised_to_utc_and_naive_times_kept(
    tx_file: Callable[..., Path],
) -> None:
    body = (
        "a,2020-01-01T23:30:00-02:00,5,1\n"
        "a,2020-01-02T10:00:00Z,5,1\n"
        "b,2020-03-01 08:00:00+05:30,5,1\n"
        "b,2020-03-02 08:00:00,5,1\n"
    )
    spec = load_spec(tx_file(body))
    data = spec.data.model_copy(
        update={
            "transactions": spec.data.transactions.model_copy(update={"timestamp_format": None})
        }
    )
    intake = read_customers(spec.model_copy(update={"data": data}))
    assert intake.frame["day"].tolist() == [
        pd.Timestamp("2020-01-02 01:30"),
        pd.Timestamp("2020-01-02 10:00"),
        pd.Timestamp("2020-03-01 02:30"),
        pd.Timestamp("2020-03-02 08:00"),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_integer_ids_held_as_floats_keep_their_integer_form(
    tmp_path: Path, write_spec: Callable[..., Path], suffix: str
) -> None:
    frame = pd.DataFrame(
        {"cust": [12346.0, 12347.0, None], "day": ["2020-01-01"] * 3, "amount": [1.0] * 3}
    )
    path = tmp_path / f"tx{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    spec = tx_spec(path.name, bad_rows="drop")
    del spec["data"]["transactions"]["quantity"]
    intake = read_customers(load_spec(write_spec(spec)))
    assert intake.frame["cust"].tolist() == ["12346", "12347"]
    assert intake.reports[0].quarantined == {"missing id in column 'cust'": 1}


LINES = (
    "inv,cust,day,qty,price,country\n"
    "1,a,2020-01-01,2,5.0,UK\n"
    "1,a,2020-01-01,1,3.0,UK\n"
    "C1,a,2020-01-02,-1,5.0,UK\n"
    "2,a,2020-01-05,4,1.5,FR\n"
    "3,b,2020-01-03,1,10.0,DE\n"
    "C9,c,2020-01-04,-2,2.0,UK\n"
)


def _lines_spec(policy: str, **data: object) -> dict:
    return {
        "name": "lines",
        "data": {
            "source": "lines.csv",
            "kind": "transactions",
            "id_column": "cust",
            "transactions": {
                "timestamp": "day",
                "amount": {"quantity": "qty", "unit_price": "price"},
                "order_id": "inv",
                "returns": {"policy": policy, "order_prefix": "C"},
            },
            "attributes": {"geographic": ["country"], "from_log": {"country": "latest"}},
            **data,
        },
    }


def test_line_amounts_and_returns_by_policy(
    tmp_path: Path, write_spec: Callable[..., Path]
) -> None:
    (tmp_path / "lines.csv").write_text(LINES)
    netting = read_customers(load_spec(write_spec(_lines_spec("net"))))
    (report,) = netting.reports
    assert netting.frame["qty x price"].tolist() == [10.0, 3.0, -5.0, 6.0, 10.0]
    assert report.netted == 1
    assert report.excluded == {"returns of customers without a purchase in the period": 1}
    dropping = read_customers(load_spec(write_spec(_lines_spec("drop"))))
    assert dropping.reports[0].quarantined == {
        "return or cancellation line (data.transactions.returns.policy: drop)": 2
    }
    assert len(dropping.frame) == 4
    with pytest.raises(DataError) as info:
        read_customers(load_spec(write_spec(_lines_spec("fail"))))
    assert str(info.value).splitlines()[1:] == [
        "  2 row(s) with cancelled order in column 'inv' (prefix 'C') (first at data row 3)",
        "  2 row(s) with negative quantity in column 'qty' (first at data row 3)",
    ]


def test_negative_unit_price_is_a_bad_row(tmp_path: Path, write_spec: Callable[..., Path]) -> None:
    (tmp_path / "lines.csv").write_text(
        LINES.replace("3,b,2020-01-03,1,10.0", "3,b,2020-01-03,1,-10.0")
    )
    with pytest.raises(
        DataError,
        match=r"1 row\(s\) with negative unit price in column 'price' "
        r"\(first at data row 5\)",
    ):
        read_customers(load_spec(write_spec(_lines_spec("net"))))
