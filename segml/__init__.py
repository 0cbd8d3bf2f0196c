"""segml: customer segmentation experiments, a segment-model registry and batch scoring on MLflow.

The public API is re-exported here and imported lazily, so ``import segml`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from segml.data import read_customers
    from segml.errors import (
        DataError,
        GateFailed,
        RegistryError,
        SegmlError,
        SegmlWarning,
        SpecError,
    )
    from segml.experiment import tune
    from segml.features import build_features, build_preprocessor
    from segml.model import SegmentModel
    from segml.registry import promote, register, rollback
    from segml.reviewing import review
    from segml.scoring import score
    from segml.spec import load_spec, spec_digest

_EXPORTS = {
    "load_spec": "segml.spec",
    "spec_digest": "segml.spec",
    "read_customers": "segml.data",
    "build_features": "segml.features",
    "build_preprocessor": "segml.features",
    "tune": "segml.experiment",
    "SegmentModel": "segml.model",
    "register": "segml.registry",
    "review": "segml.reviewing",
    "promote": "segml.registry",
    "rollback": "segml.registry",
    "score": "segml.scoring",
    "SegmlError": "segml.errors",
    "SpecError": "segml.errors",
    "DataError": "segml.errors",
    "RegistryError": "segml.errors",
    "GateFailed": "segml.errors",
    "SegmlWarning": "segml.errors",
}
"""Each public name and the module that defines it, imported on first use."""

__all__ = [
    "__version__",
    "load_spec",
    "spec_digest",
    "read_customers",
    "build_features",
    "build_preprocessor",
    "tune",
    "SegmentModel",
    "register",
    "review",
    "promote",
    "rollback",
    "score",
    "SegmlError",
    "SpecError",
    "DataError",
    "RegistryError",
    "GateFailed",
    "SegmlWarning",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
