from __future__ import annotations

import numpy as np
import pytest

from dinomask.evaluate.metrics import ConfusionMatrix, score_mask


def test_empty_prediction_against_an_object():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True
    s = score_mask(np.zeros((4, 4), bool), truth)
    assert s.iou == 0.0
    assert s.miou == pytest.approx((0.0 + 12 / 16) / 2)
    assert s.pixel_accuracy == pytest.approx(12 / 16)
    assert s.confusion.tolist() == [[12, 0], [4, 0]]


def test_empty_ground_truth_and_empty_prediction_is_perfect():
    s = score_mask(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert (s.iou, s.miou, s.pixel_accuracy) == (1.0, 1.0, 1.0)


def test_empty_ground_truth_with_a_false_positive():
    prediction = np.zeros((2, 2), bool)
    prediction[0, 0] = True
    s = score_mask(prediction, np.zeros((2, 2), bool))
    assert s.iou == 0.0
    assert s.miou == pytest.approx((0 + 3 / 4) / 2)


def test_full_frame_prediction():
    truth = np.zeros((2, 5), bool)
    truth[:, :2] = True
    s = score_mask(np.ones((2, 5), bool), truth)
    assert s.iou == pytest.approx(4 / 10)
    assert s.miou == pytest.approx(0.2)  # background IoU is 0
    assert s.pixel_accuracy == pytest.approx(0.4)


def test_partial_overlap():
    p = np.zeros((1, 10), bool)
    t = np.zeros((1, 10), bool)
    p[0, 0:6] = True
    t[0, 3:9] = True
    s = score_mask(p, t)
    assert s.iou == pytest.approx(3 / 9)          # tp 3, union 9
    assert s.miou == pytest.approx((3 / 9 + 1 / 7) / 2)  # background: tn 1, union 7
    assert s.confusion.tolist() == [[1, 3], [3, 3]]


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in size"):
        score_mask(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_confusion_matrix_known_case():
    m = ConfusionMatrix(["a", "b", "c"])
    m.update(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0]))
    assert m.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    out = m.compute()
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["per_class_accuracy"] == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.5})
    assert out["iou"]["b"] == pytest.approx(2 / 3)
    m.reset()
    assert m.matrix.sum() == 0
    assert np.isnan(m.compute()["accuracy"])


def test_confusion_matrix_plot(tmp_path):
    m = ConfusionMatrix(["x", "y"])
    m.update(np.array([0, 1]), np.array([0, 0]))
    path = m.plot(tmp_path / "cm.png", title="t")
    assert path.is_file() and path.stat().st_size > 1000
