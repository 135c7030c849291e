from __future__ import annotations

import numpy as np
import pytest

from dinomask.errors import InvalidReferenceError, ReferenceMismatchError
from dinomask.preprocess import InputGeometry
from dinomask.reference import Reference, ReferenceSettings, detect_background, foreground_from_painted
from tests.helpers import BLUE, GREEN, RED, make_colour_backbone, reference_on_black

SETTINGS = ReferenceSettings(geometry=InputGeometry(140))


def test_detects_black_white_and_transparent_backgrounds():
    black = reference_on_black()
    white = black.copy()
    white[black.max(axis=2) == 0] = 255
    rgba = np.concatenate([black, np.where(black.max(axis=2, keepdims=True) > 0, 255, 0).astype(np.uint8)], axis=2)
    rgba[..., :3][rgba[..., 3] == 0] = 123  # what lies under transparency is irrelevant
    assert detect_background(black) == "black"
    assert detect_background(white) == "white"
    assert detect_background(rgba) == "transparent"
    with pytest.raises(InvalidReferenceError, match="could not tell"):
        detect_background(np.full((20, 20, 3), 128, np.uint8))


def test_dark_pixels_inside_the_object_stay_object():
    image = reference_on_black()
    image[60:80, 60:80] = 0  # a black hole inside the red object, not touching the border
    mask = foreground_from_painted(image, "black")
    assert mask[70, 70]
    assert not mask[0, 0]


def test_patch_mean_prototype_is_the_object_colour(colour_backbone):
    ref = Reference.from_images(colour_backbone, [reference_on_black()], settings=SETTINGS)
    # 140 px -> 10 x 10 grid; the object spans cells 2.5..7.5: 16 full cells, 16 half
    # cells on the sides (coverage 0.5 counts), and 4 quarter-covered corners that do not
    assert len(ref.foreground) == 32
    (red,) = Reference.from_images(
        colour_backbone, [np.full((140, 140, 3), RED, np.uint8)], [np.ones((140, 140), bool)], settings=SETTINGS
    ).prototypes("patch-mean")
    assert float(ref.prototypes("patch-mean")[0] @ red) > 0.9
    assert ref.background.shape == (0, 3)  # painted background tells nothing about scenes


def test_cls_prototype_is_the_cls_of_the_black_painted_photo(colour_backbone):
    ref = Reference.from_images(colour_backbone, [reference_on_black()], settings=SETTINGS)
    # the colour model's CLS is the mean patch: a blend of red and black, not pure red
    cls = ref.prototypes("cls")[0]
    assert cls.shape == (3,)
    assert 0.5 < float(cls @ ref.prototypes("patch-mean")[0]) < 0.9999


def test_kmeans_keeps_two_colours_apart(colour_backbone):
    image = reference_on_black()
    image[35:70, 35:105] = GREEN  # top half of the object green, bottom half red
    ref = Reference.from_images(colour_backbone, [image], settings=SETTINGS)
    protos = ref.prototypes("kmeans", k=2)
    assert protos.shape == (2, 3)
    assert float(protos[0] @ protos[1]) < 0.5
    assert ref.prototypes("patch-mean").shape == (1, 3)
    with pytest.raises(ValueError, match="prototype mode"):
        ref.prototypes("median")


def test_several_images_pool_their_patches_and_cls(colour_backbone):
    one = Reference.from_images(colour_backbone, [reference_on_black()], settings=SETTINGS)
    two = Reference.from_images(colour_backbone, [reference_on_black(), reference_on_black(colour=GREEN)], settings=SETTINGS)
    assert len(two.foreground) == 2 * len(one.foreground)
    assert two.cls.shape == (2, 3)
    merged = Reference.merge([one, one])
    assert len(merged.foreground) == 2 * len(one.foreground)


def test_photo_with_mask_keeps_scene_background_patches(colour_backbone):
    scene = np.zeros((140, 140, 3), np.uint8)
    scene[:] = BLUE
    scene[35:105, 35:105] = RED
    mask = np.zeros((140, 140), np.uint8)
    mask[35:105, 35:105] = 255
    ref = Reference.from_images(colour_backbone, [scene], [mask], settings=SETTINGS)
    assert len(ref.background) > 0
    blue_feature = ref.background[0]
    assert float(blue_feature @ ref.prototypes("patch-mean")[0]) < 0


def test_all_background_is_a_clear_error(colour_backbone):
    with pytest.raises(InvalidReferenceError, match="no object left"):
        Reference.from_images(colour_backbone, [np.zeros((140, 140, 3), np.uint8)], settings=ReferenceSettings(background="black"))
    with pytest.raises(InvalidReferenceError, match="no object left"):
        Reference.from_images(colour_backbone, [np.full((140, 140, 3), 50, np.uint8)], [np.zeros((140, 140), np.uint8)])


def test_object_smaller_than_a_patch_is_a_clear_error(colour_backbone):
    image = np.zeros((140, 140, 3), np.uint8)
    image[70:75, 70:75] = RED
    with pytest.raises(InvalidReferenceError, match="smaller than one patch"):
        Reference.from_images(colour_backbone, [image], settings=SETTINGS)


def test_mask_count_and_empty_list_are_checked(colour_backbone):
    with pytest.raises(InvalidReferenceError, match="one mask per image"):
        Reference.from_images(colour_backbone, [reference_on_black()], [])
    with pytest.raises(InvalidReferenceError, match="at least one reference image"):
        Reference.from_images(colour_backbone, [])


def test_save_load_round_trip_and_backbone_check(colour_backbone, tmp_path):
    ref = Reference.from_images(colour_backbone, [reference_on_black()], settings=SETTINGS, label="mug")
    path = ref.save(tmp_path / "ref.npz")
    loaded = Reference.load(path, colour_backbone.spec)
    assert loaded.label == "mug"
    np.testing.assert_array_equal(loaded.foreground, ref.foreground)
    assert loaded.settings == ref.settings
    with pytest.raises(FileExistsError):
        ref.save(path)
    other = make_colour_backbone(fingerprint="other-weights")
    with pytest.raises(ReferenceMismatchError, match="made with backbone"):
        Reference.load(path, other.spec)


def test_loading_a_file_that_is_not_a_reference(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(InvalidReferenceError, match="not a dinomask reference"):
        Reference.load(tmp_path / "x.npz")
    with pytest.raises(InvalidReferenceError, match="no reference file"):
        Reference.load(tmp_path / "missing.npz")
