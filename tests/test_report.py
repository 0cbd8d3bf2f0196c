"""Reports: small segments are blanked, tables and pages render without other files."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segml import report


def test_segments_below_k_are_blanked_but_listed_with_one_that_hides_their_size() -> None:
    table = pd.DataFrame(
        {"segment_id": [0, 1, 2], "customers": [500, 7, 300], "revenue_mean": [12.5, 99.0, 3.0]}
    )
    masked = report.suppress_small(table, k=20)
    assert masked.loc[0, "revenue_mean"] == 12.5 and masked.loc[0, "customers"] == 500
    assert masked.loc[1, "revenue_mean"] is None and masked.loc[1, "customers"] == "<20"
    # 807 - 500 would give the 7 away: the next smallest segment is blanked too.
    assert masked.loc[2, "revenue_mean"] is None and masked.loc[2, "customers"] == ">=20"


def test_markdown_table_rounds_and_escapes() -> None:
    frame = pd.DataFrame({"name": ["a|b"], "value": [0.123456], "missing": [np.nan]})
    assert report.markdown_table(frame).splitlines() == [
        "| name | value | missing |",
        "| --- | --- | --- |",
        "| a\\|b | 0.123 |  |",
    ]


def test_html_page_inlines_its_charts() -> None:
    counts = pd.DataFrame([[9, 1], [0, 10]], index=[0, 1], columns=[0, 1])
    page = report.html_page(
        "Review", [("Migration", report.figure_html(report.migration_heatmap(counts, {0: "A"})))]
    )
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert 'src="http' not in page and "href=" not in page
