"""Pure metrics of a segmentation: arrays in, small frozen dataclasses or DataFrames out.

No MLflow, no I/O, no printing. Labels are integers and -1 means noise (no segment).
"""

from segml.metrics.business import Business, business_metrics, feature_profile, segment_table
from segml.metrics.granularity import Check, granularity_checks
from segml.metrics.quality import Quality, quality_metrics
from segml.metrics.stability import Stability, bootstrap_stability, jaccard_matrix
from segml.metrics.transitions import agreement, migration_matrix, migration_share, transitions

__all__ = [
    "Business",
    "Check",
    "Quality",
    "Stability",
    "agreement",
    "bootstrap_stability",
    "business_metrics",
    "feature_profile",
    "granularity_checks",
    "jaccard_matrix",
    "migration_matrix",
    "migration_share",
    "quality_metrics",
    "segment_table",
    "transitions",
]
