"""UMAP below 4,096 rows: exact pairwise distances against nearest-neighbour descent.

Fits UMAP (5 components, one thread) on scikit-learn's digits twice each way and prints the
second fit's seconds (the first pays numba's compilation). Run: ``python bench_umap_exact.py``.
"""

import time
import warnings

import umap
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler


def main() -> None:
    warnings.filterwarnings("ignore")
    X = StandardScaler().fit_transform(load_digits().data)
    for approximate in (False, True, False, True):
        started = time.perf_counter()
        umap.UMAP(
            n_components=5, random_state=0, n_jobs=1, force_approximation_algorithm=approximate
        ).fit(X)
        print(f"approximate={approximate}: {time.perf_counter() - started:.2f} s", flush=True)


if __name__ == "__main__":
    main()
