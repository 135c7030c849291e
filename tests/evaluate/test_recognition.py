"""Recognition across clips: references from other clips than the frames scored, a class map,
and a classifier that only counts black pixels at chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main
from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import load_dataset
from dinomask.evaluate.recognition import evaluate_recognition, read_class_map, split_by_clip
from dinomask.segmenter import SegmenterConfig

CATEGORIES = {"mug": (200, 120, 40), "ball": (40, 90, 210)}


def make_clips(root, frames: int = 30, size=(96, 128), seed: int = 0) -> dict[str, str]:
    """Two categories x two clips (``images/<clip>/`` + ``masks/<clip>/``): an object of its
    category's colour and texture on a noisy grey scene. Its size and place are drawn from one
    distribution for every clip, so neither says anything about the category."""
    rng = np.random.default_rng(seed)
    class_map = {}
    for category, colour in CATEGORIES.items():
        for clip in (1, 2):
            name = f"{category}-{clip}"
            class_map[name] = category
            (root / "images" / name).mkdir(parents=True)
            (root / "masks" / name).mkdir(parents=True)
            for index in range(frames):
                h, w = size
                image = rng.integers(90, 150, (h, w, 3)).astype(np.uint8)
                fraction = rng.uniform(0.1, 0.5)
                oh, ow = int(h * np.sqrt(fraction)), int(w * np.sqrt(fraction))
                top, left = rng.integers(0, h - oh), rng.integers(0, w - ow)
                mask = np.zeros((h, w), bool)
                mask[top:top + oh, left:left + ow] = True
                texture = (np.indices((oh, ow)).sum(axis=0) % 6 < 3)[:, :, None] * 40
                image[mask] = np.clip(np.array(colour) + texture.reshape(-1, 1) - 20, 0, 255)[: mask.sum()]
                Image.fromarray(image).save(root / "images" / name / f"{index:03d}.png")
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / name / f"{index:03d}.png")
    return class_map


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    class_map = make_clips(root)
    (root / "classes.csv").write_text("name,category\n# clip -> category\n" +
                                      "".join(f"{k},{v}\n" for k, v in class_map.items()))
    return root, class_map


def black_share(images: list[np.ndarray]) -> np.ndarray:
    """A "classifier" that sees nothing but how much of the frame is black (as a 2-D feature
    so that cosine can tell shares apart)."""
    share = np.array([float((image.max(axis=2) == 0).mean()) for image in images])
    return np.stack([share, 1.0 - share], axis=1)


def test_a_classifier_that_counts_black_pixels_scores_chance(clips, tiny_backbone):
    root, class_map = clips
    result = evaluate_recognition(load_dataset(root), tiny_backbone, SegmenterConfig.preset("dinomask"), class_map,
                                  embed=black_share, show_progress=False)
    assert result["chance"] == 0.5
    for classifier in ("nearest prototype", "k-NN"):
        accuracy = result["variants"]["ground-truth mask"][classifier]["accuracy"]
        assert 0.3 <= accuracy <= 0.7, (classifier, accuracy)  # 60 frames: chance is 0.5 +- 0.065
    assert result["reference_clips"] == {"ball": "ball-1", "mug": "mug-1"}
    assert {f["clip"] for f in result["per_frame"]} == {"ball-2", "mug-2"}  # never a reference clip


def test_colour_features_recognise_the_category_once_the_background_is_gone(clips, colour_backbone):
    """With planted features (a patch's feature is its colour) the object's colour is the
    category: the grey scene dilutes it in the full frame; the ground-truth removal recovers it."""
    root, class_map = clips
    result = evaluate_recognition(load_dataset(root), colour_backbone, SegmenterConfig.preset("dinomask"), class_map,
                                  show_progress=False)
    assert result["variants"]["ground-truth mask"]["nearest prototype"]["accuracy"] == 1.0
    assert result["variants"]["removed by dinomask"]["mask_j"] > 0.5


def test_class_maps_in_csv_and_yaml(tmp_path):
    (tmp_path / "c.csv").write_text("name,category\n# comment\ndog-1,dog\ndog-2, dog\n")
    assert read_class_map(tmp_path / "c.csv") == {"dog-1": "dog", "dog-2": "dog"}
    (tmp_path / "c.yaml").write_text("dog-1: dog\ncat-1: cat\n")
    assert read_class_map(tmp_path / "c.yaml") == {"dog-1": "dog", "cat-1": "cat"}
    (tmp_path / "bad.csv").write_text("dog-1,dog,extra\n")
    with pytest.raises(DinomaskError, match="line 1"):
        read_class_map(tmp_path / "bad.csv")


def test_a_category_with_one_clip_is_reported_not_scored(clips, davis):
    root, class_map = clips
    problems: list[str] = []
    categories, refs, scored = split_by_clip(load_dataset(root), {**class_map, "mug-2": "mug-alone", "ghost": "x"},
                                             problems)
    assert categories == ["ball"] and any("'mug' has one clip" in p for p in problems)
    assert any("ghost: in the class map but not in the dataset" in p for p in problems)


def test_the_cli_writes_the_report_with_a_class_map(clips, tiny_model_dir, tmp_path, capsys):
    root, _ = clips
    out = tmp_path / "rec"
    assert main(["eval", "recognition", "-d", str(root), "--classes", str(root / "classes.csv"), "--model",
                 str(tiny_model_dir), "-o", str(out), "-q", "--max-frames", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["categories"] == ["ball", "mug"]
    variants = metrics["variants"]
    assert set(variants) == {"full frame", "removed by dinomask", "ground-truth mask"}
    assert np.array(variants["full frame"]["k-NN"]["matrix"]).sum() == 10  # 5 frames x 2 scored clips
    assert 0.0 <= variants["removed by dinomask"]["mask_j"] <= 1.0
    report = (out / "report.md").read_text()
    assert "**RANDOM WEIGHTS" in report and "| mug | mug-1 | mug-2 |" in report
    assert (out / "confusion_ground-truth_mask_k-NN.png").is_file()
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
