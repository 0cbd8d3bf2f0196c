"""Pick-rule research, step 2: each family's own pick, and its DBCV on the features.

k-means by silhouette, GMM by BIC, HDBSCAN by its relative validity (noise at most 25%),
from candidates.csv; writes winners.csv. Run after candidates.py.
"""

import json
import time
import warnings

import hdbscan
import numpy as np
import pandas as pd
from candidates import datasets
from hdbscan.validity import validity_index
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
c = pd.read_csv("candidates.csv")


def dbcv(X, lab):
    ids, inv, cnt = np.unique(lab, return_inverse=True, return_counts=True)
    keep = (ids >= 0) & (cnt >= 2)
    dense = np.where(keep, np.cumsum(keep) - 1, -1)[inv]
    if keep.sum() < 2:
        return np.nan
    with np.errstate(all="ignore"):
        s = validity_index(np.ascontiguousarray(X, dtype=np.float64), dense)
    return float(s) if np.isfinite(s) else np.nan


rows = []
for name, (X, y) in datasets().items():
    t = time.time()
    X = StandardScaler().fit_transform(X)
    g = c[c.dataset == name]
    km = g[g.family == "kmeans"].sort_values("sil", ascending=False).iloc[0]
    gm = g[g.family == "gmm"].sort_values("bic").iloc[0]
    out = {}
    out["ks"] = KMeans(int(km.k), n_init=3, random_state=0).fit(X).labels_
    cov = "full" if X.shape[1] <= 16 else "diag"
    out["gb"] = (
        GaussianMixture(
            int(json.loads(gm.params)["k"]), covariance_type=cov, random_state=0, reg_covar=1e-4
        )
        .fit(X)
        .predict(X)
    )
    best = None
    for mcs in (5, 10, 20, 40, 80):
        for ms in (None, 5):
            h = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms, gen_min_span_tree=True).fit(
                X
            )
            lab = h.labels_
            k = np.unique(lab[lab >= 0]).size
            if k < 2 or (lab < 0).mean() > 0.25:
                continue
            rv = h.relative_validity_
            if best is None or rv > best[0]:
                best = (rv, lab, mcs, ms)
    if best is not None:
        out["hd"] = best[1]
    for fam, lab in out.items():
        rows.append(
            dict(
                dataset=name,
                who=fam,
                k=np.unique(lab[lab >= 0]).size,
                noise=(lab < 0).mean(),
                dbcv=dbcv(X, lab),
                ari=adjusted_rand_score(y, lab),
            )
        )
    print(name, round(time.time() - t, 1), flush=True)
pd.DataFrame(rows).to_csv("winners.csv", index=False)
