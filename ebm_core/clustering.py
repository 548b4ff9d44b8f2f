"""Spherical k-means: clusters of directions (cosine similarity), for pseudo-labels when a detector
that learns from classes is given no labels. Seeded by an explicit numpy generator; imports numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from ebm_core.errors import ShapeError


def auto_n_clusters(n_rows: int) -> int:
    """sqrt(n / 2) clusters (a common rule of thumb), at least 2 and at most 200."""
    return int(min(200, max(2, round(math.sqrt(n_rows / 2)))))


def spherical_kmeans(x: np.ndarray, n_clusters: int, seed: int = 0, n_iter: int = 30) -> np.ndarray:
    """Cluster index (N,) of each row of x (N, D) by cosine similarity to unit centroids.

    k-means++ seeding on cosine distance, then Lloyd iterations until no row changes cluster (or
    n_iter). An emptied cluster is restarted at the row worst served by its centroid."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"x must have shape (N, D), got {x.shape}")
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be in [1, {n}] for {n} rows, got {n_clusters}")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    centres = [unit[rng.integers(n)]]
    closest = 1.0 - unit @ centres[0]  # cosine distance to the nearest centre so far
    for _ in range(1, n_clusters):
        weights = np.maximum(closest, 0.0) ** 2
        total = weights.sum()
        index = rng.choice(n, p=weights / total) if total > 0 else rng.integers(n)
        centres.append(unit[index])
        closest = np.minimum(closest, 1.0 - unit @ unit[index])
    centres = np.stack(centres)  # (K, D)
    assignment = np.full(n, -1)
    for _ in range(n_iter):
        similarity = unit @ centres.T  # (N, K)
        new_assignment = similarity.argmax(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for k in range(n_clusters):
            members = unit[assignment == k]
            if len(members) == 0:
                worst = int(similarity[np.arange(n), assignment].argmin())
                centres[k] = unit[worst]
                assignment[worst] = k
                continue
            mean = members.sum(axis=0)
            centres[k] = mean / max(np.linalg.norm(mean), 1e-12)
    return assignment
