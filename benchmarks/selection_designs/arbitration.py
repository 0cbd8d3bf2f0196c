"""Pick-rule research, step 4: arbitrating between the family winners by DBCV, with a
margin asked of the density winner; mean ARI and the share within 0.05 of the best baseline."""

import pandas as pd

w = pd.read_csv("winners.csv")
P = w.pivot(index="dataset", columns="who", values=["ari", "dbcv", "k", "noise"])
P = P.reindex(w.dataset.unique())
A, D = P["ari"], P["dbcv"]
out = pd.DataFrame({"ks": A.ks, "gb": A.gb, "hd": A.hd.fillna(-1)})
out["best"] = out.max(axis=1)


def pick(rule):
    return pd.Series(
        [A.loc[d, rule(d)] if not pd.isna(A.loc[d, rule(d)]) else 0 for d in A.index],
        index=A.index,
    )


out["dbcv_all"] = pick(lambda d: D.loc[d].fillna(-2).idxmax())
out["dbcv_kg"] = pick(lambda d: D.loc[d, ["ks", "gb"]].fillna(-2).idxmax())
print(
    pd.concat(
        [out.round(2), D.round(2).add_prefix("dbcv_"), P["k"].add_prefix("k_")], axis=1
    ).to_string()
)
print(out.mean().round(3))
for col in ["dbcv_all", "dbcv_kg"]:
    print(col, (out[col] >= out.best - 0.05).mean().round(2))
print("--- hd admitted by DBCV margin over the k-means/GMM choice")
for m in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):

    def r(d, m=m):
        kg = D.loc[d, ["ks", "gb"]].fillna(-2).idxmax()
        hd = D.loc[d, "hd"]
        return "hd" if not pd.isna(hd) and hd - D.loc[d, kg] > m else kg

    s = pick(r)
    print(m, round(s.mean(), 3), round((s >= out.best - 0.05).mean(), 2))
