"""The model registry: model references, registration, aliases, promotion and export."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from segml import report
from segml import tracking as keys
from segml._io import created_parents
from segml.alignment import Alignment, align_labels
from segml.errors import GateFailed, ModelFormatError, RegistryError, SegmlError, SegmlWarning
from segml.locks import model_lock
from segml.model import SEGMENT_ID, SEGMENT_NAME, Segmenter
from segml.segment_report import SegmentReport, rule_table, value_table

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

    Accepted: ``models:/name@alias``, ``models:/name/3``, an exported model directory
    written as a path (``./champion``, ``models/x``), ``runs:/<id>/model``, or with
    ``model_name`` a bare version (``3``) or alias (``champion`` / ``@champion``): a bare
    name is never a folder, whatever the working directory holds. Registry references are
    checked to exist and pinned to a version, so a later alias move cannot change what a
    job scored with; with ``client``, an exported folder is checked against its version.
    """
    if is_folder_ref(ref):
        return _exported(Path(ref), client)
    if ref.startswith("runs:/"):
        return ModelRef(ref)
    match = _MODELS_URI.match(ref)
    if match:
        name, alias, version = match["name"], match["alias"], match["version"]
    elif model_name and re.fullmatch(r"@?[A-Za-z_][\w-]*|\d+", ref):
        name = model_name
        alias, version = (None, ref) if ref.isdigit() else (ref.lstrip("@"), None)
    else:
        folder = f"; write ./{ref} for the model folder" if Path(ref, "MLmodel").is_file() else ""
        raise RegistryError(
            f"model reference {ref!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION, "
            f"an exported model directory, or a version/alias with the spec's model name{folder}"
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


def is_folder_ref(ref: str) -> bool:
    """True for a model reference written as a path; ``models:/`` and ``runs:/`` are not."""
    return not re.match(r"^[a-z]+:/", ref) and (ref.startswith(".") or "/" in ref or os.sep in ref)


def _exported(path: Path, client: MlflowClient | None) -> ModelRef:
    """An exported folder; with a reachable registry that holds its version, checked to
    hold that version's files (a model folder is code: loading it unpickles objects)."""
    if not (path / "MLmodel").is_file():
        raise RegistryError(f"{path}: not a model folder (no MLmodel file)")
    record = path / EXPORT_RECORD
    try:
        origin = json.loads(record.read_text()) if record.is_file() else {}
        ref = ModelRef(str(path.resolve()), origin.get("name"), origin.get("version"))
    except (ValueError, AttributeError) as exc:
        raise RegistryError(
            f"{record}: not a segml export record ({exc}); export the model again"
        ) from None
    if client is not None and ref.name and ref.version:
        _check_export(client, path, ref.name, ref.version)
    return ref


def _check_export(client: MlflowClient, path: Path, name: str, version: str) -> None:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return  # another registry, or offline: nothing to compare with
    with tempfile.TemporaryDirectory() as tmp:
        registered = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
        )
        changed = _changed_files(path, registered)
    if changed:
        raise RegistryError(
            f"{path}: differs from its registered version {name} v{version} ({changed[0]}); "
            "export it again"
        )


def _changed_files(folder: Path, reference: Path) -> list[str]:
    """Files (relative paths) that differ between two model folders, export record aside."""

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*")
            if p.is_file() and p.name != EXPORT_RECORD
        }

    mine, theirs = digests(folder), digests(reference)
    return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))


def load_segmenter(ref: ModelRef) -> Segmenter:
    """The fitted ``Segmenter`` inside a segment model (no MLflow at prediction time)."""
    try:
        model = mlflow.pyfunc.load_model(ref.uri)
    except ModelFormatError as exc:
        raise ModelFormatError(f"model {ref.label}: {exc}") from None
    except SegmlError:
        raise
    except Exception as exc:  # a damaged model fails anywhere: MLflow, YAML, unpickling
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise RegistryError(
            f"model {ref.label}: cannot be loaded ({type(exc).__name__}: {reason})"
        ) from exc
    python_model = model.unwrap_python_model()
    segmenter = getattr(python_model, "segmenter", None)
    if not isinstance(segmenter, Segmenter):
        raise RegistryError(f"model {ref.label}: not a segml segment model")
    return segmenter


