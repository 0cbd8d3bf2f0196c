"""Pick-rule research, step 5: pick rules over pools.csv's pools, against the baselines of
bench_selection (../results/selection.csv). Run from this folder: ``python pool_rules.py``."""

import numpy as np
import pandas as pd

MIN_STABILITY, MAX_NOISE = 0.6, 0.25


def finalists(c):
    """Per pool, the best candidate by the pool's criterion (feasible: noise, k >= 2)."""
    c = c[(c.k >= 2) & (c.noise <= MAX_NOISE)]
    out = {}
    km = c[(c.family == "kmeans")]
    gm = c[(c.family == "gmm")]
    out["kmeans"] = km.loc[km.sil0.idxmax()]
    out["gmm"] = gm.loc[gm.bic.idxmin()]
    for pool, sub in (
        ("hdb", c[(c.family == "hdbscan") & (c.reducer == "none")]),
        ("hdb_umap", c[(c.family == "hdbscan") & (c.reducer != "none")]),
    ):
        sub = sub[sub.dbcv.notna()]
        if len(sub):
            out[pool] = sub.loc[sub.dbcv.idxmax()]
    return out


def stable(f):
    return {p: r for p, r in f.items() if r.jaccard >= MIN_STABILITY} or f


def centroid_by(f, key, sign=1):
    cands = [f[p] for p in ("kmeans", "gmm") if p in f and f[p].jaccard >= MIN_STABILITY]
    cands = cands or [f[p] for p in ("kmeans", "gmm") if p in f]
    return max(cands, key=lambda r: sign * r[key])


def rule_factory():
    rules = {}
    rules["k-means finalist"] = lambda f: f["kmeans"]
    rules["GMM finalist"] = lambda f: f["gmm"]
    rules["centroid, DBCV"] = lambda f: centroid_by(f, "dbcv")
    rules["centroid, sil0"] = lambda f: centroid_by(f, "sil0")
    rules["all, DBCV"] = lambda f: max(stable(f).values(), key=lambda r: r.dbcv)
    rules["all, sil0"] = lambda f: max(stable(f).values(), key=lambda r: r.sil0)
    for m in (0.1, 0.2, 0.3, 0.4, 0.5):
        for pools in (("hdb",), ("hdb", "hdb_umap")):

            def rule(f, m=m, pools=pools):
                s = stable(f)
                best = centroid_by(f, "dbcv")
                dens = [s[p] for p in pools if p in s]
                if dens:
                    d = max(dens, key=lambda r: r.dbcv)
                    if d.dbcv > best.dbcv + m:
                        return d
                return best

            rules[f"centroid DBCV, density {'+'.join(pools)} margin {m}"] = rule
    return rules


def main():
    pools = pd.read_csv("pools.csv")
    base = pd.read_csv("../results/selection.csv").set_index("dataset")
    bcols = ["kmeans_silhouette_ari", "gmm_bic_ari", "hdbscan_default_ari"]
    picks = {}
    rules = rule_factory()
    names = [d for d in dict.fromkeys(pools.dataset)]
    for name in names:
        f = finalists(pools[pools.dataset == name])
        for rule, fn in rules.items():
            picks.setdefault(rule, {})[name] = fn(f)
    best_base = base.loc[names, bcols].max(axis=1)
    out = []
    for rule, chosen in picks.items():
        ari = pd.Series({n: r.ari for n, r in chosen.items()})
        out.append(
            dict(
                rule=rule,
                mean_ari=ari.mean(),
                within=(ari >= best_base - 0.05).mean(),
                k2=np.mean([r.k == 2 for r in chosen.values()]),
            )
        )
    for c in bcols + ["segml_ari"]:
        out.append(
            dict(
                rule=f"[{c}]",
                mean_ari=base.loc[names, c].mean(),
                within=(base.loc[names, c] >= best_base - 0.05).mean(),
            )
        )
    print(f"{len(names)} datasets")
    print(pd.DataFrame(out).round(3).to_string(index=False))
    return picks, base, names


if __name__ == "__main__":
    main()


def table():
    """Per dataset, each pool's finalist: k, ARI, sil0, DBCV, Jaccard."""
    pools = pd.read_csv("pools.csv")
    base = pd.read_csv("../results/selection.csv").set_index("dataset")
    rows = []
    for name in dict.fromkeys(pools.dataset):
        f = finalists(pools[pools.dataset == name])
        row = {"dataset": name[:28], "kt": int(base.loc[name, "true_k"])}
        for p, r in f.items():
            row[p] = f"{r.k:>2} {r.ari:.2f} s{r.sil0:.2f} d{r.dbcv:+.2f} j{r.jaccard:.2f}"
        row["km/gm/hd base"] = " ".join(
            f"{base.loc[name, c]:.2f}"
            for c in ("kmeans_silhouette_ari", "gmm_bic_ari", "hdbscan_default_ari")
        )
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))


def finalists_gated(c):
    """Finalists among stable candidates (unmeasured stability counts as stable); density
    pools merged, with or without a reducer."""
    c = c[(c.k >= 2) & (c.noise <= MAX_NOISE) & ~(c.jaccard < MIN_STABILITY)]
    out = {}
    km, gm = c[c.family == "kmeans"], c[c.family == "gmm"]
    if len(km):
        out["kmeans"] = km.loc[km.sil0.idxmax()]
    if len(gm):
        out["gmm"] = gm.loc[gm.bic.idxmin()]
    for pool, sub in (
        ("hdb", c[(c.family == "hdbscan") & (c.reducer == "none")]),
        ("umap", c[(c.family == "hdbscan") & (c.reducer != "none")]),
    ):
        sub = sub[sub.dbcv.notna()]
        if len(sub):
            out[pool] = sub.loc[sub.dbcv.idxmax()]
    return out


def same_k_rules():
    samek = pd.read_csv("same_k.csv").set_index(["dataset", "k"])
    rules = {}

    def make(m, challengers, base_key):
        def rule(name, f):
            base = f["kmeans"] if base_key == "kmeans" else centroid_by(f, "sil0")
            best, adv = base, 0.0
            for p in challengers:
                if p not in f or f[p].name == base.name:
                    continue
                x = f[p]
                ref = (
                    samek.loc[(name, int(x.k)), "km_dbcv"]
                    if (name, int(x.k)) in samek.index
                    else np.nan
                )
                a = x.dbcv - ref
                if np.isfinite(a) and a >= m and a > adv:
                    best, adv = x, a
            return best

        return rule

    for m in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        for ch in (("gmm",), ("hdb", "umap"), ("gmm", "hdb", "umap"), ("gmm", "hdb")):
            for b in ("kmeans", "centroid_sil0"):
                rules[f"base {b}; same-k DBCV {'+'.join(ch)} m{m}"] = make(m, ch, b)
    return rules


def main2():
    pools = pd.read_csv("pools.csv")
    base = pd.read_csv("../results/selection.csv").set_index("dataset")
    names = list(dict.fromkeys(pools.dataset))
    bcols = ["kmeans_silhouette_ari", "gmm_bic_ari", "hdbscan_default_ari"]
    best_base = base.loc[names, bcols].max(axis=1)
    out = []
    fins = {n: finalists_gated(pools[pools.dataset == n]) for n in names}
    for rule, fn in same_k_rules().items():
        ari = pd.Series({n: fn(n, fins[n]).ari for n in names})
        out.append(dict(rule=rule, mean_ari=ari.mean(), within=(ari >= best_base - 0.05).mean()))
    print(pd.DataFrame(out).sort_values("mean_ari").round(3).to_string(index=False))
