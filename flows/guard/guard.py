"""`Guard.load(uri)`: the one way the code reaches a registered guard (evaluate, promote, monitor).

    guard = Guard.load("models:/ebm-guard@champion")   # the alias resolves to a fixed version
    guard.name, guard.version                          # the registered name and a version, e.g. 3
    guard.detector                                     # the ebm_core detector (score, threshold_, ...)
    guard.score(frame)                                 # energy, p_value, is_ood per row

What MLflow serves is the pyfunc (flows/guard/pyfunc.py); `Guard.load` loads that same pyfunc, and
`score` goes through its `predict`, so a frame gets exactly the input checks a served request gets
(MLflow's signature enforcement, then flows/guard/input_checks.py; a text guard embeds a `text`
column). A vector guard registered with the tensor signature takes the frame's feature columns by
name, in any order (other columns are ignored, as MLflow ignores them for a column signature), as
the (N, D) matrix its signature names. Bad rows raise `registry.RegistryError` (MLflow's exception)
naming the problem. `score(frame, explain=k)` adds the `neighbours` column (the k nearest training
examples of each flagged row, as JSON) for a version stored with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from flows.guard import registry
from flows.guard.names import version_uri


@dataclass(frozen=True)
class Guard:
    name: str  # registered model name
    version: str  # a fixed version, also when loaded through an alias
    detector: Any  # the ebm_core detector
    embedder: Any | None = None  # the text embedder of a text guard; None for a vector guard
    featurizer: dict[str, Any] | None = None  # its description (featurizer.json); None for a vector guard
    pyfunc: Any = field(default=None, repr=False, compare=False)  # the loaded MLflow pyfunc

    @classmethod
    def load(cls, uri: str) -> Guard:
        """Load `models:/<name>@<alias>` or `models:/<name>/<version>`. The alias is resolved first, so
        the guard is one version even if the alias moves meanwhile. ValueError for another kind of
        URI, LookupError for a missing alias, `registry.RegistryError` for a missing version."""
        name, version = registry.resolve_model_uri(uri)
        pyfunc = registry.load_pyfunc(version_uri(name, version))
        model = pyfunc.unwrap_python_model()
        return cls(
            name=name,
            version=version,
            detector=model.detector,
            embedder=model.embedder,
            featurizer=getattr(model, "featurizer", None),
            pyfunc=pyfunc,
        )

    @property
    def uri(self) -> str:
        """models:/<name>/<version>"""
        return version_uri(self.name, self.version)

    @property
    def feature_names(self) -> list[str]:
        """The detector's input columns (embedding columns for a text guard)."""
        names = self.detector.feature_names_in_
        return list(names) if names else [f"x{i}" for i in range(self.detector.n_features_in_)]

    @property
    def accepts_text(self) -> bool:
        return self.embedder is not None

    @property
    def takes_tensor(self) -> bool:
        """True for a vector guard registered with the tensor signature (one (-1, D) float64 input)."""
        schema = self.pyfunc.metadata.get_input_schema() if self.pyfunc is not None else None
        return schema is not None and schema.is_tensor_spec()

    @property
    def param_names(self) -> list[str]:
        """The params the registered version declares (`explain` since the tensor form; none before)."""
        schema = self.pyfunc.metadata.get_params_schema() if self.pyfunc is not None else None
        return [p.name for p in schema.params] if schema is not None else []

    def score(self, frame: pd.DataFrame, explain: int = 0) -> pd.DataFrame:
        """energy, p_value and is_ood per row, through the pyfunc's predict (the served checks); with
        explain=k > 0 also `neighbours` (JSON: the k nearest training examples of each flagged row)."""
        if self.pyfunc is None:
            raise RuntimeError("this Guard was not loaded with Guard.load; it has no pyfunc to score with")
        params = None
        if explain:
            from flows.guard.input_checks import EXPLAIN_PARAM

            if EXPLAIN_PARAM not in self.param_names:
                raise registry.RegistryError(
                    f"{self.name} version {self.version} takes no '{EXPLAIN_PARAM}' (registered before it existed)",
                    error_code=INVALID_PARAMETER_VALUE,
                )
            params = {EXPLAIN_PARAM: explain}
        model_input = frame
        if self.takes_tensor and isinstance(frame, pd.DataFrame):
            model_input = self._feature_matrix(frame)
        return self.pyfunc.predict(model_input, params=params)

    def _feature_matrix(self, frame: pd.DataFrame):
        from flows.guard.input_checks import InvalidGuardInput, validate_guard_input

        names = self.feature_names
        present = set(map(str, frame.columns))
        if all(name in present for name in names) and len(frame.columns) > len(names):
            frame = frame.loc[:, [c for c in frame.columns if str(c) in set(names)]]
        try:
            return validate_guard_input(frame, names)
        except InvalidGuardInput as error:
            raise registry.RegistryError(str(error), error_code=INVALID_PARAMETER_VALUE) from error


__all__ = ["Guard"]