def spark_udf(spark: Any, ref: ModelRef, result_type: str) -> Any:
    """The model behind ``ref`` as a Spark UDF returning ``result_type``; Spark's Python
    workers run it in this environment (the one segml runs in), not in a new one."""
    return mlflow.pyfunc.spark_udf(spark, ref.uri, result_type=result_type, env_manager="local")


def champion_version(client: MlflowClient, name: str, alias: str = CHAMPION) -> str | None:
    """The version behind ``alias`` of model ``name``, or None (no such model or alias)."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def align_to_champion(
    client: MlflowClient, name: str, segmenter: Segmenter, table: pd.DataFrame
) -> tuple[Segmenter, Alignment | None]:
    """Give ``segmenter``'s segments the champion's ids where they match (Hungarian).

    The champion scores the training customers; matched segments keep its id and name,
    the others get new ids above the champion's. Without a champion nothing changes.
    """
    version = champion_version(client, name)
    if version is None:
        return segmenter, None
    champion = load_segmenter(ModelRef(f"models:/{name}/{version}", name, version))
    missing = set(champion.features) - set(table.columns)
    if missing:
        warnings.warn(
            f"champion {name} v{version} needs columns {sorted(missing)} that this data lacks; "
            "segment ids are not aligned",
            SegmlWarning,
            stacklevel=2,
        )
        return segmenter, None
    champion_ids = champion.assign(table).segment_ids
    labels = segmenter.segmentation.labels
    next_id = int(max(champion.catalog[SEGMENT_ID].max(), champion_ids.max())) + 1
    alignment = replace(align_labels(labels, champion_ids, next_id), champion=f"{name} v{version}")
    catalog = _aligned_catalog(segmenter, alignment, champion.catalog)
    return segmenter.with_ids(alignment.label_to_id, catalog), alignment


def _aligned_catalog(
    segmenter: Segmenter, alignment: Alignment, champion: pd.DataFrame
) -> pd.DataFrame:
    old_ids = {v: k for k, v in segmenter.label_to_id.items()}
    renumber = {old: alignment.label_to_id[label] for old, label in old_ids.items()}
    catalog = segmenter.catalog.assign(**{SEGMENT_ID: segmenter.catalog[SEGMENT_ID].map(renumber)})
    champion_names = champion.set_index(SEGMENT_ID)[SEGMENT_NAME]
    kept = catalog[SEGMENT_ID].isin(alignment.matched)
    names = catalog[SEGMENT_ID].map(champion_names).where(kept, catalog[SEGMENT_NAME])
    return catalog.assign(**{SEGMENT_NAME: names}).sort_values(SEGMENT_ID, ignore_index=True)


CARD_METRICS = (
    keys.BUSINESS_N_SEGMENTS,
    keys.QUALITY_SILHOUETTE,
    keys.STABILITY_JACCARD_MIN,
    keys.STABILITY_JACCARD_MEAN,
    keys.BUSINESS_MIN_SHARE,
    keys.BUSINESS_VALUE_R2,
    keys.QUALITY_NOISE_SHARE,
)
"""The metrics a version's model card and tags show."""


