"""segml: customer segmentation experiments, a segment-model registry and batch scoring on MLflow.

The public API is re-exported here and imported lazily, so ``import segml`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_spec": "segml.spec",
    "spec_digest": "segml.spec",
    "read_customers": "segml.data",
    "build_features": "segml.features",
    "build_preprocessor": "segml.features",
    "SegmlError": "segml.errors",
    "SpecError": "segml.errors",
    "DataError": "segml.errors",
    "RegistryError": "segml.errors",
    "GateFailed": "segml.errors",
    "SegmlWarning": "segml.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'segml' has no attribute {name!r}")
