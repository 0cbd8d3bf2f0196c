"""How often segml's automatic pick recovers known segments, against the usual baselines.

Usage: ``python benchmarks/bench_selection.py [--quick] [--datasets PATTERN ...] [--trials 20]
[--output benchmarks/results/selection.md] [--work DIR]``

Every labelled dataset (``datasets()``: scikit-learn's bundled labelled sets, a wholesaler's
clients by channel, seeded Gaussian
mixtures with 2 to 30 components in 2 to 64 dimensions, and non-convex shapes) is written as a
customer table (CSV: an id column and numeric features) with a generated spec (``kind:
customers``, permissive constraints: 2 to 30 segments, smallest segment 0.5%, every other
option at its default) and tuned with ``segml tune``'s function into a throwaway MLflow store
under ``--work``. The pick's labels come from the registered model (``models:/<name>@challenger``,
predicted on the same table); every trial's labels come from a refit of its logged parameters
with its seed (what the final refit does for the chosen trial), for the oracle (the best trial's
ARI) and for the per-trial cache (``selection_trials.csv``: every MLflow metric of every trial,
its parameters and its ARI), so that other pick rules can be replayed offline.

Baselines run on the matrix segml searches (segml's own fitted preprocessing:
median imputation, log1p of skewed non-negative columns, standard scaling): k-means with k by
silhouette (k = 2..``max_k``, ``n_init=10``), a full-covariance GMM with k by BIC, and
``hdbscan.HDBSCAN()`` with its defaults (noise is its own label). ARI is against the reference
labels. Everything runs in this one process, single-threaded (joblib, BLAS, OpenMP and numba
limited to one worker).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fnmatch
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from machine import load_average, machine
from sklearn import datasets as skd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture

RESULTS = Path(__file__).with_name("results") / "selection.md"
DATA = Path(__file__).with_name("data")
ID_COLUMN = "customer_id"
MAX_SEGMENTS = 30
"""The specs' ``constraints.max_segments`` and the baselines' largest k."""
MIN_SHARE = 0.005
MAX_ROWS = 2_000
SEED = 0
NEAR = 0.05
"""segml is "near the best baseline" on a dataset when its ARI is at most this much lower."""
SINGLE_THREADED = {
    "LOKY_MAX_CPU_COUNT": "1",  # joblib's n_jobs=-1 (segml's bootstrap) means one process
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}


# --- segml: the only imports of segml in this script --------------------------------------
def _segml() -> Any:
    """segml's tune (what ``segml tune`` calls), spec loader, features and the trial refit.

    The refit (``fit_segmentation`` with ``trial_seed``) is the one internal used: it is what
    segml's own final refit does to reproduce the chosen trial.
    """
    import segml
    from segml import experiment, tuning

    return argparse.Namespace(
        tune=getattr(segml, "tune", None) or experiment.tune,
        load_spec=segml.load_spec,
        build_features=segml.build_features,
        build_preprocessor=segml.build_preprocessor,
        fit_segmentation=tuning.fit_segmentation,
        trial_seed=tuning.trial_seed,
    )


# --- datasets ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Dataset:
    """A labelled dataset: features, reference labels (-1: background noise), its group."""

    name: str
    group: str
    X: np.ndarray
    y: np.ndarray

    @property
    def k(self) -> int:
        """Reference groups (noise counted as one, as in the ARI)."""
        return len(np.unique(self.y))


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _centres(rng: np.random.Generator, k: int, d: int, separation: float) -> np.ndarray:
    """``k`` centres at least ``separation`` apart, packed in a box that grows as needed."""
    half = 0.5 * separation * k ** (1 / d)
    while True:
        centres: list[np.ndarray] = []
        for _ in range(200 * k):
            c = rng.uniform(-half, half, d)
            if all(np.linalg.norm(c - o) >= separation for o in centres):
                centres.append(c)
                if len(centres) == k:
                    return np.array(centres)
        half *= 1.15


def gaussian_mixture(
    k: int, d: int, separation: str, sizes: str, tails: str, seed: int
) -> Dataset:
    """Anisotropic Gaussian (or Student-t, 3 df) clusters, randomly rotated, scales 0.5..1.5.

    ``well``: centres at least 7 units apart; ``overlap``: 2.5 units. ``uneq`` sizes follow
    1/rank (the largest is k times the smallest); n = 75 per component within 500..2,000.
    """
    rng = np.random.default_rng(seed)
    n = min(MAX_ROWS, max(500, 75 * k))
    weights = 1 / np.arange(1, k + 1) if sizes == "uneq" else np.ones(k)
    counts = np.maximum(np.floor(n * weights / weights.sum()).astype(int), 10)
    centres = _centres(rng, k, d, 7.0 if separation == "well" else 2.5)
    parts, labels = [], []
    for j, m in enumerate(counts):
        z = rng.standard_normal((m, d))
        if tails == "t3":
            z /= np.sqrt(rng.chisquare(3, (m, 1)) / 3)
        shape = _rotation(rng, d) * rng.uniform(0.5, 1.5, d)
        parts.append(centres[j] + z @ shape.T)
        labels.append(np.full(m, j))
    name = f"gm_k{k}_d{d}_{separation}_{sizes}_{tails}"
    return Dataset(name, "gaussian", np.vstack(parts), np.concatenate(labels))


GAUSSIAN = (
    (2, 2, "well", "eq", "gauss"), (2, 10, "overlap", "uneq", "gauss"),
    (3, 2, "well", "eq", "gauss"), (3, 5, "overlap", "eq", "t3"),
    (3, 2, "overlap", "eq", "t3"), (4, 8, "well", "uneq", "gauss"),
    (4, 32, "overlap", "eq", "gauss"), (5, 2, "overlap", "uneq", "gauss"),
    (5, 16, "well", "eq", "t3"), (6, 4, "well", "uneq", "t3"),
    (6, 64, "well", "eq", "gauss"), (6, 16, "overlap", "uneq", "gauss"),
    (8, 3, "overlap", "eq", "gauss"), (8, 10, "well", "uneq", "gauss"),
    (8, 32, "well", "eq", "t3"), (10, 2, "well", "eq", "gauss"),
    (10, 8, "overlap", "uneq", "t3"), (10, 20, "well", "eq", "gauss"),
    (12, 5, "well", "uneq", "gauss"), (12, 64, "overlap", "eq", "gauss"),
    (15, 10, "well", "eq", "gauss"), (15, 3, "overlap", "uneq", "gauss"),
    (15, 32, "well", "uneq", "t3"), (20, 2, "well", "eq", "gauss"),
    (20, 16, "well", "uneq", "gauss"), (20, 64, "overlap", "eq", "t3"),
    (25, 8, "well", "eq", "gauss"), (25, 32, "well", "uneq", "gauss"),
    (30, 10, "well", "eq", "gauss"), (30, 64, "well", "uneq", "t3"),
)  # fmt: skip


def _spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    t = np.sqrt(rng.uniform(0.05, 1, n)) * 3 * np.pi
    y = rng.integers(0, 2, n)
    sign = np.where(y == 0, 1.0, -1.0)[:, None]
    X = sign * np.c_[t * np.cos(t), t * np.sin(t)] + rng.normal(0, 0.4, (n, 2))
    return X, y


def _rings(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 3, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = 1.0 + 1.5 * y + rng.normal(0, 0.15, n)
    return np.c_[radius * np.cos(angle), radius * np.sin(angle)], y


def shapes(seed: int) -> list[Dataset]:
    """Non-convex and uneven-density shapes (2-D unless named otherwise), 1,000 rows each."""
    rng = np.random.default_rng(seed)
    n = 1_000
    out = []

    def add(name: str, X: np.ndarray, y: np.ndarray) -> None:
        out.append(Dataset(name, "shape", np.asarray(X, float), np.asarray(y)))

    add("moons", *skd.make_moons(n, noise=0.08, random_state=seed))
    add("moons_noisy", *skd.make_moons(n, noise=0.15, random_state=seed + 1))
    X, y = skd.make_moons(n, noise=0.08, random_state=seed + 2)
    add("moons_8_noise_dims", np.c_[X, rng.normal(0, 0.5, (n, 8))], y)
    add("circles", *skd.make_circles(n, factor=0.5, noise=0.05, random_state=seed))
    add("rings3", *_rings(n, rng))
    add("spirals", *_spirals(n, rng))
    X, y = skd.make_blobs(n, centers=3, random_state=170)
    add("aniso_blobs", X @ np.array([[0.6, -0.6], [-0.4, 0.8]]), y)
    add("varied_density", *skd.make_blobs(n, cluster_std=[1.0, 2.5, 0.5], random_state=170))
    X, y = skd.make_blobs(900, centers=4, cluster_std=0.6, random_state=seed)
    lo, hi = X.min(axis=0), X.max(axis=0)
    add("blobs4_uniform_noise", np.r_[X, rng.uniform(lo, hi, (100, 2))], np.r_[y, -np.ones(100)])
    return out


def bundled() -> list[Dataset]:
    """scikit-learn's bundled labelled classification sets (no download), and real customers
    with a reference grouping: a wholesaler's clients by channel (``data/README.md``)."""
    sets = [
        Dataset(name, "real", *loader(return_X_y=True))
        for name, loader in (
            ("iris", skd.load_iris),
            ("wine", skd.load_wine),
            ("breast_cancer", skd.load_breast_cancer),
            ("digits", skd.load_digits),
        )
    ]
    wholesale = pd.read_csv(DATA / "wholesale_customers.csv")
    spend = wholesale.drop(columns=["Channel", "Region"]).to_numpy(float)
    return [*sets, Dataset("wholesale_channel", "real", spend, wholesale["Channel"].to_numpy())]


