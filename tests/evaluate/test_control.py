from __future__ import annotations

import numpy as np
import pytest

from dinomask.evaluate.control import ControlModel, mask_centroid, simulate, weighted_centroid


def test_centroids():
    mask = np.zeros((10, 20), bool)
    mask[0:2, 0:4] = True
    np.testing.assert_allclose(mask_centroid(mask), [2 / 20, 1 / 10])
    assert mask_centroid(np.zeros((3, 3), bool)) is None
    sim = np.full((2, 2), -1.0)
    sim[1, 1] = 0.5
    np.testing.assert_allclose(weighted_centroid(sim), [0.75, 0.75])
    assert weighted_centroid(np.full((2, 2), -0.1)) is None


def test_perfect_perception_converges_geometrically():
    target = np.array([0.9, 0.5])
    out = simulate([target] * 6, [target] * 6, ControlModel(gain=0.5))
    # deviation halves every step from 0.4: 0.4, 0.2, 0.1, ...
    np.testing.assert_allclose(out["deviation"], [0.4 * 0.5 ** i for i in range(6)])
    assert out["jitter"] == 0.0 and out["lost"] == 0
    assert out["max"] == pytest.approx(0.4)


def test_flickering_measurement_has_jitter_and_lost_steps_hold_still():
    g = [np.array([0.5, 0.5])] * 4
    m = [np.array([0.6, 0.5]), np.array([0.4, 0.5]), None, np.array([0.6, 0.5])]
    out = simulate(g, m, ControlModel(gain=1.0))
    assert out["lost"] == 1
    assert out["jitter"] == pytest.approx(0.2)
    np.testing.assert_allclose(out["deviation"], [0.0, 0.1, 0.1, 0.1])


def test_gain_is_checked():
    with pytest.raises(ValueError):
        ControlModel(gain=0)
