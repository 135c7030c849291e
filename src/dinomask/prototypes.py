"""Prototype maths on L2-normalised features: pooling, k-means, best-match cosine similarity.

All arrays are float32 numpy; features are rows (``N x C``).
"""

from __future__ import annotations

import numpy as np


def l2_normalize(features: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale rows to unit length; an all-zero row stays zero instead of becoming NaN."""
    norm = np.linalg.norm(features, axis=axis, keepdims=True)
    return (features / np.maximum(norm, 1e-12)).astype(np.float32)


def mean_prototype(features: np.ndarray) -> np.ndarray:
    """``N x C`` unit rows -> ``1 x C``, the normalised mean direction."""
    if len(features) == 0:
        raise ValueError("expected at least one feature row to average, got none")
    return l2_normalize(features.mean(axis=0, keepdims=True))


def kmeans_prototypes(features: np.ndarray, k: int, *, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """Spherical k-means: ``N x C`` unit rows -> ``min(k, N) x C`` unit cluster centres.

    Deterministic for a given ``seed`` (k-means++ initialisation, then Lloyd steps on
    cosine similarity). Empty clusters are dropped.
    """
    if len(features) == 0:
        raise ValueError("expected at least one feature row to cluster, got none")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    features = l2_normalize(features)
    k = min(k, len(features))
    rng = np.random.default_rng(seed)
    centres = [features[rng.integers(len(features))]]
    for _ in range(1, k):
        distance = 1.0 - np.max(features @ np.stack(centres).T, axis=1)
        distance = np.maximum(distance, 0.0)
        total = distance.sum()
        if total <= 1e-12:
            break
        centres.append(features[rng.choice(len(features), p=distance / total)])
    centres = np.stack(centres)
    for _ in range(iterations):
        assign = np.argmax(features @ centres.T, axis=1)
        updated = np.stack(
            [features[assign == c].sum(axis=0) if np.any(assign == c) else np.zeros_like(centres[c])
             for c in range(len(centres))]
        )
        keep = np.linalg.norm(updated, axis=1) > 1e-12
        updated = l2_normalize(updated[keep])
        if updated.shape == centres.shape and np.allclose(updated, centres, atol=1e-6):
            centres = updated
            break
        centres = updated
    return centres.astype(np.float32)


def best_match(patches: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Cosine similarity of each patch to its best-matching prototype.

    Args:
        patches: ``h x w x C`` unit vectors.
        prototypes: ``K x C`` unit vectors.

    Returns:
        ``h x w`` float32 in [-1, 1].
    """
    if prototypes.ndim != 2 or prototypes.shape[1] != patches.shape[-1]:
        raise ValueError(
            f"expected prototypes of shape K x {patches.shape[-1]}, got {prototypes.shape}"
        )
    return np.max(patches @ prototypes.T, axis=-1).astype(np.float32)
