"""Mask R-CNN like for like: of its instances, the one that is the reference object.

torchvision cannot be imported on the build machine (its only wheel for this torch is a CUDA
build: "operator torchvision::nms does not exist"), so the model itself is not run here; the
choice among instances is a function of masks, scores and labels, tested with planted features.
"""

from __future__ import annotations

import numpy as np

from dinomask.evaluate.predictors import COCO_CATEGORIES, choose_instance, maskrcnn_status
from tests.helpers import make_colour_backbone


def _scene():
    image = np.full((84, 140, 3), 128, np.uint8)
    masks = np.zeros((3, 84, 140), bool)
    masks[0, 10:50, 10:50] = True   # red, the most confident
    masks[1, 20:70, 70:120] = True  # blue: the reference object
    masks[2, 60:80, 10:30] = True   # green, below the score floor
    image[masks[0]] = (220, 30, 30)
    image[masks[1]] = (30, 30, 220)
    image[masks[2]] = (30, 220, 30)
    return image, masks, np.array([0.95, 0.8, 0.3]), np.array([18, 17, 1])  # dog, cat, person


def _embed():
    from dinomask.features import extract_features
    from dinomask.preprocess import InputGeometry

    backbone = make_colour_backbone()
    return lambda images: np.stack([f.cls for f in extract_features(backbone, images, InputGeometry(140))])


def test_the_instance_matching_the_reference_wins_over_the_most_confident():
    image, masks, scores, labels = _scene()
    embed = _embed()
    reference_image = np.zeros((84, 84, 3), np.uint8)
    reference_image[20:64, 20:64] = (30, 30, 220)  # a blue object painted on black
    reference = embed([reference_image])[0]
    assert choose_instance(masks, scores, labels, image) == 0  # no reference: the most confident
    assert choose_instance(masks, scores, labels, image, embed=embed, reference=reference) == 1


def test_a_named_category_and_the_score_floor_filter_instances():
    image, masks, scores, labels = _scene()
    assert choose_instance(masks, scores, labels, image, category=COCO_CATEGORIES.index("dog")) == 0
    assert choose_instance(masks, scores, labels, image, category=COCO_CATEGORIES.index("person")) is None  # 0.3 < 0.5
    assert choose_instance(masks, scores, labels, image, category=COCO_CATEGORIES.index("person"), min_score=0.2) == 2
    assert choose_instance(masks, np.zeros(3), labels, image) is None


def test_an_unusable_torchvision_is_said_exactly(monkeypatch, tmp_path):
    path, why = maskrcnn_status(tmp_path / "none.pth")
    assert path is None
    assert "torchvision" in why or "not found" in why
