"""Pick-rule research, step 3: mean ARI of single-criterion rules over every candidate
(silhouette with noise at 0, Calinski-Harabasz, Davies-Bouldin), beside the baselines."""

import pandas as pd

c = pd.read_csv("candidates.csv")


def best(g, col, asc=False):
    g = g.dropna(subset=[col])
    return g.sort_values(col, ascending=asc).iloc[0] if len(g) else None


res = {}
for ds, g in c.groupby("dataset", sort=False):
    km, gm, hd = g[g.family == "kmeans"], g[g.family == "gmm"], g[g.family == "hdbscan"]
    r = {}
    r["ks"] = best(km, "sil").ari
    r["gb"] = best(gm, "bic", asc=True).ari
    r["hd"] = hd[hd.params.str.contains('"mcs": 5, "ms": null')].ari.iloc[0]
    r["oracle"] = g.ari.max()
    r["sil_n0_all"] = best(g, "sil_n0").ari
    r["sil_n0_all_k"] = best(g, "sil_n0").k
    ok = g[g.noise <= 0.25]
    r["sil_n0_noise25"] = best(ok, "sil_n0").ari
    r["sil_kg"] = best(g[g.family != "hdbscan"], "sil").ari
    r["ch_all"] = best(ok, "ch").ari
    r["db_all"] = best(ok, "db", asc=True).ari
    res[ds] = r
R = pd.DataFrame(res).T
base = R[["ks", "gb", "hd"]]
R["bestbase"] = base.max(axis=1)
print(R.round(2).to_string())
print(R.mean(numeric_only=True).round(3))
for col in ["sil_n0_all", "sil_n0_noise25", "sil_kg", "ch_all", "db_all"]:
    print(col, "within0.05", round(((R[col] >= R.bestbase - 0.05).mean()), 2))
