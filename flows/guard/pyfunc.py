"""The MLflow pyfunc for the guard. The logged code file (`pyfunc_entry.py`) only instantiates
this class, so loading a model unpickles nothing and runs no code stored with the model beyond that
one line; weights and threshold come from safetensors + JSON artifacts.

Input: a vector guard registered with the tensor signature gets an (N, D) float64 array whose columns
are the detector's features in order; a version registered before (64 named double columns) and a
text guard get a DataFrame (a text guard: a `text` column, or the embedding columns). Every form is
checked by flows/guard/input_checks.py; a bad request raises an MlflowException whose message names
the problem (the scoring server answers it as a 400).

Output: energy, p_value, is_ood per row; with params `explain` = k > 0, also `neighbours`: per row a
JSON string, for a flagged row its k nearest training examples
`[{"rank": 1, "distance": .., "label": .., "text": ..}, ...]` (flows/guard/explanations.py), "[]" for
an accepted row. The neighbour bank is read on the first request that asks for it, never before: the
default request pays nothing for it.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from ebm_core import Detector, load_detector
from flows.guard.input_checks import (
    EXPLAIN_PARAM,
    InvalidGuardInput,
    check_texts,
    check_unique_columns,
    first_items,
    max_rows,
    requested_neighbours,
    validate_guard_input,
)

DETECTOR_ARTIFACT = "detector"
FEATURIZER_FILE = "featurizer.json"
KNOWN_FEATURIZERS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
TEXT_COLUMN = "text"
NEIGHBOURS_COLUMN = "neighbours"
NEIGHBOUR_FIELDS = ("rank", "distance", "label", "text")
_NOT_READ = object()


class EnergyGuardModel(PythonModel):
    def load_context(self, context):
        from pathlib import Path

        from flows.settings import configure_torch_threads

        configure_torch_threads()  # OpenMP threads make a one-row forward pass many times slower
        detector_dir = Path(context.artifacts[DETECTOR_ARTIFACT])
        self.detector_dir = detector_dir
        self.detector = load_detector(detector_dir)  # any detector kind, by its detector.json
        self.embedder = None
        self.featurizer = None  # the featurizer's JSON description (name, ...) for a text guard
        self._bank = _NOT_READ  # the neighbour bank, read on the first request with explain > 0
        self._bank_lock = threading.Lock()
        if (detector_dir / FEATURIZER_FILE).exists():
            from flows.data.featurize import TextEmbedder

            featurizer = json.loads((detector_dir / FEATURIZER_FILE).read_text())
            if featurizer["name"] not in KNOWN_FEATURIZERS:
                raise MlflowException(f"unknown featurizer {featurizer['name']!r} in the model's artifacts")
            self.featurizer = featurizer
            self.embedder = TextEmbedder()

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        k = neighbours_asked(params)
        if k:
            self.neighbour_bank()  # refused before any row is embedded or scored
        if self.embedder is not None and isinstance(model_input, pd.DataFrame) and TEXT_COLUMN in model_input:
            if len(model_input) > max_rows():  # refuse before paying for the embedding
                raise MlflowException(
                    f"too many rows: {len(model_input)} > {max_rows()} per request (EBMOPS_MAX_ROWS)",
                    error_code=INVALID_PARAMETER_VALUE,
                )
            model_input = embed_text_frame(self.embedder, model_input, self.detector.feature_names_in_)
        return pd.DataFrame(self.score_matrix(checked_matrix(self.detector, model_input), k))

    def score_tensor(self, x: np.ndarray, params=None) -> dict:
        """The output columns (name -> values) for an (N, D) array, checked as `predict` checks it; the
        serving middleware's path (flows/guard/serving.py), which needs no DataFrame either way."""
        k = neighbours_asked(params)
        return self.score_matrix(checked_matrix(self.detector, x), k)

    def score_matrix(self, x: np.ndarray, k: int = 0) -> dict:
        """energy, p_value, is_ood (and with k > 0 neighbours) for checked rows x (N, D)."""
        assessment = self.detector.assess(x)
        columns = {"energy": assessment.energy, "p_value": assessment.p_value, "is_ood": assessment.is_ood}
        if k:
            columns[NEIGHBOURS_COLUMN] = neighbour_column(self.neighbour_bank(), x, np.asarray(assessment.is_ood), k)
        return columns

    def neighbour_bank(self):
        """The stored training examples (read once), or a 400 when this version has none."""
        if self._bank is _NOT_READ:
            with self._bank_lock:
                if self._bank is _NOT_READ:
                    self._bank = read_neighbour_bank(self.detector_dir, self.detector)
        if self._bank is None:
            raise MlflowException(
                f"params '{EXPLAIN_PARAM}': this model version has no stored training examples (it was registered "
                "without a neighbour bank), so it cannot show the nearest ones; send explain=0 or use a version "
                "registered with them",
                error_code=INVALID_PARAMETER_VALUE,
            )
        return self._bank


def neighbours_asked(params) -> int:
    """params `explain` (0 when absent), or a 400 naming why it cannot be used."""
    try:
        return requested_neighbours(params)
    except InvalidGuardInput as error:
        raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error


def read_neighbour_bank(detector_dir, detector: Detector):
    """The bank in the detector folder, None when there is none; a damaged one or one of another
    width than the detector is a server-side error (500) naming it."""
    from flows.guard.explanations import NeighbourBank, NeighbourBankError

    try:
        bank = NeighbourBank.load(detector_dir)
    except NeighbourBankError as error:
        raise MlflowException(f"the stored training examples cannot be read: {error}", error_code=INTERNAL_ERROR) from None
    if bank is not None and bank.n_features != detector.n_features_in_:
        raise MlflowException(
            f"the stored training examples have {bank.n_features} features, the detector {detector.n_features_in_}",
            error_code=INTERNAL_ERROR,
        )
    return bank


def neighbour_column(bank, x: np.ndarray, flagged: np.ndarray, k: int) -> list[str]:
    """Per row a JSON list of the k nearest training examples when flagged, "[]" when accepted."""
    column = ["[]"] * len(x)
    rows = np.flatnonzero(flagged)
    if len(rows):
        for i, found in zip(rows, bank.nearest(x[rows], k)):
            column[i] = json.dumps([{key: entry.get(key) for key in NEIGHBOUR_FIELDS} for entry in found])
    return column


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


def feature_names_of(detector: Detector) -> list[str]:
    """The detector's input columns (x0.. when it was fitted without names)."""
    names = detector.feature_names_in_
    return list(names) if names else [f"x{i}" for i in range(detector.n_features_in_)]


def checked_matrix(detector: Detector, model_input) -> np.ndarray:
    """The (N, D) float64 matrix of the detector's features, or an MlflowException the caller can read."""
    try:
        return validate_guard_input(model_input, feature_names_of(detector))
    except InvalidGuardInput as error:
        # The scoring server turns ordinary exceptions into a generic message; this keeps the reason.
        raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from error


def assess_matrix(detector: Detector, x: np.ndarray) -> pd.DataFrame:
    assessment = detector.assess(x)
    return pd.DataFrame({"energy": assessment.energy, "p_value": assessment.p_value, "is_ood": assessment.is_ood})


def score_frame(detector: Detector, model_input) -> pd.DataFrame:
    """energy, p_value and is_ood per row; bad rows raise an MlflowException the caller can read."""
    return assess_matrix(detector, checked_matrix(detector, model_input))
