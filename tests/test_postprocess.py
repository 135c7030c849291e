"""Each quality mechanism, proven on planted features (issue: better masks than the method)."""

from __future__ import annotations

import numpy as np
import pytest

from dinomask.postprocess import (
    TemporalSettings,
    TemporalSmoother,
    ThresholdRule,
    apply_threshold,
    nearest_object,
    otsu_threshold,
    split_among,
    upsample_score,
)
from dinomask.preprocess import InputGeometry
from dinomask.reference import Reference, ReferenceSettings
from dinomask.segmenter import Segmenter, SegmenterConfig
from tests.helpers import BLUE, RED, canvas

ORANGE = (255, 120, 0)


@pytest.mark.parametrize(
    "text,kind,value",
    [("0.5", "fixed", 0.5), (0.3, "fixed", 0.3), ("otsu", "otsu", 0.0), ("relative:0.8", "relative", 0.8),
     ("fg-vs-bg", "fg-vs-bg", 0.0)],
)
def test_threshold_rules_parse(text, kind, value):
    rule = ThresholdRule.parse(text)
    assert (rule.kind, rule.value) == (kind, value)


@pytest.mark.parametrize("text", ["2", "relative:0", "relative:x", "high"])
def test_bad_thresholds_say_what_is_expected(text):
    with pytest.raises(ValueError):
        ThresholdRule.parse(text)


def test_otsu_splits_two_clusters_and_relative_follows_the_best_match():
    values = np.array([0.1, 0.12, 0.15, 0.8, 0.82, 0.85])
    t = otsu_threshold(values)
    assert 0.15 < t < 0.8
    assert apply_threshold(values, ThresholdRule("relative", 0.5)) == pytest.approx(0.425)
    assert otsu_threshold(np.full(4, 0.3)) == pytest.approx(0.3)


def test_background_prototypes_reject_a_distractor_that_a_fixed_threshold_accepts(colour_backbone):
    # the reference photo: a red object on an orange table, given with its mask
    photo = canvas(140, 140, ORANGE)
    photo[28:112, 28:112] = RED
    mask = np.zeros((140, 140), bool)
    mask[28:112, 28:112] = True
    settings = ReferenceSettings(geometry=InputGeometry(140))
    reference = Reference.from_images(colour_backbone, [photo], [mask], settings=settings)
    # a frame: the red object on the left, a piece of orange table (the distractor) on the right
    frame = canvas(140, 280, BLUE)
    frame[28:112, 14:98] = RED
    frame[28:112, 182:266] = ORANGE
    base = SegmenterConfig(prototype="patch-mean", geometry=InputGeometry(140), upsample="nearest")
    fixed = Segmenter(colour_backbone, reference, base.replace(background="none", threshold="0.5")).predict(frame)
    assert fixed.similarity[5, 16] > 0.5  # orange looks like red to a fixed threshold...
    assert fixed.mask[70, 220]            # ...so it is accepted
    fgbg = Segmenter(colour_backbone, reference, base.replace(background="reference", threshold="auto")).predict(frame)
    assert fgbg.rule == "fg-vs-bg"
    assert not fgbg.mask[70, 220]         # the reference's own background rejects it
    assert fgbg.mask[70, 56]              # and the object stays


def test_frame_background_prototypes_need_no_scene_in_the_reference(colour_backbone):
    photo = canvas(140, 140, (0, 0, 0))
    photo[14:126, 14:126] = RED
    reference = Reference.from_images(colour_backbone, [photo], settings=ReferenceSettings(geometry=InputGeometry(140)))
    frame = canvas(140, 280, BLUE)
    frame[28:112, 14:98] = RED
    config = SegmenterConfig(prototype="patch-mean", background="frame", geometry=InputGeometry(140), upsample="nearest")
    result = Segmenter(colour_backbone, reference, config).predict(frame)
    assert result.rule == "fg-vs-bg"
    assert result.mask[70, 56] and not result.mask[70, 200]


def test_upsample_modes_agree_where_the_score_is_flat():
    score = np.full((3, 4), 0.2, np.float32)
    image = np.zeros((30, 40, 3), np.uint8)
    for mode in ("nearest", "bilinear", "bicubic", "bilateral"):
        assert (upsample_score(score, (30, 40), mode, image) > 0).all()
    with pytest.raises(ValueError, match="bilateral upsampling needs the 30 x 40 frame"):
        upsample_score(score, (30, 40), "bilateral")
    with pytest.raises(ValueError, match="'guided' was removed in 0.2.0: .* scored below bilinear"):
        upsample_score(score, (30, 40), "guided")
    with pytest.raises(ValueError, match="'guided' was removed"):
        SegmenterConfig(upsample="guided")
    with pytest.raises(ValueError, match="upsample must be"):
        upsample_score(score, (30, 40), "cubic")


