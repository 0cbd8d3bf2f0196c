"""The model registry: model references, registration, aliases, promotion and export."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segml.errors import RegistryError
from segml.model import Segmenter

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
EXPORT_RECORD = "segml_export.json"
"""Written inside an exported model directory: which registered version it came from."""

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A resolved model reference: what MLflow loads, and the registered version if any."""

    uri: str
    name: str | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        """``name v3`` for a registered version, else the URI (for messages and outputs)."""
        return f"{self.name} v{self.version}" if self.version else self.uri


def resolve_ref(
    ref: str, model_name: str | None = None, client: MlflowClient | None = None
) -> ModelRef:
    """Resolve ``ref`` to a loadable model.

    Accepted: ``models:/name@alias``, ``models:/name/3``, an exported model directory,
    ``runs:/<id>/model``, or with ``model_name`` a bare version (``3``) or alias
    (``champion`` / ``@champion``). Registry references are checked to exist and pinned
    to a version, so a later alias move cannot change what a job scored with.
    """
    path = Path(ref)
    if (path / "MLmodel").is_file():
        return _exported(path)
    if ref.startswith("runs:/"):
        return ModelRef(ref)
    match = _MODELS_URI.match(ref)
    if match:
        name, alias, version = match["name"], match["alias"], match["version"]
    elif model_name and re.fullmatch(r"@?[A-Za-z_][\w-]*|\d+", ref):
        name = model_name
        alias, version = (None, ref) if ref.isdigit() else (ref.lstrip("@"), None)
    else:
        raise RegistryError(
            f"model reference {ref!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, "
            "an exported model directory, or a version/alias with the spec's model name"
        )
    client = client or MlflowClient()
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, str(version))
        )
    except MlflowException as exc:
        raise RegistryError(f"model reference {ref!r}: not found in the registry") from exc
    return ModelRef(f"models:/{name}/{found.version}", name, str(found.version))


def _exported(path: Path) -> ModelRef:
    record = path / EXPORT_RECORD
    origin = json.loads(record.read_text()) if record.is_file() else {}
    return ModelRef(str(path.resolve()), origin.get("name"), origin.get("version"))


def load_segmenter(ref: ModelRef) -> Segmenter:
    """The fitted ``Segmenter`` inside a segment model (no MLflow at prediction time)."""
    try:
        model = mlflow.pyfunc.load_model(ref.uri)
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"model {ref.label}: cannot be loaded ({exc})") from exc
    python_model = model.unwrap_python_model()
    segmenter = getattr(python_model, "segmenter", None)
    if not isinstance(segmenter, Segmenter):
        raise RegistryError(f"model {ref.label}: not a segml segment model")
    return segmenter
