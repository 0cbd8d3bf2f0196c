"""Pick-rule research, step 4: the pools a `segml tune` study would hold, on bench_selection's
43 datasets, scored on one yardstick.

Per dataset (segml's preprocessing, as bench_selection runs it): k-means and a Gaussian mixture
for every k in 2..the baselines' max k; HDBSCAN with min_cluster_size in {10, 20, 40, 80} x
min_samples in {5, default} on the features and on two UMAP embeddings (5 dimensions, 15 and
50 neighbours). Every candidate: k, noise share, silhouette on the features (noise rows 0),
BIC (mixtures), ARI; DBCV for every density candidate and the three best of each centroid
family by its own criterion; bootstrap Jaccard (B = 10, refitting the clusterer) for those.
Writes pools.csv here. Run from this folder: ``python pools.py [dataset ...]``.
"""

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

import bench_selection as bench  # noqa: E402
import hdbscan  # noqa: E402
import umap  # noqa: E402
from sklearn.metrics import adjusted_rand_score, silhouette_samples  # noqa: E402

from segml.families import FAMILIES  # noqa: E402
from segml.metrics import bootstrap_stability  # noqa: E402
from segml.metrics.quality import quality_metrics  # noqa: E402

SEED = 0


def features(api, data, work):
    spec = api.load_spec(bench.write_dataset(data, work / data.name, 1, None))
    built = api.build_features(spec)
    return api.build_preprocessor(spec, built.table).fit_transform(built.table)


def sil0(X, labels):
    kept = labels >= 0
    if np.unique(labels[kept]).size < 2:
        return np.nan
    return float(silhouette_samples(X[kept], labels[kept]).sum() / len(labels))


class Fit:
    def __init__(self, family, params):
        self.family, self.params = family, params

    def __call__(self, X, seed):
        return np.asarray(FAMILIES[self.family].fit(X, self.params, seed).labels_)


def centroid(X, kmax):
    cov = "full" if X.shape[1] <= 16 else "diag"
    for k in range(2, kmax + 1):
        p = {"n_clusters": k, "n_init": 3}
        yield "kmeans", p, Fit("kmeans", p), None
    for k in range(2, kmax + 1):
        p = {
            "n_components": k,
            "covariance_type": cov,
            "reg_covar": 1e-4,
            "n_init": 1,
            "max_iter": 200,
        }
        model = FAMILIES["gmm"].fit(X, p, SEED)
        yield "gmm", p, Fit("gmm", p), float(model.bic(X))


def density(Z):
    for mcs in (10, 20, 40, 80):
        for ms in (5, None):
            p = {"min_cluster_size": mcs, "min_samples": ms or mcs}
            yield p, lambda A, s, p=p: hdbscan.HDBSCAN(**p).fit_predict(A)


def main():
    only = sys.argv[1:]
    api = bench._segml()
    rows = []
    work = Path(tempfile.mkdtemp())
    for data in bench.datasets():
        if only and data.name not in only:
            continue
        t = time.time()
        X = features(api, data, work)
        kmax = bench.baseline_max_k(len(X))
        base = dict(dataset=data.name, group=data.group, n=len(X), d=X.shape[1], ktrue=data.k)
        cands = []
        for fam, p, fit, bic in centroid(X, kmax):
            labels = fit(X, SEED)
            cands.append(
                dict(
                    base,
                    family=fam,
                    reducer="none",
                    params=json.dumps(p),
                    bic=bic,
                    labels=labels,
                    fit=fit,
                    space=X,
                )
            )
        embeddings = {"none": X}
        for nn in (15, 50):
            embeddings[f"umap{nn}"] = umap.UMAP(
                n_neighbors=nn, n_components=5, min_dist=0.0, random_state=SEED, n_jobs=1
            ).fit_transform(X)
        for reducer, Z in embeddings.items():
            for p, fit in density(Z):
                cands.append(
                    dict(
                        base,
                        family="hdbscan",
                        reducer=reducer,
                        params=json.dumps(p),
                        bic=np.nan,
                        labels=fit(Z, SEED),
                        fit=fit,
                        space=Z,
                    )
                )
        for c in cands:
            labels = c["labels"]
            c["k"] = int(np.unique(labels[labels >= 0]).size)
            c["noise"] = float((labels < 0).mean())
            c["sil0"] = sil0(X, labels)
            c["ari"] = adjusted_rand_score(data.y, labels)
        frame = pd.DataFrame(cands)
        top = set()
        for fam, crit in (("kmeans", "sil0"), ("gmm", "bic")):
            sub = frame[frame.family == fam]
            order = sub[crit].rank(ascending=(crit == "bic"), method="first")
            top |= set(sub.index[order <= 3])
        for i, c in enumerate(cands):
            measured = i in top or c["family"] == "hdbscan"
            c["dbcv"] = c["jaccard"] = np.nan
            if measured and c["k"] >= 2:
                c["dbcv"] = quality_metrics(X, c["labels"], with_dbcv=True).dbcv
            if measured and c["k"] >= 1:
                c["jaccard"] = bootstrap_stability(
                    c["space"],
                    c["labels"],
                    c["fit"],
                    n_boot=10,
                    seed=SEED,
                    n_jobs=1,
                    noise_is_group=True,
                ).jaccard_mean
            rows.append({k: v for k, v in c.items() if k not in ("labels", "fit", "space")})
        print(data.name, round(time.time() - t, 1), flush=True)
        pd.DataFrame(rows).to_csv(Path(__file__).with_name("pools.csv"), index=False)


if __name__ == "__main__":
    main()
