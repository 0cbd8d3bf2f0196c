"""Pick-rule research, step 6: k-means for every number of segments of pools.csv's datasets,
with DBCV and silhouette (noise 0), to compare other finalists with k-means at the same k.
Writes same_k.csv here."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pools import SEED, bench, features, sil0

from segml.families import FAMILIES
from segml.metrics.quality import quality_metrics


def main():
    api, work, rows = bench._segml(), Path(tempfile.mkdtemp()), []
    for data in bench.datasets():
        X = features(api, data, work)
        ks = range(2, bench.baseline_max_k(len(X)) + 1)
        for k in ks:
            labels = np.asarray(
                FAMILIES["kmeans"].fit(X, {"n_clusters": int(k), "n_init": 3}, SEED).labels_
            )
            q = quality_metrics(X, labels, with_dbcv=True)
            rows.append(dict(dataset=data.name, k=k, km_dbcv=q.dbcv, km_sil0=sil0(X, labels)))
        print(data.name, flush=True)
        pd.DataFrame(rows).to_csv("same_k.csv", index=False)
    pd.DataFrame(rows).to_csv("same_k.csv", index=False)


if __name__ == "__main__":
    main()
