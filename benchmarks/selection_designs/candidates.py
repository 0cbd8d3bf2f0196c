"""Pick-rule research, step 1: every candidate segmentation of 43 labelled datasets, scored.

k-means and a Gaussian mixture for every k in 2..max(12, 2 x true k) (at most 30), and HDBSCAN
over a small grid, on standardised features; per candidate its silhouette (noise rows left
out, and scoring 0), Calinski-Harabasz, Davies-Bouldin, BIC and ARI against the labels.
Writes candidates.csv here. Run from this folder: ``python candidates.py``.
"""

import json
import sys
import time
import warnings

import hdbscan
import numpy as np
import pandas as pd
from sklearn import datasets as skd
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_samples,
)
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")


def mixture(k, d, sep, seed, unequal=False, tails=False, n=1200):
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.ones(k) * (1 if unequal else 50)) * n
    sizes = np.maximum(sizes.astype(int), 15)
    centers = rng.normal(0, sep, size=(k, d))
    X, y = [], []
    for i, s in enumerate(sizes):
        scale = rng.uniform(0.5, 1.5)
        z = rng.standard_t(3, size=(s, d)) if tails else rng.normal(size=(s, d))
        X.append(centers[i] + z * scale)
        y += [i] * s
    return np.vstack(X), np.array(y)


def datasets():
    out = {}
    for name, f in [
        ("iris", skd.load_iris),
        ("wine", skd.load_wine),
        ("breast_cancer", skd.load_breast_cancer),
    ]:
        b = f()
        out[name] = (b.data, b.target)
    b = skd.load_digits()
    idx = np.random.default_rng(0).choice(len(b.target), 1000, replace=False)
    out["digits"] = (b.data[idx], b.target[idx])
    s = 0
    for k in (2, 3, 4, 5, 6, 8, 10, 15, 20, 30):
        for d, sep in ((2, 4.0), (8, 2.0), (32, 1.0)):
            s += 1
            if k >= 15 and d == 2:
                continue
            out[f"mix_k{k}_d{d}_sep{sep}"] = mixture(k, d, sep, s)
    for k, d in ((4, 4), (6, 16), (8, 64)):
        out[f"mix_unequal_k{k}_d{d}"] = mixture(
            k, d, 3.0 if d < 16 else 1.2, 100 + k, unequal=True
        )
        out[f"mix_tails_k{k}_d{d}"] = mixture(k, d, 4.0 if d < 16 else 1.5, 200 + k, tails=True)
    X, y = skd.make_moons(1000, noise=0.06, random_state=1)
    out["moons"] = (X, y)
    X, y = skd.make_circles(1000, noise=0.04, factor=0.5, random_state=1)
    out["circles"] = (X, y)
    X, y = skd.make_blobs(1200, centers=3, random_state=170)
    X = X @ np.array([[0.6, -0.6], [-0.4, 0.8]])
    out["aniso"] = (X, y)
    X, y = skd.make_blobs(1200, centers=3, cluster_std=[1.0, 2.5, 0.5], random_state=170)
    out["varied"] = (X, y)
    X, y = skd.make_blobs(
        1500, centers=5, n_features=3, cluster_std=[0.3, 0.6, 1.0, 1.5, 2.0], random_state=4
    )
    out["varied5_d3"] = (X, y)
    return out


def sil_noise0(X, labels):
    kept = labels >= 0
    if np.unique(labels[kept]).size < 2:
        return np.nan, np.nan
    s = silhouette_samples(X[kept], labels[kept])
    return float(s.mean()), float(s.sum() / len(labels))


def candidates(X, kmax, seed=0):
    for k in range(2, kmax + 1):
        yield "kmeans", {"k": k}, KMeans(k, n_init=3, random_state=seed).fit(X).labels_, None
    cov = "full" if X.shape[1] <= 16 else "diag"
    for k in range(2, kmax + 1):
        g = GaussianMixture(k, covariance_type=cov, random_state=seed, reg_covar=1e-4).fit(X)
        yield "gmm", {"k": k, "cov": cov}, g.predict(X), g.bic(X)
    for mcs in (5, 10, 20, 40, 80):
        for ms in (None, 5):
            h = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms).fit(X)
            yield "hdbscan", {"mcs": mcs, "ms": ms}, h.labels_, None


def main():
    rows = []
    only = sys.argv[1:]
    for name, (X, y) in datasets().items():
        if only and name not in only:
            continue
        t = time.time()
        X = StandardScaler().fit_transform(X)
        ktrue = len(np.unique(y))
        kmax = min(30, max(12, 2 * ktrue))
        for fam, params, labels, bic in candidates(X, kmax):
            sil, siln = sil_noise0(X, labels)
            k = int(np.unique(labels[labels >= 0]).size)
            kept = labels >= 0
            ch = db = np.nan
            if k >= 2:
                ch = calinski_harabasz_score(X[kept], labels[kept])
                db = davies_bouldin_score(X[kept], labels[kept])
            rows.append(
                dict(
                    dataset=name,
                    n=len(X),
                    d=X.shape[1],
                    ktrue=ktrue,
                    family=fam,
                    params=json.dumps(params),
                    k=k,
                    noise=float((~kept).mean()),
                    sil=sil,
                    sil_n0=siln,
                    ch=ch,
                    db=db,
                    bic=bic,
                    ari=adjusted_rand_score(y, labels),
                )
            )
        print(name, round(time.time() - t, 1), flush=True)
    pd.DataFrame(rows).to_csv("candidates.csv", index=False)


if __name__ == "__main__":
    main()
