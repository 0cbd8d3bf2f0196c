"""Models-from-code entry point: MLflow executes this file to rebuild the segment model."""

import mlflow

from segml.model import SegmentModel

mlflow.models.set_model(SegmentModel())
