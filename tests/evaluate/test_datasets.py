from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinomask.evaluate.datasets import load_dataset


def _img(path, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(path)


def test_davis_layout(davis):
    data = load_dataset(davis)
    assert data.layout == "davis"
    assert [s.name for s in data.sequences] == ["car-shadow", "dog"]
    assert len(data.sequences[1].frames) == 12
    assert data.problems == []


def test_plain_layout_with_classes_and_a_missing_mask(tmp_path):
    _img(tmp_path / "images/mug/a.jpg")
    _img(tmp_path / "images/mug/b.jpg")
    _img(tmp_path / "masks/mug/a.png")
    _img(tmp_path / "images/box/c.jpg")
    _img(tmp_path / "masks/box/c.png")
    data = load_dataset(tmp_path)
    assert data.layout == "plain"
    assert [s.name for s in data.sequences] == ["box", "mug"]
    assert len(data.sequences[1].frames) == 1
    assert any("b.jpg" in p and "no mask" in p for p in data.problems)


def test_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dataset"):
        load_dataset(tmp_path)
