"""Why was this input flagged? The nearest training examples of an input, and pictures of what the model
considers in-distribution.

Neighbour bank. `save_neighbour_bank(detector_dir, x, labels, texts)` stores a seeded subsample (at
most `max_rows`, `numpy.random.default_rng(seed)`) of the training rows in `detector_dir/neighbours/`:
`vectors.safetensors` (the rows as float32, and for vector guards the standardiser) and
`neighbours.json` (metric, labels, raw texts, which training rows were kept). No pickles. The pipeline
writes it before registration, so the registered artifacts (and their recorded digests) include it.
`NeighbourBank.load(detector_dir)` reads it back (None when there is none); `bank.nearest(x, k)` gives
each input row's k nearest stored examples with their distances, labels and texts.

The distance, one rule per bank, fixed when it is saved:

- text guards (`texts` given; the rows are sentence embeddings): cosine distance, 1 - cos(q, b), in
  [0, 2]; the embedder's unit vectors compare by direction, as the kernel-density detectors do;
- vector guards (no texts): Euclidean distance after standardising each feature by the mean and
  standard deviation of the training rows given to `save_neighbour_bank` (all of them, not only the
  subsample), a standard deviation below 1e-3 counting as 1. That is the standardisation
  `EnergyDetector` and `ContrastiveHeadDetector` learn from the same rows (`mean_`, `scale_`), so the
  distance is measured in the space those detectors read; it is stored with the bank, so the bank does
  not depend on the detector's kind.

Distances are computed in float64, `NEAREST_CHUNK_VALUES` query x bank values at a time (10,000 queries
against 5,000 stored rows never hold the full 50M-value matrix); the k nearest are re-measured directly
and sorted by (distance, row), so ties go to the earlier stored row.

Langevin pictures. `langevin_pictures(detector, x_train, feature_names, ...)` draws a few samples from
the trained energy with `ebm_core.samplers.LangevinSampler` (in the standardised space of the training
rows, mapped back) for guards whose features are square images (`pixel_0` ... `pixel_{s*s-1}`, e.g.
the demo's 8x8 digits), so the evaluation report can show what the model considers in-distribution.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BANK_DIR = "neighbours"
VECTORS_FILE = "vectors.safetensors"
METADATA_FILE = "neighbours.json"
FORMAT_VERSION = 1
COSINE = "cosine"
EUCLIDEAN = "euclidean_standardised"
METRICS = (COSINE, EUCLIDEAN)
MIN_FEATURE_SCALE = 1e-3  # as DetectorConfig.min_feature_scale: a smaller std is not rescaled
NEAREST_CHUNK_VALUES = 1 << 22  # query rows x bank rows per distance block (32 MiB of float64)
_EXTRA_CANDIDATES = 8  # re-measured beyond k, so rounding in the block formula cannot reorder the k


class NeighbourBankError(ValueError):
    """A stored neighbour bank that cannot be read (damaged, edited or incomplete); names the file."""


def _json_value(value: Any, what: str) -> Any:
    """A label as a plain JSON value (numpy scalars unwrapped); anything else is refused by name."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} is {value}: labels must be finite numbers, strings or None")
        return value
    raise TypeError(f"{what} has type {type(value).__name__}: labels must be strings, numbers or None")


