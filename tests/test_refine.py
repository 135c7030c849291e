"""The promptable refiner: prompts from the score, a SamModel loaded strictly, the refiner's mask
in the segmenter (one object, several, keyframes), and its failures named."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dinomask.errors import ModelNotFoundError
from dinomask.keyframes import KeyframeSettings
from dinomask.preprocess import InputGeometry
from dinomask.reference import Reference, ReferenceSettings
from dinomask.refine import Prompts, RefineSettings, SamRefiner, prompts_from_score, random_refiner_dir
from dinomask.segmenter import Segmenter, SegmenterConfig
from tests.helpers import BLUE, RED, canvas, reference_on_black

SAM = RefineSettings(mode="sam")


def planted_score() -> np.ndarray:
    """A 10 x 20 grid: the object in rows 2..5, cols 4..9, with peaks at (3, 5) and (4, 8)."""
    score = np.full((10, 20), -0.5, np.float32)
    score[2:6, 4:10] = 0.1
    score[3, 5], score[4, 8], score[3, 6] = 0.9, 0.8, 0.85  # (3, 6) is next to the best peak
    score[9, 19], score[0, 0] = -0.95, -0.9
    return score


def test_prompts_sit_on_the_best_patches_the_worst_ones_and_the_objects_box():
    prompts = prompts_from_score(planted_score(), (280, 560), RefineSettings(mode="sam", positives=2, negatives=2))
    cell = 28.0
    # positives: the best peak, then the next one at least 2 patches away (not its neighbour (3, 6))
    assert prompts.points[:2].tolist() == [[5.5 * cell, 3.5 * cell], [8.5 * cell, 4.5 * cell]]
    # negatives: the lowest scores, in (x, y) frame pixels
    assert prompts.points[2:].tolist() == [[19.5 * cell, 9.5 * cell], [0.5 * cell, 0.5 * cell]]
    assert prompts.labels.tolist() == [1, 1, 0, 0]
    assert prompts.box.tolist() == [4 * cell, 2 * cell, 10 * cell, 6 * cell]  # x0, y0, x1, y1 of the object's patches


def test_prompts_always_have_the_same_count_so_objects_batch():
    score = np.full((4, 4), -1.0, np.float32)
    score[1, 1] = 0.5  # one object patch: the positives repeat it
    prompts = prompts_from_score(score, (56, 56), SAM)
    assert len(prompts.points) == SAM.positives + SAM.negatives
    assert prompts.labels.tolist() == [1, 1, 1, 0, 0]
    everywhere = prompts_from_score(np.ones((4, 4), np.float32), (56, 56), SAM)  # no background patch at all
    assert len(everywhere.points) == 5 and everywhere.labels.tolist() == [1] * 5


def test_no_object_patch_gives_no_prompts():
    assert prompts_from_score(np.full((5, 5), -0.1, np.float32), (70, 70), SAM) is None


@pytest.mark.parametrize("changes", [{"mode": "crf"}, {"positives": 0}, {"negatives": 17}, {"spacing": -1}])
def test_bad_refine_settings_say_what_was_expected(changes):
    with pytest.raises(ValueError, match="must be"):
        RefineSettings(**changes)


def test_the_refiner_gives_one_mask_per_object_at_the_frame_size(tiny_refiner_dir):
    refiner = SamRefiner.load(tiny_refiner_dir, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (480, 854, 3), dtype=np.uint8)
    prompts = prompts_from_score(planted_score(), (480, 854), SAM)
    masks = refiner.refine(image, [prompts, prompts])
    assert masks.shape == (2, 480, 854) and masks.dtype == bool
    assert np.array_equal(masks[0], masks[1])  # same prompts, same mask
    assert set(refiner.last_timings) == {"encoder", "decoder"}
    assert refiner.refine(image, []).shape == (0, 480, 854)
    other = Prompts(prompts.points[:2], prompts.labels[:2], prompts.box)
    with pytest.raises(ValueError, match="same number of points"):
        refiner.refine(image, [prompts, other])


def test_a_missing_or_foreign_refiner_is_named(tmp_path, tiny_model_dir):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        SamRefiner.load(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="expected a SAM-family refiner.*'dinov2'"):
        SamRefiner.load(tiny_model_dir)


def test_an_oversized_refiner_config_is_refused_before_it_is_built(tmp_path, tiny_refiner_dir):
    import shutil

    folder = tmp_path / "huge"
    shutil.copytree(tiny_refiner_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 10_000
    (folder / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="num_hidden_layers must be a whole number in 1..64, got 10000"):
        SamRefiner.load(folder)
    assert time.perf_counter() - started < 60  # generous and load-proof: building 10,000 layers takes many minutes


def test_a_huge_preprocessor_config_is_refused_unread(tmp_path, tiny_refiner_dir):
    import shutil

    folder = tmp_path / "padded"
    shutil.copytree(tiny_refiner_dir, folder)
    (folder / "preprocessor_config.json").write_text('{"size": {"longest_edge": 256}, "pad": "' + "x" * 2_000_000 + '"}')
    with pytest.raises(ModelNotFoundError, match="preprocessor_config.json is 2000.* bytes; a model config is a few KB"):
        SamRefiner.load(folder)


def test_a_refiner_missing_weights_is_refused_not_left_random(tmp_path, tiny_refiner_dir):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(tiny_refiner_dir, folder)
    weights = load_file(folder / "model.safetensors")
    dropped = next(k for k in weights if "mask_decoder" in k)
    del weights[dropped]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelNotFoundError, match="weights missing"):
        SamRefiner.load(folder)


class PlantedRefiner:
    """Stands in for SAM: returns the same planted mask for every object, and records its prompts."""

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.calls: list[list[Prompts]] = []

    def refine(self, image, prompts):
        self.calls.append(prompts)
        return np.stack([self.mask] * len(prompts))


@pytest.fixture
def red_reference(colour_backbone):
    return Reference.from_images(colour_backbone, [reference_on_black(margin=14)],
                                 settings=ReferenceSettings(geometry=InputGeometry(140)))


def red_square(x0: int = 100) -> np.ndarray:
    frame = canvas(280, 560, BLUE)
    frame[98:182, x0:x0 + 84] = RED
    return frame


def test_the_mask_is_the_refiners_prompted_by_the_score(colour_backbone, red_reference):
    planted = np.zeros((280, 560), bool)
    planted[101:179, 103:181] = True  # finer than any 28 px patch
    refiner = PlantedRefiner(planted)
    config = SegmenterConfig.preset("paper").replace(geometry=InputGeometry(140))
    segmenter = Segmenter(colour_backbone, red_reference, config, refiner=refiner)
    assert segmenter.config.refine.mode == "sam"  # a refiner switches refinement on
    result = segmenter.predict(red_square())
    assert result.refined and np.array_equal(result.mask, planted) and np.array_equal(result.labels, planted)
    (prompts,) = refiner.calls[0]
    positives = prompts.points[prompts.labels == 1]
    assert ((positives[:, 0] > 98) & (positives[:, 0] < 186) & (positives[:, 1] > 96) & (positives[:, 1] < 184)).all()
    negatives = prompts.points[prompts.labels == 0]
    assert not ((negatives[:, 0] > 98) & (negatives[:, 0] < 186) & (negatives[:, 1] > 96) & (negatives[:, 1] < 184)).any()
    # nothing of the object in the frame: no refiner call, an empty mask
    empty = segmenter.predict(canvas(280, 560, BLUE))
    assert len(refiner.calls) == 1 and not empty.mask.any() and empty.refined


def test_several_objects_take_their_own_refined_masks(colour_backbone):
    green = (40, 200, 40)
    refs = [Reference.from_images(colour_backbone, [reference_on_black(margin=14, colour=c)], label=name,
                                  settings=ReferenceSettings(geometry=InputGeometry(140)))
            for name, c in (("red", RED), ("green", green))]
    frame = canvas(280, 560, BLUE)
    frame[56:140, 56:140] = RED
    frame[140:224, 364:448] = green

    class PerObject:
        def refine(self, image, prompts):  # each object's mask: the box SAM was given, shrunk by 5 px
            out = np.zeros((len(prompts), *image.shape[:2]), bool)
            for i, p in enumerate(prompts):
                x0, y0, x1, y1 = p.box.astype(int)
                out[i, y0 + 5:y1 - 5, x0 + 5:x1 - 5] = True
            return out

    config = SegmenterConfig.preset("paper").replace(geometry=InputGeometry(140))
    result = Segmenter(colour_backbone, refs, config, refiner=PerObject()).predict(frame)
    assert result.refined
    assert (result.labels[80:120, 80:120] == 1).all() and (result.labels[160:200, 380:430] == 2).all()
    assert (result.labels[:50] == 0).all()


def test_refine_sam_without_a_refiner_says_how_to_give_one(colour_backbone, red_reference):
    with pytest.raises(ValueError, match="needs a refiner"):
        Segmenter(colour_backbone, red_reference, SegmenterConfig(refine=SAM))


def test_frames_carried_by_flow_keep_the_refined_mask(colour_backbone, red_reference):
    """Keyframes carry the refiner's mask (at the frame's size), not the coarse grid score."""
    planted = np.zeros((280, 560), bool)
    planted[101:179, 103:181] = True
    refiner = PlantedRefiner(planted)
    config = SegmenterConfig.preset("paper").replace(geometry=InputGeometry(140), keyframes=KeyframeSettings("every", interval=5))
    segmenter = Segmenter(colour_backbone, red_reference, config, refiner=refiner)
    key = segmenter.predict(red_square())
    carried = segmenter.predict(red_square())  # the same frame again: flow is zero
    assert key.keyframe and not carried.keyframe and len(refiner.calls) == 1
    assert (carried.mask & planted).sum() / (carried.mask | planted).sum() > 0.95


def test_a_true_shape_sam_refines_a_davis_frame_end_to_end(tmp_path, tiny_backbone, davis):
    """SAM ViT-B's true shape (94 M parameters, 1024 px input) at random weights, through the
    segmenter on an 854 x 480 frame: plumbing, sizes and time (the figure is printed, not asserted)."""
    from dinomask.preprocess import load_image, load_mask

    refiner = SamRefiner.load(random_refiner_dir(tmp_path / "sam-vit-base", "sam-vit-base"), device="cpu")
    assert refiner.model.config.vision_config.hidden_size == 768 and refiner.model.config.vision_config.num_hidden_layers == 12
    assert sum(p.numel() for p in refiner.model.parameters()) > 90_000_000
    image = load_image(davis / "JPEGImages/480p/dog/00000.jpg")
    reference = Reference.from_images(tiny_backbone, [image], [load_mask(davis / "Annotations/480p/dog/00000.png")])
    segmenter = Segmenter(tiny_backbone, reference, refiner=refiner)
    result = segmenter.predict(load_image(davis / "JPEGImages/480p/dog/00004.jpg"))
    assert result.refined and result.mask.shape == (480, 854)
    print(f"SAM ViT-B (random weights) on 854x480: encoder {1000 * refiner.last_timings['encoder']:.0f} ms, "
          f"decoder {1000 * refiner.last_timings['decoder']:.0f} ms, refine step {segmenter.last_refine_ms:.0f} ms")
