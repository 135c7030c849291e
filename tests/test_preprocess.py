from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinomask.errors import ImageReadError
from dinomask.preprocess import InputGeometry, load_image, load_mask, patch_coverage, resize_to_grid


@pytest.mark.parametrize(
    "geometry,size,grid",
    [
        (InputGeometry(518, keep_aspect=False), (480, 854), (37, 37)),
        (InputGeometry(518), (518, 518), (37, 37)),
        (InputGeometry(518), (480, 854), (37, 66)),
        (InputGeometry(518), (854, 480), (66, 37)),
        (InputGeometry(224), (100, 1000), (16, 160)),
        (InputGeometry(14), (5, 7), (1, 1)),
    ],
)
def test_grid_keeps_aspect_or_squashes(geometry, size, grid):
    assert geometry.grid(*size, patch=14) == grid


def test_resize_never_crops_it_maps_the_whole_frame():
    image = np.zeros((480, 854, 3), np.uint8)
    image[:, -10:] = 255  # a stripe at the right edge must survive
    resized = resize_to_grid(image, (37, 66), 14)
    assert resized.shape == (518, 924, 3)
    assert resized[:, -5:].mean() > 200


def test_bgr_arrays_are_flipped_to_rgb():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    rgb = load_image(bgr, color="bgr")
    assert rgb[0, 0].tolist() == [0, 0, 255]
    assert load_image(bgr, color="rgb")[0, 0].tolist() == [255, 0, 0]


def test_pil_paths_and_grey_arrays(tmp_path):
    Image.new("RGB", (5, 3), (1, 2, 3)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").shape == (3, 5, 3)
    assert load_image(str(tmp_path / "a.png"))[0, 0].tolist() == [1, 2, 3]
    assert load_image(Image.new("L", (2, 2), 7)).shape == (2, 2, 3)
    assert load_image(np.zeros((2, 2), np.uint8)).shape == (2, 2, 3)
    rgba = Image.new("RGBA", (2, 2), (1, 2, 3, 0))
    assert load_image(rgba, keep_alpha=True).shape == (2, 2, 4)
    assert load_image(rgba).shape == (2, 2, 3)


@pytest.mark.parametrize(
    "frame,match",
    [
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4, 2), np.uint8), "H x W x 3"),
        (np.zeros((0, 4, 3), np.uint8), "non-empty"),
        (12, "expected a path"),
    ],
)
def test_bad_arrays_are_refused_with_what_was_expected(frame, match):
    with pytest.raises(ImageReadError, match=match):
        load_image(frame)


def test_corrupt_missing_and_directory_paths(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageReadError, match="could not decode"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageReadError, match="no such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="directory"):
        load_image(tmp_path)


def test_truncated_jpeg_is_an_error_not_a_half_image(tmp_path, davis):
    data = (davis / "JPEGImages/480p/dog/00000.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError):
        load_image(tmp_path / "cut.jpg")


def test_mask_size_must_match():
    with pytest.raises(ImageReadError, match="does not match"):
        load_mask(np.zeros((4, 4), np.uint8), size=(5, 4))
    assert load_mask(np.full((2, 3), 255, np.uint8)).all()


def test_patch_coverage_is_the_area_fraction():
    mask = np.zeros((28, 28), bool)
    mask[:14, :7] = True
    coverage = patch_coverage(mask, (2, 2))
    np.testing.assert_allclose(coverage, [[0.5, 0.0], [0.0, 0.0]], atol=1e-6)


def test_masks_read_alpha_only_when_it_says_something():
    from dinomask.preprocess import mask_from_pixels

    opaque = np.zeros((2, 2, 4), np.uint8)
    opaque[..., 3] = 255
    opaque[0, 0, :3] = 255
    assert mask_from_pixels(opaque).tolist() == [[True, False], [False, False]]  # colour, not the flat alpha
    cutout = np.zeros((2, 2, 4), np.uint8)
    cutout[1, 1, 3] = 255
    assert mask_from_pixels(cutout).tolist() == [[False, False], [False, True]]


@pytest.mark.parametrize(
    "size,grid",
    [
        ((480, 854), (28, 50)),   # 16:9
        ((480, 640), (32, 43)),   # 4:3
        ((640, 480), (43, 32)),
        ((1000, 100), (116, 12)),  # 1:10
        ((518, 518), (37, 37)),
    ],
)
def test_the_token_budget_gives_an_aspect_kept_grid_of_about_the_same_cost(size, grid):
    geometry = InputGeometry()  # the default: a budget of 1,400 tokens
    got = geometry.grid(*size, patch=14)
    assert got == grid
    assert 1300 <= got[0] * got[1] <= 1400


@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (1, 10), (3, 100_000), (100_000, 2)])
@pytest.mark.parametrize("geometry", [InputGeometry(), InputGeometry(tokens=300), InputGeometry(518),
                                      InputGeometry(224), InputGeometry(518, keep_aspect=False)])