def _check_rows(x: Any, name: str, n_features: int | None = None) -> np.ndarray:
    x = np.asarray(x)
    expected = f"(N, {n_features})" if n_features is not None else "(N, D)"
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape {expected}, got {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{name} must have shape {expected} (the bank's {n_features} features), got {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))[:5].tolist()
        raise ValueError(f"{name} contains NaN or infinite values (rows {rows})")
    return x


def save_neighbour_bank(
    detector_dir: Path,
    x: np.ndarray,
    labels: Sequence | None = None,
    texts: Sequence[str] | None = None,
    max_rows: int = 5000,
    seed: int = 0,
) -> Path:
    """Store a subsample of the training rows `x` (N, D), with their labels and raw texts when known,
    in `detector_dir/neighbours/` (replacing a bank there); returns that folder.

    For text guards x are the embeddings and texts the raw queries (the metric is then cosine); for
    vector guards leave texts None (standardised Euclidean). At most `max_rows` rows are kept, drawn
    without replacement by `numpy.random.default_rng(seed)` and kept in their original order. Written
    into a sibling folder and swapped in, so a reader never sees half a bank."""
    from safetensors.numpy import save_file

    detector_dir = Path(detector_dir)
    if not detector_dir.is_dir():
        raise FileNotFoundError(f"detector folder not found: {detector_dir}")
    x = _check_rows(x, "x")
    n = x.shape[0]
    if n == 0:
        raise ValueError("x has no rows: a neighbour bank needs at least one training row")
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
        raise ValueError(f"max_rows must be a whole number >= 1, got {max_rows!r}")
    if labels is not None:
        labels = list(labels)
        if len(labels) != n:
            raise ValueError(f"labels must have one entry per row of x ({n}), got {len(labels)}")
    if texts is not None:
        texts = list(texts)
        if len(texts) != n:
            raise ValueError(f"texts must have one entry per row of x ({n}), got {len(texts)}")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; rows {bad[:5]} are not")

    keep = np.arange(n)
    if n > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=int(max_rows), replace=False))
    metric = COSINE if texts is not None else EUCLIDEAN
    tensors = {"vectors": np.ascontiguousarray(x[keep], dtype=np.float32)}
    if metric == EUCLIDEAN:
        std = x.std(axis=0)
        tensors["mean"] = x.mean(axis=0)
        tensors["scale"] = np.where(std < MIN_FEATURE_SCALE, 1.0, std)
    metadata = {
        "format_version": FORMAT_VERSION,
        "metric": metric,
        "n_rows": int(keep.size),
        "n_features": int(x.shape[1]),
        "n_training_rows": int(n),
        "max_rows": int(max_rows),
        "seed": int(seed),
        "training_rows": keep.tolist(),
        "labels": None if labels is None else [_json_value(labels[i], f"labels[{i}]") for i in keep],
        "texts": None if texts is None else [texts[i] for i in keep],
    }

    target = detector_dir / BANK_DIR
    staging = Path(tempfile.mkdtemp(prefix=f".{detector_dir.name}.{BANK_DIR}.", dir=detector_dir.parent))
    previous = detector_dir.parent / f".{detector_dir.name}.{BANK_DIR}.previous"
    try:
        save_file(tensors, str(staging / VECTORS_FILE))
        (staging / METADATA_FILE).write_text(json.dumps(metadata, allow_nan=False), encoding="utf-8")
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        if previous.exists() and not target.exists():
            previous.rename(target)  # the swap failed half-way: put the old bank back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


