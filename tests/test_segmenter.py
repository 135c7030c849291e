from __future__ import annotations

import numpy as np
import pytest

from dinomask.errors import ReferenceMismatchError
from dinomask.postprocess import TemporalSettings
from dinomask.preprocess import InputGeometry
from dinomask.reference import Reference, ReferenceSettings
from dinomask.segmenter import Segmenter, SegmenterConfig
from tests.helpers import BLUE, GREEN, RED, canvas, cell_box, make_colour_backbone, reference_on_black

SIZES = [(518, 518), (480, 854), (854, 480), (300, 700), (97, 211), (1080, 1920)]
GEOMETRIES = [InputGeometry(518), InputGeometry(518, keep_aspect=False), InputGeometry(224), InputGeometry(140)]


@pytest.fixture
def red_reference(colour_backbone):
    # the object fills most of the photo, so its CLS (the mean patch here) is mostly red
    photo = reference_on_black(margin=14)
    return Reference.from_images(colour_backbone, [photo], settings=ReferenceSettings(geometry=InputGeometry(140)))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g.resolution}{'' if g.keep_aspect else 'sq'}")
@pytest.mark.parametrize("method", ["paper", "dinomask"])
def test_planted_patches_come_out_exactly_where_they_were_planted(colour_backbone, red_reference, size, geometry, method):
    height, width = size
    grid = geometry.grid(height, width, 14)
    rows = slice(grid[0] // 4, grid[0] // 4 + max(1, grid[0] // 3))
    cols = slice(grid[1] // 2, grid[1] // 2 + max(1, grid[1] // 4))
    y0, y1, x0, x1 = cell_box(height, width, grid, rows, cols)
    frame = canvas(height, width, BLUE)
    frame[y0:y1, x0:x1] = RED
    config = SegmenterConfig.preset(method).replace(geometry=geometry, upsample="nearest")
    result = Segmenter(colour_backbone, red_reference, config).predict(frame)
    expected = np.zeros(grid, bool)
    expected[rows, cols] = True
    assert result.grid == grid
    assert result.similarity.shape == grid
    np.testing.assert_array_equal(result.coarse_mask, expected)
    assert result.mask.shape == (height, width)
    truth = np.zeros((height, width), bool)
    truth[y0:y1, x0:x1] = True
    assert np.mean(result.mask != truth) < 0.01  # only rounding at block edges
    assert result.mask[(y0 + y1) // 2, (x0 + x1) // 2]


def test_518_square_input_gives_a_37_by_37_grid(colour_backbone, red_reference):
    result = Segmenter(colour_backbone, red_reference, method="paper").predict(canvas(518, 518))
    assert result.grid == (37, 37)
    assert result.rule == "0.5"
    assert result.threshold == 0.5


def test_numpy_bgr_pil_and_path_frames_give_the_same_result(colour_backbone, red_reference, tmp_path):
    from PIL import Image

    frame = canvas(140, 280, BLUE)
    frame[28:84, 140:196] = RED
    segmenter = Segmenter(colour_backbone, red_reference, method="paper")
    Image.fromarray(frame).save(tmp_path / "f.png")
    results = [
        segmenter.predict(frame),
        segmenter.predict(np.ascontiguousarray(frame[:, :, ::-1]), color="bgr"),
        segmenter.predict(Image.fromarray(frame)),
        segmenter.predict(tmp_path / "f.png"),
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(other.mask, results[0].mask)
    assert results[0].mask.any()
    wrong = segmenter.predict(np.ascontiguousarray(frame[:, :, ::-1]), color="rgb")
    assert not np.array_equal(wrong.mask, results[0].mask)  # the colour order matters


def test_threshold_override_and_rules(colour_backbone, red_reference):
    frame = canvas(140, 140, BLUE)
    frame[:70] = RED
    assert Segmenter(colour_backbone, red_reference, method="paper", threshold=0.99).predict(frame).threshold == 0.99
    otsu = Segmenter(colour_backbone, red_reference, method="paper", threshold="otsu").predict(frame)
    assert otsu.rule == "otsu"
    assert otsu.coarse_mask[:18].all() and not otsu.coarse_mask[19:].any()  # 37 rows, top half red
    relative = Segmenter(colour_backbone, red_reference, method="paper", threshold="relative:0.9").predict(frame)
    assert relative.rule == "relative:0.9"
    assert relative.threshold == pytest.approx(0.9 * relative.similarity.max())
    with pytest.raises(ValueError, match="threshold must be"):
        SegmenterConfig(threshold="high")
    with pytest.raises(ValueError, match="needs background prototypes"):
        SegmenterConfig(threshold="fg-vs-bg", background="none")


def test_batch_predict_matches_single_predict(colour_backbone, red_reference):
    frames = [canvas(140, 140, BLUE), canvas(140, 140, RED), canvas(70, 210, RED)]
    segmenter = Segmenter(colour_backbone, red_reference, method="paper")
    batch = segmenter.predict_batch(frames)
    for frame, result in zip(frames, batch):
        np.testing.assert_array_equal(result.mask, segmenter.predict(frame).mask)
    assert set(segmenter.last_timings) == {"preprocess", "backbone", "postprocess"}


def test_reference_from_another_backbone_is_refused(red_reference):
    with pytest.raises(ReferenceMismatchError):
        Segmenter(make_colour_backbone("different"), red_reference)


def test_several_objects_give_a_label_map(colour_backbone):
    settings = ReferenceSettings(geometry=InputGeometry(140))
    red = Reference.from_images(colour_backbone, [reference_on_black()], settings=settings, label="red")
    green = Reference.from_images(colour_backbone, [reference_on_black(colour=GREEN)], settings=settings, label="green")
    frame = canvas(140, 280, BLUE)
    frame[:, :98] = RED
    frame[:, 182:] = GREEN
    config = SegmenterConfig.preset("paper").replace(prototype="patch-mean", geometry=InputGeometry(140))
    result = Segmenter(colour_backbone, [red, green], config).predict(frame)
    assert result.object_names == ("red", "green")
    assert result.labels[70, 10] == 1
    assert result.labels[70, 270] == 2
    assert result.labels[70, 140] == 0
    np.testing.assert_array_equal(result.mask, result.labels > 0)



def test_a_carried_mask_wider_than_the_carried_labels_keeps_each_object_its_own_rim(colour_backbone):
    """A carried frame's mask is its score > 0 upsampled, each object's label share is carried
    apart: where the score reaches past the shares (a grid's score is coarser than the labels), the
    rim belongs to the nearest object, never all to object 1."""
    settings = ReferenceSettings(geometry=InputGeometry(140))
    red = Reference.from_images(colour_backbone, [reference_on_black()], settings=settings, label="red")
    green = Reference.from_images(colour_backbone, [reference_on_black(colour=GREEN)], settings=settings, label="green")
    segmenter = Segmenter(colour_backbone, [red, green], SegmenterConfig.preset("dinomask"))
    image = canvas(140, 280, BLUE)
    score = np.full((10, 20), -1.0, np.float32)  # a 14 px grid: objects 3 x 3 patches each
    score[3:6, 2:5] = score[3:6, 14:17] = 1.0
    shares = np.zeros((2, 140, 280), np.float32)  # the labels, a patch's rim inside the grid's squares
    shares[0, 50:76, 36:62] = 1.0
    shares[1, 50:76, 204:230] = 1.0
    result = segmenter.carried_result(image, [score, score, *shares])
    rim = result.mask & (shares.max(axis=0) == 0)
    assert rim[:, 140:].sum() > 100  # object 2 has a rim no share reaches
    assert (result.labels[:, 140:][result.mask[:, 140:]] == 2).all()
    assert (result.labels[:, :140][result.mask[:, :140]] == 1).all()

def test_real_tiny_dinov2_on_a_davis_frame(tiny_backbone, davis):
    ref = Reference.from_images(
        tiny_backbone, [davis / "JPEGImages/480p/dog/00000.jpg"], [davis / "Annotations/480p/dog/00000.png"]
    )
    for method in ("paper", "dinomask"):
        result = Segmenter(tiny_backbone, ref, method=method).predict(davis / "JPEGImages/480p/dog/00004.jpg")
        assert result.mask.shape == (480, 854)
        assert result.grid == ((37, 37) if method == "paper" else (28, 50))  # token budget 1,400 at 16:9
        assert np.isfinite(result.similarity).all()


def test_temporal_state_resets_between_videos(colour_backbone, red_reference):
    config = SegmenterConfig.preset("paper").replace(temporal=TemporalSettings(alpha=0.9), geometry=InputGeometry(140))
    segmenter = Segmenter(colour_backbone, red_reference, config)
    segmenter.predict(canvas(140, 140, RED))
    segmenter.reset()
    assert segmenter.predict(canvas(140, 140, BLUE)).scene_cut


def run_moving_square(segmenter: Segmenter, steps: int, speed: int) -> list:
    """A red square moving ``speed`` px right per frame on blue (not aligned with the coarse grid):
    ``(result, IoU)`` of each frame."""
    out = []
    for step in range(steps):
        frame = canvas(280, 560, BLUE)
        x0 = 100 + speed * step
        frame[98:182, x0:x0 + 84] = RED
        truth = np.zeros((280, 560), bool)
        truth[98:182, x0:x0 + 84] = True
        result = segmenter.predict(frame)
        out.append((result, (result.mask & truth).sum() / (result.mask | truth).sum()))
    return out


def test_region_of_interest_follows_the_object_with_fewer_patches_and_finer_masks(colour_backbone, red_reference):
    from dinomask.roi import RoiSettings

    def run(enabled: bool):
        config = SegmenterConfig.preset("paper").replace(
            geometry=InputGeometry(140), roi=RoiSettings(enabled=enabled, refresh=4), upsample="nearest")
        segmenter = Segmenter(colour_backbone, red_reference, config)
        return segmenter, run_moving_square(segmenter, 6, 20)

    segmenter, with_roi = run(True)
    _, whole = run(False)
    results = [r for r, _ in with_roi]
    assert results[0].roi is None and results[1].roi is not None     # whole frame first, then a crop
    assert results[5].roi is None                                      # after 4 crops (refresh=4): whole frame again
    for (result, iou), (_, iou_whole) in zip(with_roi[1:5], whole[1:5]):
        assert result.similarity.shape == (10, 20)                     # maps stay on the frame's grid
        assert result.patches < 200                                    # fewer patches than the whole frame
        assert iou > 0.8 and iou > iou_whole                           # more patches on the object: finer mask
    stats = segmenter.roi_stats
    assert stats["frames"] == 6 and stats["roi_frames"] == 4 and stats["patches"] < stats["full_patches"]
    # the object leaves: the crop finds nothing, the next frame is processed whole
    segmenter.predict(canvas(280, 560, BLUE))
    assert segmenter.predict(canvas(280, 560, BLUE)).roi is None


def test_region_of_interest_combines_with_keyframes(colour_backbone, red_reference):
    """Keys are made in the crop around the last (carried) mask, and frames carried by flow keep
    the crop's finer mask (carried at the frame's size, not the coarse grid): on an object not
    aligned with the grid, the frames beat keyframes alone."""
    from dinomask.keyframes import KeyframeSettings
    from dinomask.roi import RoiSettings

    def run(enabled: bool):
        config = SegmenterConfig.preset("paper").replace(
            geometry=InputGeometry(140), roi=RoiSettings(enabled=enabled, refresh=3), upsample="nearest",
            keyframes=KeyframeSettings("every", interval=3))
        segmenter = Segmenter(colour_backbone, red_reference, config)
        return segmenter, run_moving_square(segmenter, 9, 6)

    segmenter, both = run(True)
    _, keys_only = run(False)
    keys = [r for r, _ in both if r.keyframe]
    assert [r.keyframe for r, _ in both] == [True, False, False] * 3
    assert keys[0].roi is None and keys[1].roi is not None and keys[2].roi is not None  # whole frame, then crops
    assert keys[1].patches < keys[0].patches
    ious = [iou for _, iou in both]
    # carried frames keep their crop key's mask at its own resolution (measured: within 0.01)
    for key in (3, 6):
        assert abs(ious[key + 1] - ious[key]) < 0.03 and abs(ious[key + 2] - ious[key]) < 0.03
    # from the first crop key on, finer than keys on the whole frame (measured: 0.825 vs 0.765)
    assert np.mean(ious[3:]) > np.mean([iou for _, iou in keys_only[3:]]) + 0.04
    assert segmenter.keyframe_stats == {"frames": 9, "keyframes": 3}


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (1, 10)])
def test_a_thin_image_runs_within_the_token_budget(tiny_backbone, size):
    """Without the budget a 1 x 5000 px frame asks for 185,000 x 37 patches: the attention
    alone would need hundreds of GB (the server was killed at 21.8 GB)."""
    import resource

    photo = np.zeros((140, 140, 3), np.uint8)
    photo[35:105, 35:105] = (200, 30, 30)
    ref = Reference.from_images(tiny_backbone, [photo])
    frame = np.full((*size, 3), 90, np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = Segmenter(tiny_backbone, ref).predict(frame)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert result.mask.shape == size
    assert result.patches <= 1400
    assert grown_mib < 300