def test_no_frame_shape_gets_more_patches_than_the_budget(size, geometry):
    rows, cols = geometry.grid(*size, patch=14)
    budget = geometry.max_tokens if geometry.resolution is not None else geometry.tokens
    assert 1 <= rows * cols <= budget
    if geometry.keep_aspect:  # the long side stays the long side
        assert (rows >= cols) == (size[0] >= size[1]) or rows == cols


def test_a_resolution_that_asks_too_much_is_capped_and_says_so(caplog):
    with caplog.at_level("WARNING", logger="dinomask"):
        grid = InputGeometry(518).grid(1, 4321, patch=14)  # would be 37 x 159,877 patches
    assert grid[0] * grid[1] <= InputGeometry().max_tokens
    assert "1x4321 px frame would need a 37x159877 patch grid" in caplog.text


def test_invalid_budgets_are_refused():
    with pytest.raises(ValueError, match="tokens must be between 1 and max_tokens"):
        InputGeometry(tokens=0)
    with pytest.raises(ValueError, match="tokens must be between 1 and max_tokens"):
        InputGeometry(tokens=10_000)
    with pytest.raises(ValueError, match="needs a resolution"):
        InputGeometry(keep_aspect=False)


# ----------------------------------------------------------------------------- one rule for masks


def _mask_files(tmp_path):
    """The same 40 x 60 object (a 20 x 30 block) as every kind of mask file users hand in."""
    from PIL import Image

    block = np.zeros((40, 60), bool)
    block[10:30, 15:45] = True
    soft = (block * 255).astype(np.uint8)
    soft[9, 15:45] = 100  # an antialiased edge: below half, background
    soft[30, 15:45] = 200  # above half, object
    soft[0, :] = np.linspace(1, 120, 60).astype(np.uint8)  # a matte's faint ramp: many values, all below half
    soft[39, :] = np.linspace(129, 250, 60).astype(np.uint8)  # and above half: object
    expected_soft = block.copy()
    expected_soft[30, 15:45] = True
    expected_soft[39, :] = True
    palette = Image.fromarray(block.astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 40, 0, 0] + [0] * 762)  # index 1 drawn almost black: the index decides
    ring = block ^ np.pad(block[2:-2, 2:-2], 2)  # VOC/COCO style: a 255 "void" ring on the object's edge
    voc = np.where(ring, 255, block).astype(np.uint8)
    voc_palette = Image.fromarray(voc, "P")
    voc_palette.putpalette([0, 0, 0, 128, 0, 0] + [0] * 759 + [224, 224, 192])
    inner = block & ~ring
    trimap = np.where(ring, 128, block * 255).astype(np.uint8)  # background, unknown, object: unknown is kept
    files = {
        "zero-one.png": (Image.fromarray(block.astype(np.uint8)), block),
        "zero-255.png": (Image.fromarray(block.astype(np.uint8) * 255), block),
        "soft.png": (Image.fromarray(soft), expected_soft),
        "palette.png": (palette, block),
        "labels-0-1-2.png": (Image.fromarray((block.astype(np.uint8) * np.where(np.arange(60) < 30, 1, 2)).astype(np.uint8)), block),
        "sixteen-bit-0-1.png": (Image.fromarray(block.astype(np.uint16)), block),
        "rgba-alpha.png": (Image.fromarray(np.dstack([np.full((40, 60, 3), 255, np.uint8), block.astype(np.uint8) * 255])), block),
        "mask.jpg": (Image.fromarray(block.astype(np.uint8) * 255).convert("L"), block),
        # issue 26: the rule decided by what was decoded, for values of any size
        "zero-one-named.jpg": (Image.fromarray(block.astype(np.uint8)), block),  # a PNG named .jpg
        "voc-ring.png": (Image.fromarray(voc), inner),
        "voc-palette.png": (voc_palette, inner),
        "labels-0-5-20.png": (Image.fromarray((block * np.where(np.arange(60) < 30, 5, 20)).astype(np.uint8)), block),
        "labels-0-17.png": (Image.fromarray((block * 17).astype(np.uint8)), block),
        "trimap.png": (Image.fromarray(trimap), block),
        "sixteen-bit-soft.png": (Image.fromarray(soft.astype(np.uint16)), expected_soft),  # 8-bit values, 16-bit file
    }
    out = {}
    for name, (image, expected) in files.items():
        if name == "zero-one-named.jpg":
            image.save(tmp_path / name, format="PNG")
        else:
            image.save(tmp_path / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        out[name] = expected
    return out


def test_every_reader_reads_every_kind_of_mask_by_one_rule(tmp_path):
    """``reference --mask``, the server's uploads and eval's ground truth agree on 0/1, 0/255, soft,
    palette, label-map, 16-bit, alpha and JPEG masks (issue 19: a 0/1 mask read as empty)."""
    from dinomask.evaluate.datasets import load_truth_mask
    from dinomask.preprocess import load_mask
    from dinomask.serve.config import ServeConfig
    from dinomask.serve.engine import decode_mask

    config = ServeConfig()
    for name, expected in _mask_files(tmp_path).items():
        path = tmp_path / name
        readers = {"load_mask": load_mask(path), "eval": load_truth_mask(path)}
        if not name.startswith("sixteen"):  # the server takes JPEG, PNG and WebP of 8 bits
            readers["serve"] = decode_mask(path.read_bytes(), config)
        for reader, got in readers.items():
            if name == "mask.jpg":  # compression moves edge pixels; the object stays
                assert (got == expected).mean() > 0.97, (name, reader)
            else:
                assert np.array_equal(got, expected), (name, reader, got.sum(), expected.sum())


def test_a_zero_one_mask_makes_the_same_reference_as_a_zero_255_one(tmp_path, tiny_backbone, davis):
    from PIL import Image

    from dinomask.reference import Reference

    truth = np.asarray(Image.open(davis / "Annotations/480p/dog/00000.png")) != 0
    Image.fromarray(truth.astype(np.uint8)).save(tmp_path / "01.png")
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "0255.png")
    frame = davis / "JPEGImages/480p/dog/00000.jpg"
    a = Reference.from_images(tiny_backbone, [frame], [tmp_path / "01.png"])
    b = Reference.from_images(tiny_backbone, [frame], [tmp_path / "0255.png"])
    assert np.array_equal(a.foreground, b.foreground) and len(a.foreground) > 0


