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


def _block(rows: slice, cols: slice, shape=(8, 8)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows, cols] = True
    return mask


def test_boundary_map_is_davis_seg2bmap_on_a_3x3_block():
    from dinomask.evaluate.metrics import boundary_map

    # DAVIS marks a pixel differing from its east, south or south-east neighbour: the outer
    # ring on the top and left, the block's own pixels on the bottom and right (12 pixels)
    expected = {(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (3, 1), (4, 1), (2, 4), (3, 4), (4, 4), (4, 2), (4, 3)}
    got = set(zip(*np.nonzero(boundary_map(_block(slice(2, 5), slice(2, 5))))))
    assert {(int(r), int(c)) for r, c in got} == expected


def test_boundary_f_by_hand():
    from dinomask.evaluate.metrics import boundary_f

    truth = _block(slice(2, 5), slice(2, 5))
    assert boundary_f(truth, truth) == 1.0
    # shifted 2 px right; tolerance ceil(0.008 * 11.3) = 1 px (a plus-shaped disk):
    # 8 of the 12 predicted boundary pixels lie within 1 px of the true boundary, and 8 of the
    # 12 true ones within 1 px of the predicted: precision = recall = 2/3, F = 2/3
    shifted = _block(slice(2, 5), slice(4, 7))
    assert boundary_f(shifted, truth) == pytest.approx(2 / 3)
    far = _block(slice(2, 5), slice(5, 8))  # 3 px away: only (1,4)/(1,5) and (4,4)/(4,5) meet
    assert boundary_f(far, truth) < boundary_f(shifted, truth)
    empty = np.zeros((8, 8), bool)
    assert boundary_f(empty, truth) == 0.0 and boundary_f(truth, empty) == 0.0
    assert boundary_f(empty, empty) == 1.0
    with pytest.raises(ValueError, match="differ in size"):
        boundary_f(truth, np.zeros((4, 4), bool))


def test_davis_statistics_by_hand():
    from dinomask.evaluate.metrics import davis_statistics

    # 8 frames: bins (DAVIS: round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7) are [0:3], [2:5], [4:6], [5:8]
    stats = davis_statistics([1.0, 1.0, 0.0, 0.0, 0.6, 0.4, 0.2, 0.8])
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["recall"] == pytest.approx(0.5)  # 1, 1, 0.6, 0.8 are above 0.5
    assert stats["decay"] == pytest.approx(2 / 3 - (0.4 + 0.2 + 0.8) / 3)


def test_score_mask_carries_j_f_and_their_mean():
    truth = _block(slice(2, 5), slice(2, 5))
    score = score_mask(_block(slice(2, 5), slice(4, 7)), truth)
    assert score.iou == pytest.approx(3 / 15)  # 3 shared pixels of 15
    assert score.f == pytest.approx(2 / 3) and score.jf == pytest.approx((3 / 15 + 2 / 3) / 2)


def test_a_report_cell_stays_on_one_line_with_its_pipes_escaped():
    from dinomask.evaluate.report import cell
    from tests.helpers import assert_tables_render

    text = cell("u2netp\n(rembg's model) | MIT")
    assert text == "u2netp (rembg's model) \\| MIT"
    assert_tables_render(f"| a | b |\n|---|---|\n| {text} | 1 |\n| x | 2 |\n")
