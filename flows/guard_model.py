"""The MLflow pyfunc for the guard. The logged code file (`guard_model_entry.py`) only instantiates
this class, so loading a model unpickles nothing and runs no code stored with the model beyond that
one line; weights and threshold come from safetensors + JSON artifacts."""

from __future__ import annotations

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from ebm_core import EnergyDetector, conformal_p_values
from flows.guard_input import InvalidGuardInput, validate_guard_input

DETECTOR_ARTIFACT = "detector"


class EnergyGuardModel(PythonModel):
    def load_context(self, context):
        self.detector = EnergyDetector.load(context.artifacts[DETECTOR_ARTIFACT])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return score_frame(self.detector, model_input)


def score_frame(detector: EnergyDetector, model_input) -> pd.DataFrame:
    """energy, p_value and is_ood per row; bad rows raise an MlflowException the caller can read."""
    try:
        x = validate_guard_input(model_input, detector.feature_names_in_)
    except InvalidGuardInput as error:
        # The scoring server turns ordinary exceptions into a generic message; this keeps the reason.
        raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
    energy = detector.score(x)
    return pd.DataFrame(
        {
            "energy": energy,
            "p_value": conformal_p_values(detector.calibration_energies_, energy),
            "is_ood": energy > detector.threshold_,
        }
    )
