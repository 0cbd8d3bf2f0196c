"""The saved segment model: a model of another format version is refused with what to do."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import joblib
import pytest
from mlflow.pyfunc.model import PythonModelContext

from segml import tracking as keys
from segml.errors import EXIT_BAD_INPUT, ModelFormatError
from segml.model import (
    ARTIFACT_KEY,
    FORMAT_VERSION,
    FORMAT_VERSION_KEY,
    Segmenter,
    SegmentModel,
    log_segment_model,
)
from segml.registry import ModelRef, load_segmenter
from segml.synthetic import synthetic_customers, synthetic_spec
from tests.models import fit_segmenter

RETRAIN = r"re-train it with this segml \(segml tune SPEC\)"


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    folder = tmp_path_factory.mktemp("model")
    train = synthetic_customers(1_000, seed=1)
    return fit_segmenter(folder, "kmeans", train, synthetic_spec("customers.csv"))


def test_a_model_of_another_format_version_is_refused_with_what_to_do(
    segmenter: Segmenter, tracking_uri: str
) -> None:
    client = keys.connect(tracking_uri)
    run_id = client.create_run(keys.experiment_id(client, "formats")).info.run_id
    newer = replace(segmenter, format_version=FORMAT_VERSION + 1)
    model_uri = log_segment_model(newer, synthetic_customers(50, seed=2), run_id)
    with pytest.raises(
        ModelFormatError, match=rf"saved in format {FORMAT_VERSION + 1}; .*" + RETRAIN
    ) as refused:
        load_segmenter(ModelRef(model_uri))
    assert str(refused.value).startswith(f"model {model_uri}: ")
    assert refused.value.exit_code == EXIT_BAD_INPUT
    current = log_segment_model(segmenter, synthetic_customers(50, seed=2), run_id)
    assert load_segmenter(ModelRef(current)).format_version == FORMAT_VERSION


@pytest.mark.parametrize(
    ("config", "saved", "message"),
    [
        (None, FORMAT_VERSION, "saved in no recorded format"),
        ({FORMAT_VERSION_KEY: FORMAT_VERSION - 1}, FORMAT_VERSION, f"format {FORMAT_VERSION - 1}"),
        ({FORMAT_VERSION_KEY: FORMAT_VERSION}, FORMAT_VERSION + 1, f"format {FORMAT_VERSION + 1}"),
    ],
)
def test_load_context_checks_the_recorded_and_the_pickled_format(
    segmenter: Segmenter, tmp_path: Path, config: dict | None, saved: int, message: str
) -> None:
    path = tmp_path / "segmenter.joblib"
    joblib.dump(replace(segmenter, format_version=saved), path)
    context = PythonModelContext(artifacts={ARTIFACT_KEY: str(path)}, model_config=config)
    with pytest.raises(ModelFormatError, match=rf"{message}; .*" + RETRAIN):
        SegmentModel().load_context(context)
