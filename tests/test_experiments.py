"""The bundled experiment specs load, their data validates, and the reference spec is true."""

from __future__ import annotations

from pathlib import Path

import pytest

from segml.data import read_customers
from segml.families import FAMILIES, REDUCTION_SPACE
from segml.spec import Constraints, FeatureSpec, Gates, Spec, load_spec
from segml.tracking import key_table
from segml.tuning import search_spaces, to_space

from .conftest import EXPERIMENTS, ROOT
from .lineitems import line_items

SPECS = sorted(EXPERIMENTS.glob("*.yaml"))


BUNDLED = [p for p in SPECS if load_spec(p).data.source.exists()]


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_spec_and_its_data_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.question or spec.name == "reference"
    intake = read_customers(spec)
    assert intake.quarantine.empty and intake.reports[0].rows_used > 0


def test_online_retail_spec_reads_its_export_format(tmp_path: Path) -> None:
    """The data is not bundled: the spec reads a generated log in the export's layout."""
    spec = load_spec(EXPERIMENTS / "online_retail.yaml")
    log = line_items(start="2011-01-01", days=300)
    log.lines.to_csv(tmp_path / "online_retail_II.csv", index=False)
    data = spec.data.model_copy(update={"source": tmp_path / "online_retail_II.csv"})
    intake = read_customers(spec.model_copy(update={"data": data}))
    assert set(intake.quarantine["reason"]) == {"missing id in column 'Customer ID'"}
    assert intake.frame["Customer ID"].nunique() == len(log.truth)


def test_reference_spec_shows_every_default() -> None:
    spec = load_spec(EXPERIMENTS / "reference.yaml")
    assert (spec.constraints, spec.gates, spec.features) == (Constraints(), Gates(), FeatureSpec())
    for name, space in search_spaces(spec).items():
        assert space == FAMILIES[name].default_space, name
    assert to_space(spec.search.reduction, REDUCTION_SPACE) == REDUCTION_SPACE
    assert set(spec.search.families) == set(FAMILIES)


def test_docs_document_every_metric_key() -> None:
    assert key_table() in (ROOT / "docs" / "mlflow-keys.md").read_text(encoding="utf-8")


def test_the_second_demo_asks_the_cdnow_question_again_six_months_on() -> None:
    """``make demo`` retrains on ``cdnow_later.yaml`` once a store exists: the same experiment,
    model and search on a later period, so the review compares like with like."""
    first, later = (
        load_spec(EXPERIMENTS / "cdnow.yaml"),
        load_spec(EXPERIMENTS / "cdnow_later.yaml"),
    )
    assert (later.name, later.model_name) == (first.name, first.model_name)
    assert str(later.data.reference_date) == "1998-06-30" > str(first.data.reference_date)

    def settings(spec: Spec) -> tuple:
        data = spec.data.model_copy(update={"reference_date": None})
        return (data, spec.features, spec.search, spec.constraints, spec.gates)

    assert settings(later) == settings(first)