def datasets() -> list[Dataset]:
    """The full suite, seeded and deterministic."""
    mixtures = [gaussian_mixture(*g, seed=SEED + i) for i, g in enumerate(GAUSSIAN)]
    return bundled() + mixtures + shapes(SEED)


def quick_datasets() -> list[Dataset]:
    """Three small sets for the test suite, one trivially separated (3 blobs)."""
    X, y = skd.make_blobs(300, centers=[[-10, -10], [0, 10], [10, -10]], random_state=SEED)
    moons = skd.make_moons(300, noise=0.08, random_state=SEED)
    return [
        Dataset("blobs3_separated", "gaussian", X, y),
        Dataset("moons_small", "shape", *moons),
        bundled()[0],
    ]


# --- running one dataset ------------------------------------------------------------------
def write_dataset(data: Dataset, folder: Path, trials: int, reducer: str | None) -> Path:
    """The customer table (CSV) and its spec (YAML) in ``folder``; returns the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    features = [f"f{j:02d}" for j in range(data.X.shape[1])]
    table = pd.DataFrame(data.X, columns=features)
    table.insert(0, ID_COLUMN, [f"c{i:05d}" for i in range(len(table))])
    table.to_csv(folder / "customers.csv", index=False)
    name = f"sel_{data.name}"
    spec: dict[str, Any] = {
        "name": name,
        "question": f"Which segments does {data.name} hold? (bench_selection)",
        "data": {
            "source": "customers.csv",
            "kind": "customers",
            "id_column": ID_COLUMN,
            "attributes": {"behavioural": features},
        },
        "search": {"n_trials": trials, "seed": SEED},
        "constraints": {
            "min_segments": 2,
            "max_segments": MAX_SEGMENTS,
            "min_share": MIN_SHARE,
        },
        "registry": {"model_name": name},
    }
    if reducer is not None:
        spec["search"]["reduction"] = {"reducer": reducer}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _value(text: str) -> Any:
    """A logged parameter back to its type (MLflow stores strings)."""
    for cast in (int, float):
        with contextlib.suppress(ValueError):
            return cast(text)
    return {"True": True, "False": False, "None": None}.get(text, text)


def trial_runs(
    tracking_uri: str, experiment_name: str
) -> tuple[pd.DataFrame, dict[int, dict[str, Any]], int]:
    """Every trial run's tags, params and metrics; each trial's typed params (a table's
    columns would turn integers into floats); the chosen trial's number."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    rows, params, chosen = [], {}, None
    for run in runs:
        role = run.data.tags.get("segml.role")
        if role == "study" and "study.best_trial" in run.data.metrics:
            chosen = int(run.data.metrics["study.best_trial"])
        elif role == "trial":
            number = int(run.data.tags["segml.trial"])
            params[number] = {k: _value(v) for k, v in run.data.params.items()}
            rows.append(
                {
                    "trial": number,
                    "feasible": run.data.tags["segml.feasible"] == "true",
                    **{f"param.{k}": _value(v) for k, v in run.data.params.items()},
                    **run.data.metrics,
                }
            )
    assert chosen is not None, f"{experiment_name}: no finalised study run"
    return pd.DataFrame(rows).sort_values("trial", ignore_index=True), params, chosen


