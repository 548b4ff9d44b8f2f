"""ComposedDetector: the weighted sum of member detectors' energies,

    score(x) = sum_i w_i * member_i.score(x),

i.e. the product of experts prod_i p_i(x)^w_i (`ebm_core.composition.WeightedSumEnergy`, which does
the sum). With positive weights an input must look in-distribution to every member to score low. Each
member keeps its own standardisation, so members need not scale features alike; they must read the
same features.

Members may be fitted already (compose without refitting) or fitted together by `fit`. Saved as one
sub-folder per member (`member_0/`, ..., each loadable by `load_detector`) and the weights in JSON.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from ebm_core.composition import WeightedSumEnergy, check_weights
from ebm_core.detectors.base import Detector, load_detector
from ebm_core.energies.base import EnergyFunction
from ebm_core.errors import NotFittedError


class ComposedDetector(Detector):
    kind = "composed"

    def __init__(self, members: list[tuple[float, Detector]]):
        members = list(members)
        weights = check_weights([w for w, _ in members], "ComposedDetector")
        for _, detector in members:
            if not isinstance(detector, Detector):
                raise TypeError(f"members must be Detectors, got {type(detector).__name__}")
        self.members = [(w, d) for w, (_, d) in zip(weights, members)]

    def fit(self, x: np.ndarray, y: np.ndarray | None = None, **fit_params) -> "ComposedDetector":
        """Fit every member on the same rows (in place). Each member gets the fit_params its `fit` names;
        a `checkpoint_dir` is split into one sub-folder per member."""
        self._reset_fitted_state()
        checkpoint_dir = fit_params.pop("checkpoint_dir", None)
        for i, (_, member) in enumerate(self.members):
            accepted = inspect.signature(member.fit).parameters
            params = {k: v for k, v in fit_params.items() if k in accepted}
            if checkpoint_dir is not None and "checkpoint_dir" in accepted:
                params["checkpoint_dir"] = Path(checkpoint_dir) / f"member_{i}"
            member.fit(x, y, **params)
        self._sum_energy()  # members that read different features fail here, at fit time
        return self

    @property
    def n_features_in_(self) -> int:
        return self._sum_energy().input_dim

    @property
    def feature_names_in_(self) -> list[str] | None:
        self._check_fitted()
        return next((d.feature_names_in_ for _, d in self.members if d.feature_names_in_ is not None), None)

    def _is_fitted(self) -> bool:
        return all(d._is_fitted() for _, d in self.members)

    def _energies(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._sum_energy()(torch.as_tensor(x, dtype=torch.float64)).numpy()

    def _sum_energy(self) -> WeightedSumEnergy:
        self._check_fitted()
        return WeightedSumEnergy([(w, _MemberEnergy(d)) for w, d in self.members])

    def _saved_state(self, folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        names = []
        for i, (_, member) in enumerate(self.members):
            names.append(f"member_{i}")
            member._write(folder / names[-1])
        return {"weights": [w for w, _ in self.members], "members": names}, {}

    @classmethod
    def _from_saved(cls, folder: Path, metadata: dict, tensors: dict[str, torch.Tensor], device: str):
        members = [load_detector(folder / name, device=device) for name in metadata["members"]]
        return cls(list(zip(metadata["weights"], members)))


class _MemberEnergy(EnergyFunction):
    """A fitted detector read as an energy on raw features (float64 rows in, float64 energies out)."""

    def __init__(self, detector: Detector):
        super().__init__()
        if not detector._is_fitted():
            raise NotFittedError(f"member {type(detector).__name__} is not fitted")
        self.detector = detector
        self.input_dim = detector.n_features_in_

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.detector.score(x.detach().cpu().numpy()))