def model_card(
    run: Run, segmenter: Segmenter, link: str, segments: SegmentReport | None = None
) -> str:
    """The version description: data, period, search, chosen params, metrics, a link to the
    tuning run (``link``) and the segments (with their value and rules, given ``segments``)."""
    spec, tags, metrics = segmenter.spec, run.data.tags, run.data.metrics
    shown = {k: metrics[k] for k in CARD_METRICS if k in metrics}
    k = spec.min_report_size
    hidden = report.catalog_hidden(segmenter.catalog, k)
    catalog = report.suppress_small(segmenter.catalog, k, hidden=hidden)
    if segments is not None:
        catalog = value_table(segments).join(rule_table(segments)).reset_index()
        catalog = catalog.drop(columns=[c for c in catalog.columns if c.startswith("spend_")])
    lines = [
        f"**{spec.question or spec.name}**",
        "",
        f"- Data: `{spec.data.source.name}` ({spec.data.kind}), "
        f"{tags.get(keys.TAG_DATA_CUSTOMERS, '?')} customers, "
        f"period {tags.get(keys.TAG_DATA_PERIOD, '?')}",
        f"- Search: {tags.get(keys.TAG_FAMILIES_TRIED, '?')} trials; chosen "
        f"`{segmenter.segmentation.family}` "
        + ", ".join(f"{k}={v}" for k, v in sorted(run.data.params.items())),
        "- Metrics: " + ", ".join(f"{k}={report.number(v)}" for k, v in shown.items()),
        f"- Tuning run: [{run.info.run_name or run.info.run_id}]({link}); aligned to: "
        f"{tags.get(keys.TAG_ALIGNED_TO, 'none')}",
        "- Segment report: `segments/report.html` on the tuning run, "
        "`artifacts/segment_report.html` in the model",
        "",
        report.markdown_table(catalog),
    ]
    return "\n".join(lines)


def version_tags(run: Run, link: str) -> dict[str, str]:
    """Key metrics (rounded as every report rounds them), spec digest, family and ``link``,
    the tuning run's page."""
    data = run.data
    return {k: report.number(data.metrics[k]) for k in CARD_METRICS if k in data.metrics} | {
        keys.TAG_SPEC_DIGEST: data.tags.get(keys.TAG_SPEC_DIGEST, ""),
        keys.TAG_FAMILY: data.tags.get(keys.TAG_FAMILY, ""),
        keys.TAG_RUN_LINK: link,
    }


def register_run(
    client: MlflowClient,
    run_id: str,
    segmenter: Segmenter | None = None,
    segments: SegmentReport | None = None,
) -> tuple[str, str]:
    """Register a tuning run's model under its spec's model name; return (name, version).
    ``segments``, the run's segment report, puts value and rules in the model card."""
    segmenter = segmenter or load_segmenter(ModelRef(_model_uri(client, run_id)))
    run = client.get_run(run_id)
    name = segmenter.spec.model_name
    link = keys.run_link(client.tracking_uri, run.info.experiment_id, run_id)
    card = model_card(run, segmenter, link, segments)
    return name, register(client, name, run_id, card, version_tags(run, link))


def _model_uri(client: MlflowClient, run_id: str) -> str:
    try:
        tags = client.get_run(run_id).data.tags
    except MlflowException as exc:
        raise RegistryError(f"run {run_id}: not found in {client.tracking_uri}") from exc
    if keys.TAG_MODEL_URI not in tags:
        raise RegistryError(f"run {run_id}: no segment model logged (is it a segml tune run?)")
    return tags[keys.TAG_MODEL_URI]


def register(
    client: MlflowClient,
    name: str,
    run_id: str,
    description: str,
    tags: dict[str, str],
) -> str:
    """Register run ``run_id``'s segment model as a version of ``name``; alias ``challenger``.

    Safe to re-run: a model (of this run) already registered keeps its version. The lookup
    and the registration hold the model's lock, so two registrations cannot both miss it.
    """
    model_uri = _model_uri(client, run_id)
    with model_lock(client.tracking_uri, name):
        _ensure_registered_model(client, name)
        existing = [
            v
            for v in client.search_model_versions(
                f"name={keys.quoted(name)} and run_id='{run_id}'"
            )
            if v.source == model_uri
        ]
        if existing:
            version = str(max(int(v.version) for v in existing))
        else:
            created = client.create_model_version(
                name,
                model_uri,
                run_id=run_id,
                description=description,
                tags=tags,
                model_id=model_uri.removeprefix("models:/"),
            )
            version = str(created.version)
        for key, value in keys.audit_tags("register", run_id=run_id).items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"segml segment model {name}")


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    force: bool = False,
    reason: str | None = None,
) -> str | None:
    """Move ``champion`` to ``version`` if its latest review passed; return the old champion.

    The old champion keeps the alias ``previous``. ``force`` needs a ``reason`` and records
    both. The version is tagged before any alias moves, so ``champion`` never points at a
    version without its review or override on record, and each step leaves the aliases
    consistent: an interrupted promote completes when re-run. The model's lock makes two
    promotes at once run one after the other: the second sees the first one's champion.
    """
    if force and not reason:
        raise RegistryError("--force needs --reason: say why the review is overridden")
    with model_lock(client.tracking_uri, name):
        return _promote(client, name, version, force, reason)


