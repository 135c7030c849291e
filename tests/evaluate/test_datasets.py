"""Datasets as users have them: flat folders, 0/1 masks, palette masks read by index."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from dinomask.errors import ImageReadError
from dinomask.evaluate.datasets import load_dataset, load_pair, load_truth_mask

PLANTED = np.zeros((6, 8), bool)
PLANTED[1:4, 2:6] = True


def test_a_0_1_greyscale_mask_is_an_object_of_ones(tmp_path):
    Image.fromarray(PLANTED.astype(np.uint8)).save(tmp_path / "m.png")  # values 0 and 1: looks black
    assert np.array_equal(load_truth_mask(tmp_path / "m.png"), PLANTED)


def test_a_palette_mask_is_read_by_index_not_brightness(tmp_path):
    image = Image.fromarray(PLANTED.astype(np.uint8), "P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 shows white, index 1 black
    image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(load_truth_mask(tmp_path / "p.png"), PLANTED)


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "I;16"])
def test_other_mask_modes_are_non_zero_as_object(tmp_path, mode):
    values = PLANTED.astype(np.uint16 if mode == "I;16" else np.uint8) * (1000 if mode == "I;16" else 255)
    image = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.uint8)).convert(mode)
    image.save(tmp_path / "m.png")
    assert np.array_equal(load_truth_mask(tmp_path / "m.png"), PLANTED)


def test_a_mask_of_the_wrong_size_names_its_file(tmp_path):
    Image.fromarray(PLANTED.astype(np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ImageReadError, match="m.png.*does not match"):
        load_truth_mask(tmp_path / "m.png", size=(10, 10))


@pytest.mark.parametrize("masks_in", ["beside", "masks/"])
def test_a_flat_folder_is_a_dataset(tmp_path, davis, masks_in):
    root = tmp_path / "shots"
    (root / "masks").mkdir(parents=True)
    for name in ("00000", "00004", "00008"):
        shutil.copy(davis / f"JPEGImages/480p/dog/{name}.jpg", root / f"{name}.jpg")
        target = root / f"{name}.png" if masks_in == "beside" else root / "masks" / f"{name}.png"
        shutil.copy(davis / f"Annotations/480p/dog/{name}.png", target)
    shutil.copy(davis / "JPEGImages/480p/dog/00012.jpg", root / "00012.jpg")  # no mask
    data = load_dataset(root)
    assert data.layout == "flat" and [s.name for s in data.sequences] == ["shots"]
    assert [f.image.name for f in data.sequences[0].frames] == ["00000.jpg", "00004.jpg", "00008.jpg"]
    assert any("00012.jpg" in p and "no mask" in p for p in data.problems)
    image, mask = load_pair(data.sequences[0].frames[0])
    assert image.shape[:2] == mask.shape and 0.01 < mask.mean() < 0.5


def test_masks_that_mark_nothing_are_reported(tmp_path, davis):
    root = tmp_path / "flat"
    root.mkdir()
    for name in ("00000", "00004"):
        shutil.copy(davis / f"JPEGImages/480p/dog/{name}.jpg", root / f"{name}.jpg")
        Image.new("L", (854, 480)).save(root / f"{name}.png")
    data = load_dataset(root)
    assert any("mark no object pixel" in p and "00000.png" in p for p in data.problems)
