"""A line-item log in the UCI "Online Retail II" layout, with known per-customer truth.

One row per invoice line: ``Invoice`` (a ``C`` prefix and a negative ``Quantity`` for a
cancellation), ``StockCode``, ``Description``, ``Quantity``, ``InvoiceDate`` (ISO 8601 with
``Z`` or an offset, mixed), ``Price``, ``Customer ID`` (integers written as floats, missing on
guest orders) and ``Country``. The truth is computed from the generator's own draws, in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml

from .conftest import EXPERIMENTS

ID = "Customer ID"
COUNTRIES = ("United Kingdom", "Germany", "France", "EIRE", "Spain")
COUNTRY_SHARES = (0.6, 0.15, 0.1, 0.1, 0.05)
PRICES = (0.85, 1.25, 2.1, 4.95, 12.75)
OFFSETS = ("Z", "+01:00", "-05:00", "+05:30")
RETAIL_SPEC = EXPERIMENTS / "online_retail.yaml"
SPEC_DATA = {
    key: value
    for key, value in yaml.safe_load(RETAIL_SPEC.read_text(encoding="utf-8"))["data"].items()
    if key not in ("source", "reference_date")
}
"""The data section of the spec for the layout, ``experiments/online_retail.yaml`` (its
source and reference date to add)."""


@dataclass(frozen=True)
class LineItems:
    """The log as written (text cells) and, per customer, the truth."""

    lines: pd.DataFrame
    truth: pd.DataFrame
    guest_lines: int
    cancellation_lines: int


def line_items(
    n_customers: int = 150,
    seed: int = 0,
    start: str = "2023-01-01",
    days: int = 365,
    first_id: int = 12346,
) -> LineItems:
    """A year of invoices of ``n_customers`` customers, plus guest orders without an id.

    Each customer has a home country (with three orders or more, one single-line order
    elsewhere: never the most frequent); about a third of the home orders have a cancellation
    of one of their lines, a day later.
    """
    rng = np.random.default_rng(seed)
    origin = pd.Timestamp(start, tz="UTC")
    lines, truth = [], []
    invoice = 500_000
    for i in range(n_customers + n_customers // 4):
        guest = i >= n_customers
        customer = "" if guest else f"{first_id + i}.0"
        home = COUNTRIES[rng.choice(len(COUNTRIES), p=COUNTRY_SHARES)]
        n_orders = 1 + rng.poisson(2.5)
        away = rng.integers(0, n_orders) if n_orders >= 3 else -1  # one order elsewhere
        spend = 0.0
        for order in range(n_orders):
            invoice += 1
            country = COUNTRIES[(COUNTRIES.index(home) + 1) % 5] if order == away else home
            when = origin + pd.Timedelta(minutes=int(rng.integers(0, (days - 2) * 1440)))
            bought = []
            for _ in range(1 if order == away else rng.integers(1, 5)):
                quantity, price = int(rng.integers(1, 13)), float(rng.choice(PRICES))
                stock = f"2{rng.integers(1000, 9999)}"
                bought.append((stock, quantity, price))
                lines.append((str(invoice), stock, quantity, when, price, customer, country))
                spend += quantity * price
            if order != away and rng.random() < 0.35:
                stock, quantity, price = bought[0]
                back = int(rng.integers(1, quantity + 1))
                later = when + pd.Timedelta(days=1)
                lines.append((f"C{invoice}", stock, -back, later, price, customer, country))
                spend -= back * price
        if not guest:
            truth.append((str(first_id + i), home, n_orders, round(spend, 2)))
    frame = pd.DataFrame(
        lines,
        columns=["Invoice", "StockCode", "Quantity", "when", "Price", ID, "Country"],
    )
    offsets = rng.choice(OFFSETS, size=len(frame))
    frame["InvoiceDate"] = [_iso(t, o) for t, o in zip(frame["when"], offsets, strict=True)]
    frame["Description"] = "ITEM " + frame["StockCode"]
    columns = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price"]
    truth_frame = pd.DataFrame(truth, columns=[ID, "Country", "orders", "spend"])
    last = frame[~frame["Invoice"].str.startswith("C")].groupby(ID)["when"].max()
    truth_frame["last_day"] = truth_frame[ID].map(
        {k.removesuffix(".0"): v.tz_localize(None).normalize() for k, v in last.items() if k}
    )
    return LineItems(
        lines=frame[[*columns, ID, "Country"]],
        truth=truth_frame,
        guest_lines=int((frame[ID] == "").sum()),
        cancellation_lines=int(frame["Invoice"].str.startswith("C").sum()),
    )


def _iso(when: pd.Timestamp, offset: str) -> str:
    """``when`` (UTC) written in ISO 8601 at ``offset`` (``Z`` for UTC itself)."""
    if offset == "Z":
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    local = when + sign * pd.Timedelta(hours=hours, minutes=minutes)
    return local.strftime("%Y-%m-%d %H:%M:%S") + offset