def trial_labels(
    api: Any, X: np.ndarray, number: int, logged: dict[str, Any], seed: int
) -> np.ndarray:
    """One trial's labels, refitted from its logged parameters with its own seed."""
    family = logged["family"]
    params, reduction = {}, {}
    for key, value in logged.items():
        namespace, _, name = key.partition(".")
        if namespace == family:
            params[name] = value
        elif namespace == "prep":
            reduction[name] = value
    segmentation = api.fit_segmentation(X, family, params, reduction, api.trial_seed(seed, number))
    return np.asarray(segmentation.labels)


@dataclass(frozen=True, slots=True)
class Baseline:
    """A baseline's labels and the k it chose."""

    k: int
    labels: np.ndarray


def kmeans_by_silhouette(X: np.ndarray, max_k: int) -> Baseline:
    """k-means (n_init=10) for k = 2..max_k; the k with the largest silhouette."""
    best: tuple[float, Baseline] | None = None
    for k in range(2, max_k + 1):
        labels = KMeans(k, n_init=10, random_state=SEED).fit_predict(X)
        score = silhouette_score(X, labels)
        if best is None or score > best[0]:
            best = (score, Baseline(k, labels))
    assert best is not None
    return best[1]


def gmm_by_bic(X: np.ndarray, max_k: int) -> Baseline:
    """Full-covariance GMM for k = 2..max_k; the k with the smallest BIC."""
    best: tuple[float, Baseline] | None = None
    for k in range(2, max_k + 1):
        gmm = GaussianMixture(k, covariance_type="full", random_state=SEED).fit(X)
        bic = gmm.bic(X)
        if best is None or bic < best[0]:
            best = (bic, Baseline(k, gmm.predict(X)))
    assert best is not None
    return best[1]


