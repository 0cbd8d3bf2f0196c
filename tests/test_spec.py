"""Spec loading: valid specs parse; each kind of mistake names the file and the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from segml.errors import SpecError
from segml.spec import load_spec, spec_digest
from segml.synthetic import synthetic_spec

from .conftest import EXPERIMENTS


@pytest.mark.parametrize("name", ["cdnow.yaml", "marketing_response.yaml"])
def test_bundled_specs_load_with_their_data(name: str) -> None:
    spec = load_spec(EXPERIMENTS / name)
    assert spec.data.source.is_file()
    assert spec.registry is not None and spec.model_name == spec.registry.model_name


def test_digest_is_stable_and_sensitive(write_spec: Callable[..., Path]) -> None:
    a = load_spec(write_spec(synthetic_spec("x.csv"), "a.yaml"))
    b = load_spec(write_spec(synthetic_spec("x.csv"), "b.yaml"))
    c = load_spec(write_spec(synthetic_spec("x.csv", search={"seed": 3}), "c.yaml"))
    assert spec_digest(a) == spec_digest(b)
    assert spec_digest(a) != spec_digest(c)


BAD_SPECS = [
    ({"colour": "red"}, r"colour: unknown key"),
    ({"data": {"kind": "orders"}}, r"data\.kind: Input should be 'transactions' or 'customers'"),
    ({"search": {"n_trials": 0}}, r"search\.n_trials: Input should be greater than or equal to 1"),
    ({"search": {"n_trials": "many"}}, r"search\.n_trials: Input should be a valid integer"),
    (
        {"search": {"families": {"kmeans": {"n_clusterz": 3}}}},
        r"search\.families\.kmeans\.n_clusterz: unknown key \(allowed: .*n_clusters",
    ),
    ({"search": {"families": {"dbscan": {}}}}, r"search\.families\.dbscan"),
    (
        {"constraints": {"min_segments": 9, "max_segments": 3}},
        r"constraints: .*min_segments \(9\) exceeds max_segments \(3\)",
    ),
    ({"data": {"personal": ["engagement"]}}, r"personal columns can never be features"),
    ({"data": {"kind": "transactions"}}, r"needs a 'transactions' column mapping"),
    ({"features": {"clv": {}}}, r"features\.clv needs a transaction log \(data\.kind: trans"),
    (
        {"features": {"clv": {"segment_on": ["ltv"]}}},
        r"features\.clv\.segment_on\.0: Input should be 'expected_purchases', 'p_alive', "
        r"'expected_spend' or 'clv' \(got 'ltv'\)",
    ),
    ({"features": {"clv": {"discount_rate": 1.5}}}, r"features\.clv\.discount_rate: Input sh"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SPECS)
def test_bad_spec_names_file_and_key(
    write_spec: Callable[..., Path], change: dict, message: str
) -> None:
    spec = synthetic_spec("customers.csv")
    for key, value in change.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    path = write_spec(spec)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not a readable YAML spec"):
        load_spec(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        load_spec(listing)


LOG = {
    "kind": "transactions",
    "transactions": {"timestamp": "day", "amount": "amount"},
}
BAD_LOG_SPECS = [
    (
        {"attributes": {"geographic": ["Country"]}},
        r"data: Value error, attribute 'Country' has no source: derive it from the log "
        r"\(attributes\.from_log: \{Country: most_frequent\}, or latest, sum, mean, min, max\) "
        r"or name an attribute table in data\.customers",
    ),
    (
        {"attributes": {"from_log": {"Country": "latest"}}},
        r"attributes\.from_log: 'Country' is not a declared attribute",
    ),
    (
        {"attributes": {"geographic": ["Country"], "from_log": {"Country": "median"}}},
        r"data\.attributes\.from_log\.Country: Input should be 'most_frequent', 'latest', "
        r"'sum', 'mean', 'min' or 'max' \(got 'median'\)",
    ),
    (
        {"transactions": {**LOG["transactions"], "returns": {"order_prefix": "C"}}},
        r"returns\.order_prefix needs an order_id column",
    ),
    (
        {"transactions": {**LOG["transactions"], "returns": {"policy": "refund"}}},
        r"data\.transactions\.returns\.policy: Input should be 'net', 'drop' or 'fail'",
    ),
    (
        {"transactions": {"timestamp": "day", "amount": {"quantity": "q"}}},
        r"data\.transactions\.amount\.LineAmount\.unit_price: Field required",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD_LOG_SPECS)
def test_bad_log_spec_names_file_and_key(
    write_spec: Callable[..., Path], change: dict, message: str
) -> None:
    spec = synthetic_spec("tx.csv")
    spec["data"] = {"source": "tx.csv", "id_column": "cust", **LOG, **change}
    path = write_spec(spec)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