class NeighbourBank:
    """Training examples stored with a detector, searched by `nearest`. Build with `load` (or
    `save_neighbour_bank` then `load`)."""

    def __init__(
        self,
        vectors: np.ndarray,
        metric: str,
        labels: list | None = None,
        texts: list[str] | None = None,
        mean: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        training_rows: list[int] | None = None,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.vectors = _check_rows(vectors, "vectors")  # (M, D) as stored
        self.metric = metric
        self.labels = labels
        self.texts = texts
        self.training_rows = training_rows
        m, d = self.vectors.shape
        for name, values in (("labels", labels), ("texts", texts), ("training_rows", training_rows)):
            if values is not None and len(values) != m:
                raise ValueError(f"{name} has {len(values)} entries for {m} stored rows")
        if metric == EUCLIDEAN:
            if mean is None or scale is None:
                raise ValueError("a standardised Euclidean bank needs the standardiser (mean and scale)")
            self.mean = np.asarray(mean, dtype=np.float64)
            self.scale = np.asarray(scale, dtype=np.float64)
            if self.mean.shape != (d,) or self.scale.shape != (d,):
                raise ValueError(f"mean and scale must have shape ({d},), got {self.mean.shape} and {self.scale.shape}")
            if not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all() and (self.scale > 0).all()):
                raise ValueError("the standardiser must be finite with a positive scale")
        else:
            self.mean = self.scale = None
        self._bank = self._transform(self.vectors)  # (M, D) in the space the distance is measured in
        self._bank_sq = np.einsum("ij,ij->i", self._bank, self._bank)  # (M,)

    @property
    def n_rows(self) -> int:
        return self.vectors.shape[0]

    @property
    def n_features(self) -> int:
        return self.vectors.shape[1]

    @classmethod
    def load(cls, detector_dir: Path) -> NeighbourBank | None:
        """The bank in `detector_dir/neighbours/`, None when there is none; a `NeighbourBankError`
        naming the file when it is damaged or incomplete."""
        folder = Path(detector_dir) / BANK_DIR
        if not folder.exists():
            return None
        metadata_path, vectors_path = folder / METADATA_FILE, folder / VECTORS_FILE
        for path in (metadata_path, vectors_path):
            if not path.is_file():
                raise NeighbourBankError(f"{path}: missing; the neighbour bank is incomplete (save it again)")
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise NeighbourBankError(f"{metadata_path}: not readable JSON ({error})") from None
        if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
            found = metadata.get("format_version") if isinstance(metadata, dict) else type(metadata).__name__
            raise NeighbourBankError(f"{metadata_path}: format_version {found!r}, expected {FORMAT_VERSION}")
        try:
            from safetensors.numpy import load_file

            tensors = load_file(str(vectors_path))
        except Exception as error:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise NeighbourBankError(f"{vectors_path}: not a readable safetensors file ({error})") from None
        if "vectors" not in tensors:
            raise NeighbourBankError(f"{vectors_path}: has no 'vectors' tensor")
        try:
            bank = cls(
                tensors["vectors"],
                metric=metadata.get("metric"),
                labels=metadata.get("labels"),
                texts=metadata.get("texts"),
                mean=tensors.get("mean"),
                scale=tensors.get("scale"),
                training_rows=metadata.get("training_rows"),
            )
        except (TypeError, ValueError) as error:
            raise NeighbourBankError(f"{folder}: damaged neighbour bank ({error})") from None
        if (bank.n_rows, bank.n_features) != (metadata.get("n_rows"), metadata.get("n_features")):
            raise NeighbourBankError(
                f"{vectors_path}: holds {bank.n_rows} rows x {bank.n_features} features, {metadata_path} says "
                f"{metadata.get('n_rows')} x {metadata.get('n_features')}"
            )
        return bank

    def _transform(self, x: np.ndarray) -> np.ndarray:
        if self.metric == EUCLIDEAN:
            return (x - self.mean) / self.scale
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)  # a zero row stays zero: cosine distance 1 to every row

    def _exact(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Distances of query rows q (B, D) to the bank rows rows (B, C), measured directly: (B, C)."""
        b = self._bank[rows]  # (B, C, D)
        if self.metric == EUCLIDEAN:
            return np.sqrt(np.einsum("bcd,bcd->bc", q[:, None, :] - b, q[:, None, :] - b))
        return 1.0 - np.einsum("bd,bcd->bc", q, b)

    def nearest(self, x: np.ndarray, k: int = 3) -> list[list[dict]]:
        """Per input row of x (N, D), its k nearest stored examples, nearest first:
        {"rank": 1.., "distance": float, "label": .. or None, "text": .. or None, "row": index in the bank}.
        Fewer than k when the bank holds fewer rows."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        q_all = self._transform(_check_rows(x, "x", self.n_features))  # (N, D)
        m = self.n_rows
        k = min(int(k), m)
        n_candidates = min(m, k + _EXTRA_CANDIDATES)
        # rows per block: the (B, M) distances and the (B, C, D) re-measured differences both stay small
        chunk = max(1, min(NEAREST_CHUNK_VALUES // m, NEAREST_CHUNK_VALUES // (n_candidates * self.n_features)))
        out: list[list[dict]] = []
        for start in range(0, q_all.shape[0], chunk):
            q = q_all[start : start + chunk]  # (B, D)
            cross = q @ self._bank.T  # (B, M)
            if self.metric == EUCLIDEAN:
                approx = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * cross + self._bank_sq[None, :]
            else:
                approx = -cross
            if n_candidates < m:
                candidates = np.argpartition(approx, n_candidates - 1, axis=1)[:, :n_candidates]  # (B, C)
            else:
                candidates = np.broadcast_to(np.arange(m), (q.shape[0], m))
            distances = np.maximum(self._exact(q, candidates), 0.0)  # (B, C)
            for i in range(q.shape[0]):
                order = np.lexsort((candidates[i], distances[i]))[:k]  # by distance, then stored row
                out.append([self._entry(rank, int(candidates[i][j]), float(distances[i][j]))
                            for rank, j in enumerate(order, start=1)])
        return out

    def _entry(self, rank: int, row: int, distance: float) -> dict:
        return {
            "rank": rank,
            "distance": distance,
            "label": None if self.labels is None else self.labels[row],
            "text": None if self.texts is None else self.texts[row],
            "row": row,
        }


# --- Langevin pictures of what the model considers in-distribution ---------------------------------------

PICTURE_FEATURE_PREFIX = "pixel_"


def image_shape(feature_names: Sequence[str] | None) -> tuple[int, int] | None:
    """(s, s) when the features are the pixels of a square image, named pixel_0 ... pixel_{s*s-1} in
    order (the demo's digits: 8x8); None otherwise."""
    if not feature_names:
        return None
    n = len(feature_names)
    side = math.isqrt(n)
    if side < 2 or side * side != n:
        return None
    if list(feature_names) != [f"{PICTURE_FEATURE_PREFIX}{i}" for i in range(n)]:
        return None
    return side, side


def raw_space_energy(detector):
    """A torch function rows (B, D) -> energies (B,) on raw features, differentiable in its input, the
    same energies `detector.score` gives (up to float32); None for a detector that has none
    (a composition with a member of another kind, or a kind this function does not know)."""
    import torch

    from ebm_core.detectors import ComposedDetector, KernelDensityDetector
    from ebm_core.detectors.trained import TrainedEnergyDetector

    if isinstance(detector, TrainedEnergyDetector):
        mean = torch.as_tensor(detector.mean_, dtype=torch.float32)
        scale = torch.as_tensor(detector.scale_, dtype=torch.float32)
        energy = detector.energy_
        return lambda x: energy((x - mean) / scale)
    if isinstance(detector, KernelDensityDetector):
        return detector.energy_
    if isinstance(detector, ComposedDetector):
        members = [(float(w), raw_space_energy(member)) for w, member in detector.members]
        if any(f is None for _, f in members):
            return None
        return lambda x: sum(w * f(x) for w, f in members)
    return None


def langevin_pictures(
    detector,
    x_train: np.ndarray,
    feature_names: Sequence[str] | None,
    n_samples: int = 16,
    seed: int = 0,
    n_steps: int = 200,
    step_size: float = 0.05,
    noise_scale: float = 0.1,
    value_range: tuple[float, float] | None = None,
) -> dict[str, Any] | None:
    """Langevin samples from the detector's energy, for the report's pictures; None when the features
    are not a square image (nothing to draw).

    The chains run in the standardised space of the training rows (z = (x - mean) / std, the
    `save_neighbour_bank` rule, which is the space `EnergyDetector` reads when fitted on the same rows):
    they start from uniform noise over the pixel range (`value_range`, else the training rows' range),
    take `n_steps` steps of `LangevinSampler(step_size, noise_scale, grad_clip=1)` on
    z -> E(mean + std * z), seeded by `seed`, and are mapped back to pixels. A detector without a
    differentiable energy gives a dict with no samples and a `note` saying why. Also returned: as many
    training images (the first rows of a seeded permutation), and the energies of both."""
    import torch

    from ebm_core.errors import NonFiniteError
    from ebm_core.samplers.langevin import LangevinSampler

    shape = image_shape(feature_names)
    if shape is None:
        return None
    x_train = _check_rows(x_train, "x_train", shape[0] * shape[1])
    rng = np.random.default_rng(seed)
    shown = x_train[rng.permutation(x_train.shape[0])[:n_samples]]
    low, high = value_range if value_range is not None else (float(x_train.min()), float(x_train.max()))
    result: dict[str, Any] = {
        "image_shape": list(shape),
        "value_range": [float(low), float(high)],
        "training_examples": shown.tolist(),
        "training_energies": [float(e) for e in detector.score(shown)],
        "samples": [],
        "sample_energies": [],
        "sampler": None,
        "note": None,
    }
    energy = raw_space_energy(detector)
    if energy is None:
        result["note"] = (
            f"no Langevin samples: the {getattr(detector, 'kind', type(detector).__name__)} detector has no "
            "differentiable energy of its input"
        )
        return result
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    scale = np.where(std < MIN_FEATURE_SCALE, 1.0, std)
    mean_t, scale_t = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    start = low + (high - low) * torch.rand((n_samples, x_train.shape[1]), generator=generator)  # (n, D) pixels
    sampler = LangevinSampler(step_size=step_size, noise_scale=noise_scale, n_steps=n_steps, grad_clip=1.0)
    try:
        output = sampler.sample(lambda z: energy(mean_t + scale_t * z), (start - mean_t) / scale_t, generator)
    except NonFiniteError as error:
        result["note"] = f"no Langevin samples: the chains diverged ({error})"
        return result
    samples = (output.samples.double().numpy() * scale) + mean  # (n, D) pixels
    result.update(
        samples=samples.tolist(),
        sample_energies=[float(e) for e in detector.score(samples)],
        sampler={**sampler.to_dict(), "start": "uniform noise over the value range", "seed": int(seed),
                 "space": "standardised by the training rows' mean and std"},
    )
    return result
