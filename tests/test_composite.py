from __future__ import annotations

import numpy as np
import pytest

from dinomask.composite import Background, composite, heatmap, label_overlay, mask_image, render

IMAGE = np.full((4, 6, 3), 100, np.uint8)
MASK = np.zeros((4, 6), bool)
MASK[1:3, 2:5] = True


@pytest.mark.parametrize(
    "background,fill",
    [("black", [0, 0, 0]), ("white", [255, 255, 255]), ("#ff8000", [255, 128, 0]), ("10,20,30", [10, 20, 30])],
)
def test_colour_backgrounds_replace_only_the_background(background, fill):
    out = composite(IMAGE, MASK, background)
    assert out.shape == (4, 6, 3)
    assert out[0, 0].tolist() == fill
    assert out[1, 2].tolist() == [100, 100, 100]


def test_transparent_gives_rgba_with_the_mask_as_alpha():
    out = composite(IMAGE, MASK, "transparent")
    assert out.shape == (4, 6, 4)
    np.testing.assert_array_equal(out[:, :, 3] == 255, MASK)


def test_blur_keeps_the_object_sharp():
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    out = composite(image, mask, "blur")
    np.testing.assert_array_equal(out[mask], image[mask])
    assert out[~mask].std() < image[~mask].std()


def test_bad_background_and_shapes_are_refused():
    with pytest.raises(ValueError, match="background must be"):
        Background.parse("purple")
    with pytest.raises(ValueError, match="does not match"):
        composite(IMAGE, MASK[:2], "black")
    with pytest.raises(ValueError, match="output kind"):
        render(IMAGE, MASK, np.zeros((2, 2)), MASK.astype(np.uint8), kind="sketch")


def test_mask_heatmap_and_overlay_outputs():
    assert mask_image(MASK).max() == 255 and mask_image(MASK).dtype == np.uint8
    hot = heatmap(IMAGE, np.array([[0.0, 1.0]], np.float32))
    assert hot.shape == IMAGE.shape
    assert hot[0, 5, 0] > hot[0, 0, 0]  # high similarity is red
    labels = MASK.astype(np.uint8) * 2
    over = label_overlay(IMAGE, labels)
    assert over[0, 0].tolist() == [100, 100, 100]
    assert over[1, 2].tolist() != [100, 100, 100]