def test_a_mask_rule_that_discards_most_non_zero_pixels_says_so(tmp_path, caplog):
    """A faint matte (most of the object below half its range) or a label map whose void ring is most
    of it: the mask is read by the rule, and a warning names the file, the share kept and why."""
    from PIL import Image

    from dinomask.preprocess import load_mask

    faint = np.zeros((40, 60), np.uint8)
    faint[10:30, 15:45] = np.linspace(1, 140, 600).reshape(20, 30).astype(np.uint8)  # ramp: most below 128
    Image.fromarray(faint).save(tmp_path / "faint.png")
    thick = np.full((40, 60), 255, np.uint8)  # a void frame around a small object of label 1
    thick[:5], thick[-5:], thick[:, :5], thick[:, -5:] = 0, 0, 0, 0
    thick[18:22, 28:32] = 1
    Image.fromarray(thick).save(tmp_path / "void.png")
    with caplog.at_level("WARNING", logger="dinomask"):
        soft = load_mask(tmp_path / "faint.png")
        void = load_mask(tmp_path / "void.png")
    assert 0 < soft.sum() < 0.2 * np.count_nonzero(faint) and void.sum() == 16
    said = caplog.text
    assert "faint.png" in said and "soft values above half of 0..255" in said
    assert "void.png" in said and "255 taken as void" in said and "keeps 1%" in said