def hdbscan_defaults(X: np.ndarray) -> Baseline:
    """``hdbscan.HDBSCAN()`` with its defaults; k counts clusters, not noise."""
    import hdbscan

    labels = hdbscan.HDBSCAN(core_dist_n_jobs=1).fit_predict(X)
    return Baseline(len(np.unique(labels[labels >= 0])), labels)


def baseline_max_k(n: int) -> int:
    """The baselines search k = 2..this: the specs' largest segment count, at most n / 5."""
    return max(2, min(MAX_SEGMENTS, n // 5))


BASELINES: dict[str, Callable[[np.ndarray, int], Baseline]] = {
    "kmeans_silhouette": kmeans_by_silhouette,
    "gmm_bic": gmm_by_bic,
    "hdbscan_default": lambda X, _: hdbscan_defaults(X),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One dataset's row of the results table, and its trials for the cache."""

    row: dict[str, Any]
    trials: pd.DataFrame


def run_dataset(
    api: Any, data: Dataset, work: Path, trials: int, reducer: str | None, oracle: bool = True
) -> Outcome:
    """Tune, read the pick and every trial back (refitted for their ARI with ``oracle``), run
    the baselines; ARI of each."""
    import mlflow.pyfunc

    spec_path = write_dataset(data, work / data.name, trials, reducer)
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    spec = api.load_spec(spec_path)
    started = time.perf_counter()
    api.tune(spec, n_trials=trials, tracking_uri=tracking_uri)
    tune_seconds = time.perf_counter() - started

    table = pd.read_csv(spec_path.parent / "customers.csv")
    with _tracking(tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/{spec.registry.model_name}@challenger")
        scored = model.predict(table)
    scored = scored.set_index(ID_COLUMN).loc[table[ID_COLUMN]]
    pick_labels = scored["segment_id"].to_numpy()

    started = time.perf_counter()
    built = api.build_features(spec)
    X = api.build_preprocessor(spec, built.table).fit_transform(built.table)
    runs, params, chosen = trial_runs(tracking_uri, spec.name)
    runs.insert(0, "dataset", data.name)
    runs["chosen"] = runs["trial"] == chosen
    runs["ari"] = (
        [
            adjusted_rand_score(data.y, trial_labels(api, X, n, params[n], spec.search.seed))
            for n in runs["trial"]
        ]
        if oracle
        else np.nan
    )
    refit_seconds = time.perf_counter() - started
    first = ["dataset", "trial", "chosen", "feasible", "ari"]
    runs = runs[first + sorted(c for c in runs.columns if c not in first)]

    started = time.perf_counter()
    max_k = baseline_max_k(len(X))
    baselines = {name: fit(X, max_k) for name, fit in BASELINES.items()}
    baseline_seconds = time.perf_counter() - started

    pick = runs.loc[runs["chosen"]].iloc[0]
    reducer_used = pick.get("param.prep.reducer", "none")
    family = pick["param.family"] + ("+umap" if reducer_used == "umap" else "")
    row: dict[str, Any] = {
        "dataset": data.name,
        "group": data.group,
        "n": len(X),
        "d": data.X.shape[1],
        "true_k": data.k,
        "segml_family": family,
        "segml_k": int(pick["business.n_segments"]),
        "segml_noise_share": float(pick["quality.noise_share"]),
        "segml_ari": adjusted_rand_score(data.y, pick_labels),
        "segml_trial_ari": float(pick["ari"]),
        "oracle_ari": float(runs["ari"].max()) if oracle else np.nan,
        "oracle_k": int(runs.loc[runs["ari"].idxmax(), "business.n_segments"]) if oracle else -1,
        "n_feasible": int(runs["feasible"].sum()),
    }
    for name, result in baselines.items():
        row[f"{name}_k"] = result.k
        row[f"{name}_ari"] = adjusted_rand_score(data.y, result.labels)
    row |= {
        "tune_seconds": tune_seconds,
        "refit_seconds": refit_seconds,
        "baseline_seconds": baseline_seconds,
    }
    return Outcome(row, runs)


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    import mlflow

    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """joblib, BLAS, OpenMP and numba with one worker each, for the duration."""
    from threadpoolctl import threadpool_limits

    saved = {k: os.environ.get(k) for k in SINGLE_THREADED}
    os.environ.update(SINGLE_THREADED)
    try:
        with threadpool_limits(1):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- report -------------------------------------------------------------------------------
METHODS = {
    "segml pick": "segml_ari",
    "segml oracle (best trial)": "oracle_ari",
    "k-means, k by silhouette": "kmeans_silhouette_ari",
    "GMM, k by BIC": "gmm_bic_ari",
    "HDBSCAN defaults": "hdbscan_default_ari",
}
BASELINE_ARIS = ["kmeans_silhouette_ari", "gmm_bic_ari", "hdbscan_default_ari"]


def headline(frame: pd.DataFrame) -> dict[str, float]:
    """Mean ARI per method; share near the best baseline; share of k = 2 picks."""
    best = frame[BASELINE_ARIS].max(axis=1)
    out = {name: float(frame[col].mean()) for name, col in METHODS.items()}
    out["near"] = float((frame["segml_ari"] >= best - NEAR).mean())
    out["k2"] = float((frame["segml_k"] == 2).mean())
    out["true_k2"] = float((frame["true_k"] == 2).mean())
    return out


def report(
    frame: pd.DataFrame, trials: int, seconds: float, loads: tuple[str, str], note: str
) -> str:
    """The Markdown results: machine, headline, per-group means, per-dataset table."""
    h = headline(frame)
    lines = [
        f"# Selection benchmark: segml's pick against reference labels ({dt.date.today()})",
        "",
        f"Machine: {machine()}; 1-min load average {loads[0]} at start, {loads[1]} at end. "
        f"{len(frame)} datasets, {trials} trials each, one process; wall time "
        f"{seconds / 60:.1f} min.{note}",
        "",
        "| method | mean ARI |",
        "| --- | ---: |",
        *(f"| {name} | {h[name]:.3f} |" for name in METHODS),
        "",
        f"- segml's pick within {NEAR} ARI of the best baseline on the dataset: {h['near']:.0%}",
        f"- segml picks with k = 2: {h['k2']:.0%} (datasets whose reference has 2 groups: "
        f"{h['true_k2']:.0%})",
        "",
        "Mean ARI by group:",
        "",
        "| group | datasets | " + " | ".join(METHODS) + " |",
        "| --- | ---: |" + " ---: |" * len(METHODS),
    ]
    for group, part in frame.groupby("group", sort=False):
        means = " | ".join(f"{part[col].mean():.3f}" for col in METHODS.values())
        lines.append(f"| {group} | {len(part)} | {means} |")
    lines += [
        "",
        "Pick's k against the reference k: "
        + ", ".join(
            f"{label} {share:.0%}"
            for label, share in (
                ("smaller", (frame["segml_k"] < frame["true_k"]).mean()),
                ("equal", (frame["segml_k"] == frame["true_k"]).mean()),
                ("larger", (frame["segml_k"] > frame["true_k"]).mean()),
            )
        )
        + ".",
        "",
        "| dataset | n | d | true k | segml family | k | ARI | oracle ARI | k-means k | ARI "
        "| GMM k | ARI | HDBSCAN k | ARI | s |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: |",
    ]
    for r in frame.to_dict("records"):
        seconds_here = r["tune_seconds"] + r["refit_seconds"] + r["baseline_seconds"]
        lines.append(
            f"| {r['dataset']} | {r['n']:,} | {r['d']} | {r['true_k']} | {r['segml_family']} "
            f"| {r['segml_k']} | {r['segml_ari']:.3f} | {r['oracle_ari']:.3f} "
            f"| {r['kmeans_silhouette_k']} | {r['kmeans_silhouette_ari']:.3f} "
            f"| {r['gmm_bic_k']} | {r['gmm_bic_ari']:.3f} "
            f"| {r['hdbscan_default_k']} | {r['hdbscan_default_ari']:.3f} | {seconds_here:.0f} |"
        )
    lines += [
        "",
        "ARI of the pick: the registered challenger's `segment_id` predicted on the same table "
        "(noise: -1, its own label). Oracle: the best ARI among the study's trials, each "
        "refitted from its logged parameters and seed. True k counts background noise as a "
        "group. Baselines search k = 2..min(30, n/5) on segml's preprocessed matrix. "
        "Per-dataset figures: `selection.csv`; every trial's metrics, parameters and ARI: "
        "`selection_trials.csv`. s: seconds for the dataset (tune, trial refits, baselines).",
    ]
    return "\n".join(lines) + "\n"


def select(all_sets: Sequence[Dataset], patterns: Sequence[str] | None) -> list[Dataset]:
    """The datasets whose name matches any of the glob ``patterns`` (all without)."""
    if not patterns:
        return list(all_sets)
    return [d for d in all_sets if any(fnmatch.fnmatch(d.name, p) for p in patterns)]


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the suite, print and save the table, the per-dataset and the per-trial CSVs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small datasets, 4 trials")
    parser.add_argument("--datasets", nargs="+", help="glob patterns on dataset names")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (20)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=None, help="MLflow store and tables")
    parser.add_argument(
        "--no-oracle", action="store_true", help="skip refitting every trial for its ARI"
    )
    args = parser.parse_args(argv)
    trials = args.trials or (4 if args.quick else 20)
    # Quick mode is for the test suite: no UMAP (its first fit compiles for ~20 s).
    reducer = "none" if args.quick else None
    chosen = select(quick_datasets() if args.quick else datasets(), args.datasets)
    note = " Quick mode: no UMAP." if args.quick else ""

    start_load, started = load_average(), time.perf_counter()
    failed: list[str] = []
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(single_threaded())
        api = _segml()
        rows, cache = [], []
        for data in chosen:
            try:
                outcome = run_dataset(api, data, work, trials, reducer, not args.no_oracle)
            except Exception as exc:  # one dataset's failure is a finding, not the run's end
                failed.append(f"{data.name}: {type(exc).__name__}: {str(exc)[:300]}")
                print(f"{data.name}: FAILED {failed[-1]}", flush=True)
                continue
            rows.append(outcome.row)
            cache.append(outcome.trials)
            r = outcome.row
            print(
                f"{r['dataset']}: segml {r['segml_family']} k={r['segml_k']} "
                f"ARI {r['segml_ari']:.3f} (oracle {r['oracle_ari']:.3f}); k-means "
                f"k={r['kmeans_silhouette_k']} {r['kmeans_silhouette_ari']:.3f}; GMM "
                f"k={r['gmm_bic_k']} {r['gmm_bic_ari']:.3f}; HDBSCAN "
                f"k={r['hdbscan_default_k']} {r['hdbscan_default_ari']:.3f}; "
                f"{r['tune_seconds']:.0f}+{r['refit_seconds']:.0f}+"
                f"{r['baseline_seconds']:.0f} s",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    if failed:
        note += " Failed (not in the table): " + "; ".join(failed) + "."
    text = report(frame, trials, time.perf_counter() - started, (start_load, load_average()), note)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    frame.to_csv(args.output.with_suffix(".csv"), index=False)
    trials_csv = args.output.with_name(f"{args.output.stem}_trials.csv")
    pd.concat(cache, ignore_index=True).to_csv(trials_csv, index=False)
    print(text)
    return frame


if __name__ == "__main__":
    main()
