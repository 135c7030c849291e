from __future__ import annotations

import numpy as np
import pytest

from dinomask.prototypes import best_match, kmeans_prototypes, l2_normalize, mean_prototype


def test_mean_prototype_is_the_normalised_mean():
    rows = l2_normalize(np.array([[1, 0, 0], [0, 1, 0]], np.float32))
    np.testing.assert_allclose(mean_prototype(rows), [[2 ** -0.5, 2 ** -0.5, 0]], atol=1e-6)
    with pytest.raises(ValueError):
        mean_prototype(np.zeros((0, 3), np.float32))


def test_kmeans_finds_separated_clusters_deterministically():
    rng = np.random.default_rng(0)
    a = l2_normalize(np.array([1, 0, 0], np.float32) + 0.05 * rng.standard_normal((30, 3)))
    b = l2_normalize(np.array([0, 0, 1], np.float32) + 0.05 * rng.standard_normal((30, 3)))
    centres = kmeans_prototypes(np.concatenate([a, b]), 2)
    assert centres.shape == (2, 3)
    assert sorted(np.argmax(np.abs(centres), axis=1).tolist()) == [0, 2]
    np.testing.assert_array_equal(centres, kmeans_prototypes(np.concatenate([a, b]), 2))
    assert kmeans_prototypes(a[:2], 5).shape[0] <= 2


def test_best_match_takes_the_max_over_prototypes():
    patches = l2_normalize(np.array([[[1, 0], [0, 1]]], np.float32))
    protos = np.array([[1, 0], [0, 1]], np.float32)
    np.testing.assert_allclose(best_match(patches, protos), [[1, 1]])
    np.testing.assert_allclose(best_match(patches, protos[:1]), [[1, 0]])
    with pytest.raises(ValueError, match="K x 2"):
        best_match(patches, np.zeros((1, 3), np.float32))