def _promote(
    client: MlflowClient, name: str, version: str, force: bool, reason: str | None
) -> str | None:
    found = _version(client, name, version)
    verdict = found.tags.get(keys.TAG_VERDICT)
    if verdict != keys.VERDICT_PASSED and not force:
        state = f"its latest review {verdict}" if verdict else "it has not been reviewed"
        raise GateFailed(
            f"{name} v{version}: not promoted, {state}; run `segml review` or use "
            "--force --reason TEXT"
        )
    current = champion_version(client, name)
    if current != version:
        tags = keys.audit_tags("promote", reason) | {"segml.promote.forced": str(force).lower()}
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        client.set_registered_model_alias(name, CHAMPION, version)
    if champion_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    return current if current != version else champion_version(client, name, PREVIOUS)


def rollback(client: MlflowClient, name: str, reason: str | None = None) -> str:
    """Make the ``previous`` champion the champion again; return its version.

    Re-running a rollback whose last write (removing ``previous``) was done returns the
    champion it restored. Runs under the model's lock, as :func:`promote` does.
    """
    with model_lock(client.tracking_uri, name):
        return _rollback(client, name, reason)


def _rollback(client: MlflowClient, name: str, reason: str | None) -> str:
    previous = champion_version(client, name, PREVIOUS)
    if previous is None:
        restored = crowned_by(client, name, "rollback")
        if restored is None:
            raise RegistryError(f"{name}: no previous champion to roll back to")
        return restored
    current = champion_version(client, name)
    if current != previous:
        for key, value in keys.audit_tags("rollback", reason).items():
            client.set_model_version_tag(name, previous, key, value)
        if current is not None:
            for key, value in keys.audit_tags("rolled_back", reason).items():
                client.set_model_version_tag(name, current, key, value)
        client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    return previous


def promotable(client: MlflowClient, ref: str, name: str) -> str:
    """The version ``segml promote REF`` promotes: ``ref`` resolved; or, for ``challenger``
    once its alias is gone, the champion a promote made (a rerun after its last write)."""
    try:
        return resolve_ref(ref, name, client).version or ref
    except RegistryError:
        done = crowned_by(client, name, "promote") if ref.lstrip("@") == CHALLENGER else None
        if done is None:
            raise
        return done


def crowned_by(client: MlflowClient, name: str, action: str) -> str | None:
    """The champion, if ``action`` (promote or rollback) is what made it champion last;
    else None. Lets a rerun of an action whose last write was done report it done."""
    version = champion_version(client, name)
    if version is None:
        return None
    tags = _version(client, name, version).tags
    at = {done: tags.get(keys.audit_key(done, "at"), "") for done in ("promote", "rollback")}
    return version if at[action] and at[action] == max(at.values()) else None


def _version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} v{version}: no such model version") from exc


def export(ref: ModelRef, target: Path) -> Path:
    """Write a self-contained model directory for scoring without the tracking server.

    Written beside ``target`` and renamed when complete; an existing export of the same
    version is kept (re-running is safe), anything else already there is refused.
    """
    if target.exists():
        if target.is_dir() and _exported(target, None).version == ref.version and ref.version:
            return target
        raise RegistryError(f"{target}: already exists; choose another folder or remove it")
    with (
        created_parents(target),
        tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp,
    ):
        staged = Path(mlflow.artifacts.download_artifacts(ref.uri, dst_path=tmp))
        record = {"name": ref.name, "version": ref.version, "source": ref.uri}
        (staged / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        staged.rename(target)
    return target