def disc_scene(size: int = 280, radius: float = 61.3, centre=(133.7, 141.2)):
    """A disc not aligned with the 14 px grid, in orange on blue, its truth, and the truth averaged
    onto the grid minus 0.5 (a perfect patch classifier's score)."""
    from dinomask.preprocess import patch_coverage

    yy, xx = np.mgrid[:size, :size]
    truth = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    image = np.where(truth[..., None], np.array(ORANGE, np.uint8), np.array(BLUE, np.uint8)).astype(np.uint8)
    score = (patch_coverage(truth, (size // 14, size // 14)) - 0.5).astype(np.float32)
    return image, truth, score


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_bicubic_places_the_edge_closer_than_bilinear_and_bilateral_snaps_it_to_the_colour_edge():
    """With a perfect patch classifier (measured: bilinear 0.975, bicubic 0.982, bilateral 0.994)."""
    image, truth, score = disc_scene()
    j = {mode: iou(upsample_score(score, truth.shape, mode, image) > 0, truth)
         for mode in ("nearest", "bilinear", "bicubic", "bilateral")}
    assert j["nearest"] < j["bilinear"] < j["bicubic"] < j["bilateral"]
    assert SegmenterConfig().upsample == "bicubic" and SegmenterConfig.preset("paper").upsample == "nearest"


def test_bilateral_changes_only_the_band_around_the_edge_and_does_no_harm_without_a_colour_edge():
    from dinomask.postprocess import BAND_CELLS

    image, truth, score = disc_scene()
    bicubic = upsample_score(score, truth.shape, "bicubic")
    bilateral = upsample_score(score, truth.shape, "bilateral", image)
    changed = bilateral != bicubic
    distance = np.abs(np.hypot(*(np.mgrid[:280, :280] - np.array([133.7, 141.2])[:, None, None])) - 61.3)
    assert changed.any() and distance[changed].max() < 14 * BAND_CELLS + 14  # only near the edge
    flat = np.full_like(image, 128)  # no colour edge: the filter only smooths
    assert abs(iou(upsample_score(score, truth.shape, "bilateral", flat) > 0, truth) - iou(bicubic > 0, truth)) < 0.01


def test_smoothing_removes_a_one_frame_flicker():
    smoother = TemporalSmoother(TemporalSettings(alpha=0.6, scene_cut=0.8))
    same_scene = np.array([1.0, 0.0])
    good = np.full((2, 2), 0.4, np.float32)   # object patches: score +0.4
    flicker = np.full((2, 2), -0.3, np.float32)  # one bad frame
    masks = []
    for score in (good, good, good, flicker, good):
        smoothed, cut = smoother.update(score, same_scene)
        masks.append(bool((smoothed > 0).all()))
    assert masks == [True] * 5
    raw = [bool((s > 0).all()) for s in (good, good, good, flicker, good)]
    assert raw[3] is False  # without smoothing the object vanishes for a frame


def test_a_scene_change_resets_the_smoothing():
    smoother = TemporalSmoother(TemporalSettings(alpha=0.9, scene_cut=0.8))
    smoother.update(np.full((2, 2), 1.0, np.float32), np.array([1.0, 0.0]))
    smoothed, cut = smoother.update(np.full((2, 2), -1.0, np.float32), np.array([0.0, 1.0]))
    assert cut and smoother.resets == 1
    np.testing.assert_array_equal(smoothed, -1.0)  # no memory of the old scene
    smoothed, cut = smoother.update(np.full((3, 2), 1.0, np.float32), np.array([0.0, 1.0]))
    assert cut  # a new grid size is a new scene too


def test_smoothing_off_passes_scores_through():
    smoother = TemporalSmoother(TemporalSettings(alpha=0.0))
    score = np.arange(4, dtype=np.float32).reshape(2, 2)
    out, cut = smoother.update(score, np.array([1.0]))
    assert out is score and not cut
    with pytest.raises(ValueError):
        TemporalSettings(alpha=1.0)


def _slowly_changing(step: int) -> np.ndarray:
    """A red object whose colour drifts towards orange (light changing), on blue."""
    frame = canvas(140, 140, BLUE)
    frame[28:112, 28:112] = (255, min(255, 12 * step), 0)
    return frame


def test_prototype_adaptation_follows_a_slow_change_and_refuses_a_jump(colour_backbone):
    photo = canvas(140, 140, (0, 0, 0))
    photo[14:126, 14:126] = RED
    reference = Reference.from_images(colour_backbone, [photo], settings=ReferenceSettings(geometry=InputGeometry(140)))
    base = SegmenterConfig(prototype="patch-mean", background="none", threshold="0.9", geometry=InputGeometry(140),
                           upsample="nearest")
    fixed = Segmenter(colour_backbone, reference, base)
    adaptive = Segmenter(colour_backbone, reference, base.replace(temporal=TemporalSettings(adapt=0.5, max_drift=0.5)))
    kept_fixed, kept_adaptive = [], []
    for step in range(12):
        frame = _slowly_changing(step)
        kept_fixed.append(bool(fixed.predict(frame).mask[70, 70]))
        kept_adaptive.append(bool(adaptive.predict(frame).mask[70, 70]))
    assert not kept_fixed[-1]           # the fixed prototype loses the object as its colour drifts
    assert all(kept_adaptive)           # the adapted one follows it
    # a sudden jump to something else is not learnt: the drift guard keeps the prototype near the reference
    guarded = Segmenter(colour_backbone, reference, base.replace(temporal=TemporalSettings(adapt=0.9, max_drift=0.05)))
    jump = canvas(140, 140, BLUE)
    jump[28:112, 28:112] = (255, 150, 0)
    original = guarded._objects[0].prototypes.copy()
    for _ in range(5):
        guarded.predict(jump)
    assert float(guarded._objects[0].prototypes[0] @ original[0]) >= 0.95
    adaptive.reset()
    np.testing.assert_allclose(adaptive._objects[0].prototypes, adaptive._objects[0].original)


@pytest.mark.parametrize("kind", ["painted", "photo+mask"])
def test_the_default_says_no_object_in_a_frame_without_it(colour_backbone, kind):
    """Issue 30: Otsu (a painted photo's rule) splits every frame in two and fg-vs-bg (a photo with a
    mask) only compares with the reference's background, so a frame without the object showed "an
    object". The presence floor (halfway from cosine 0 to the object's own level) says it is not there;
    the object and the look-alike distractor are handled as before."""
    from dinomask.segmenter import presence_floor

    settings = ReferenceSettings(geometry=InputGeometry(140))
    if kind == "painted":
        photo = canvas(140, 140, (0, 0, 0))
        photo[28:112, 28:112] = RED
        reference = Reference.from_images(colour_backbone, [photo], settings=settings)
    else:
        photo = canvas(140, 140, ORANGE)
        photo[28:112, 28:112] = RED
        mask = np.zeros((140, 140), bool)
        mask[28:112, 28:112] = True
        reference = Reference.from_images(colour_backbone, [photo], [mask], settings=settings)
    config = SegmenterConfig.preset("dinomask").replace(geometry=InputGeometry(140), upsample="nearest")
    segmenter = Segmenter(colour_backbone, reference, config)
    empty = canvas(140, 280, BLUE)
    empty[40:100, 30:250] = (120, 120, 120)  # a grey shelf: a second cluster for Otsu to split off
    without = segmenter.predict(empty)
    assert not without.mask.any(), without.rule  # no object in this frame: nothing is shown
    before = Segmenter(colour_backbone, reference, config.replace(presence="none")).predict(empty)
    assert before.mask.any()  # the rule alone showed "an object"
    frame = empty.copy()
    frame[28:112, 14:98] = RED
    found = segmenter.predict(frame)
    assert found.mask[70, 56] and not found.mask[70, 200]  # the object, and nothing else
    if kind == "photo+mask":  # the reference's background still rejects the look-alike
        frame[28:112, 182:266] = ORANGE
        assert not segmenter.predict(frame).mask[70, 220]
    floor = presence_floor(reference, segmenter._objects[0].prototypes, "reference")
    assert 0 < floor <= 0.5  # halfway up to the object's own level (1.0 for a uniform colour)
    assert Segmenter(colour_backbone, reference, method="paper").config.presence == "none"  # the paper as written


def test_a_mask_pixel_no_object_claims_goes_to_the_nearest_object_not_the_first():
    """Two objects; the mask (a coarser grid's, say) reaches past both objects' shares. Its fringe
    around object 2 is object 2's: an argmax over two zero shares would have given it to object 1
    (the pairs' first object then took a rim of the second, and its crop spanned both)."""
    mask = np.zeros((60, 200), bool)
    mask[10:50, 10:50] = mask[10:50, 140:190] = True
    shares = np.zeros((2, 60, 200), np.float32)
    shares[0, 20:40, 20:40] = 1.0
    shares[1, 20:40, 150:180] = 1.0
    labels = split_among(mask, shares)
    assert set(np.unique(labels[mask])) == {1, 2} and not labels[~mask].any()
    assert (labels[10:50, 10:50] == 1).all() and (labels[10:50, 140:190] == 2).all()
    # the same from shares at a quarter of the size (the carried maps): the nearest object is the same
    coarse = shares[:, ::4, ::4]
    np.testing.assert_array_equal(split_among(mask, shares, coarse), labels)
    # where shares overlap the larger wins; with no share anywhere nothing is labelled
    shares[0, 20:40, 150:160] = 2.0
    assert (split_among(mask, shares)[20:40, 150:160] == 1).all()
    assert not split_among(mask, np.zeros_like(shares)).any()


def test_the_nearest_object_map_is_a_voronoi_of_the_claimed_pixels():
    shares = np.zeros((3, 1, 30), np.float32)
    shares[0, 0, 0] = shares[1, 0, 10] = shares[2, 0, 29] = 1.0
    row = nearest_object(shares)[0]
    assert list(row[:5]) == [1] * 5 and list(row[6:15]) == [2] * 9 and list(row[21:]) == [3] * 9
    assert not nearest_object(np.zeros((2, 4, 4), np.float32)).any()
