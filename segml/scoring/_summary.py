"""The summary of a scoring run: what it read, wrote, set aside and found, and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segml import tracking as keys
from segml.migration import migration_summary
from segml.monitoring import BatchReport, unexpected
from segml.registry import ModelRef
from segml.spec import Monitoring


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """What one scoring run read, wrote, set aside and found.

    ``quarantined`` counts rows per reason (a row with several reasons counts under each);
    ``missing`` and ``unseen`` count, per column, the values imputed and the categories the
    model never saw (ignored by its encoder).
    """

    model: ModelRef
    model_name: str
    family: str
    output: Path
    quarantine: Path | None
    rows_read: int
    rows_scored: int
    rows_quarantined: int
    quarantined: dict[str, int]
    excluded: dict[str, int]
    ignored_columns: tuple[str, ...]
    missing: dict[str, int]
    unseen: dict[str, int]
    novel: int
    seconds: float
    report: BatchReport
    settings: Monitoring
    min_report_size: int
    segment_names: dict[int, str]
    training_hidden: frozenset[int] = frozenset()
    """Segments the model's training reports hide (``report.catalog_hidden``): the share
    table does not show their training shares either."""

    @property
    def rows_per_second(self) -> float:
        """Customers scored per second of the whole run."""
        return self.rows_scored / self.seconds if self.seconds > 0 else float("nan")

    def metrics(self) -> dict[str, float]:
        """The scoring run's metrics, under the keys of ``segml.tracking``."""
        shares, features = self.report.shares, self.report.features
        emerging = self.report.emerging.table
        values = {
            keys.SCORING_ROWS_READ: self.rows_read,
            keys.SCORING_ROWS_SCORED: self.rows_scored,
            keys.SCORING_ROWS_QUARANTINED: self.rows_quarantined,
            keys.SCORING_SECONDS: self.seconds,
            keys.SCORING_ROWS_PER_SECOND: self.rows_per_second,
            keys.SCORING_NOVEL_SHARE: self.novel / self.rows_scored,
            keys.SCORING_ALERT: float(bool(self.report.alerts)),
            keys.EMERGING_CANDIDATES: len(emerging),
            keys.EMERGING_SHARE: float(emerging["customers"].sum()) / self.rows_scored,
            keys.DRIFT_SHARE_PSI: shares.psi,
            keys.DRIFT_SHARE_P_VALUE: shares.p_value,
            keys.DRIFT_FEATURE_PSI_MAX: features["psi"].max() if len(features) else np.nan,
            keys.DRIFT_FEATURES_DRIFTED: (
                judged["drifted"].mean() if len(judged := unexpected(features)) else np.nan
            ),
        }
        if self.report.migration is not None:
            matched, share = migration_summary(self.report.migration)
            values |= {keys.MIGRATION_CUSTOMERS: matched, keys.MIGRATION_SHARE: share}
        return {k: float(v) for k, v in values.items()}
