"""The second implementation for ``bench_clv.py``: PyMC-Marketing's BG/NBD and Gamma-Gamma,
fitted by MAP with flat priors (``pm.find_MAP`` drops the Jacobian, so this is maximum
likelihood), on the customer summaries segml wrote.

Run in a venv with pymc-marketing (not segml's): ``python clv_reference.py CUSTOMERS.csv
AGES.json OUT.json HOLDOUT_WEEKS``. CUSTOMERS.csv has ``x, t_x, T, zbar`` per customer (zbar
NaN without a repeat purchase); AGES.json a nested list of customer ages in weeks. Writes the
fitted parameters, each customer's expected purchases over the holdout, a new customer's
expected repeat purchases at each age, and the import and fit seconds.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata

import numpy as np
import pandas as pd

started = time.perf_counter()
from pymc_extras.prior import Prior  # noqa: E402
from pymc_marketing.clv import BetaGeoModel, GammaGammaModel  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started
FLAT = Prior("HalfFlat")


def main(customers_csv: str, ages_json: str, out_json: str, holdout_weeks: str) -> None:
    customers = pd.read_csv(customers_csv)
    data = pd.DataFrame(
        {
            "customer_id": np.arange(len(customers)),
            "frequency": customers["x"],
            "recency": customers["t_x"],
            "T": customers["T"],
        }
    )
    started = time.perf_counter()
    purchases = BetaGeoModel(
        data=data, model_config={"r": FLAT, "alpha": FLAT, "a": FLAT, "b": FLAT}
    )
    purchases.fit(method="map", progressbar=False)
    repeat = customers["x"].gt(0) & customers["zbar"].gt(0)
    spend_data = pd.DataFrame(
        {
            "customer_id": np.arange(int(repeat.sum())),
            "frequency": customers.loc[repeat, "x"].to_numpy(),
            "monetary_value": customers.loc[repeat, "zbar"].to_numpy(),
        }
    )
    spend = GammaGammaModel(data=spend_data)
    spend.fit(method="map", progressbar=False)
    fit_seconds = time.perf_counter() - started

    def value(model: object, name: str) -> float:
        return float(model.fit_result[name].values.ravel()[0])  # type: ignore[attr-defined]

    conditional = purchases.expected_purchases(future_t=float(holdout_weeks))
    with open(ages_json) as ages_file:
        ages = np.asarray(json.load(ages_file), dtype=float)
    unconditional = _new_customer(purchases, ages)
    result = {
        "version": metadata.version("pymc-marketing"),
        "params": {
            "r": value(purchases, "r"),
            "alpha": value(purchases, "alpha"),
            "a": value(purchases, "a"),
            "b": value(purchases, "b"),
            "p": value(spend, "p"),
            "q": value(spend, "q"),
            "gamma": value(spend, "v"),
        },
        "conditional": conditional.values.reshape(-1).tolist(),
        "unconditional": unconditional.tolist(),
        "import_seconds": IMPORT_SECONDS,
        "fit_seconds": fit_seconds,
    }
    with open(out_json, "w") as out:
        json.dump(result, out)


def _new_customer(purchases: BetaGeoModel, ages: np.ndarray) -> np.ndarray:
    """A new customer's expected repeat purchases at every age, in one call: one pseudo
    customer per age."""
    grid = pd.DataFrame(
        {"customer_id": np.arange(ages.size), "frequency": 0, "recency": 0.0, "T": 1.0}
    )
    expected = purchases.expected_purchases_new_customer(grid, t=ages.ravel())
    return np.asarray(expected.values, dtype=float).reshape(ages.shape)


if __name__ == "__main__":
    main(*sys.argv[1:5])
