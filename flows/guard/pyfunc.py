"""The MLflow pyfunc for the guard. The logged code file (`pyfunc_entry.py`) only instantiates
this class, so loading a model unpickles nothing and runs no code stored with the model beyond that
one line; weights and threshold come from safetensors + JSON artifacts."""

from __future__ import annotations

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from ebm_core import Detector, load_detector
from flows.guard.input_checks import (
    InvalidGuardInput,
    check_texts,
    check_unique_columns,
    first_items,
    max_rows,
    validate_guard_input,
)

DETECTOR_ARTIFACT = "detector"
FEATURIZER_FILE = "featurizer.json"
KNOWN_FEATURIZERS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
TEXT_COLUMN = "text"


class EnergyGuardModel(PythonModel):
    def load_context(self, context):
        import json
        from pathlib import Path

        from flows.settings import configure_torch_threads

        configure_torch_threads()  # OpenMP threads make a one-row forward pass many times slower
        detector_dir = Path(context.artifacts[DETECTOR_ARTIFACT])
        self.detector = load_detector(detector_dir)  # any detector kind, by its detector.json
        self.embedder = None
        self.featurizer = None  # the featurizer's JSON description (name, ...) for a text guard
        if (detector_dir / FEATURIZER_FILE).exists():
            from flows.data.featurize import TextEmbedder

            featurizer = json.loads((detector_dir / FEATURIZER_FILE).read_text())
            if featurizer["name"] not in KNOWN_FEATURIZERS:
                raise MlflowException(f"unknown featurizer {featurizer['name']!r} in the model's artifacts")
            self.featurizer = featurizer
            self.embedder = TextEmbedder()

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        if self.embedder is not None and isinstance(model_input, pd.DataFrame) and TEXT_COLUMN in model_input:
            if len(model_input) > max_rows():  # refuse before paying for the embedding
                raise MlflowException(
                    f"too many rows: {len(model_input)} > {max_rows()} per request (EBMOPS_MAX_ROWS)",
                    error_code=INVALID_PARAMETER_VALUE,
                )
            model_input = embed_text_frame(self.embedder, model_input, self.detector.feature_names_in_)
        return score_frame(self.detector, model_input)


def embed_text_frame(embedder, model_input: pd.DataFrame, feature_names: list[str]) -> pd.DataFrame:
    """Rows of raw text -> the embedding columns the detector was trained on."""
    try:
        check_unique_columns(model_input.columns)
        extra = [c for c in model_input.columns if c != TEXT_COLUMN]
        if extra:
            raise InvalidGuardInput(
                f"send either a '{TEXT_COLUMN}' column or the {len(feature_names)} embedding columns, "
                f"not both (unexpected columns: {first_items(extra)})"
            )
        texts = check_texts(model_input[TEXT_COLUMN], TEXT_COLUMN)
    except InvalidGuardInput as error:
        raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
    from flows.data.featurize import normalise_text

    vectors = embedder.embed([normalise_text(t) for t in texts], progress=False)
    return pd.DataFrame(vectors.astype("float64"), columns=feature_names)


def score_frame(detector: Detector, model_input) -> pd.DataFrame:
    """energy, p_value and is_ood per row; bad rows raise an MlflowException the caller can read."""
    try:
        x = validate_guard_input(model_input, detector.feature_names_in_)
    except InvalidGuardInput as error:
        # The scoring server turns ordinary exceptions into a generic message; this keeps the reason.
        raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error
    assessment = detector.assess(x)
    return pd.DataFrame({"energy": assessment.energy, "p_value": assessment.p_value, "is_ood": assessment.is_ood})
