"""The three evals end to end on davis-mini with a tiny random DINOv2, and the harness
with a comparison segmenter."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dinomask.cli import main
from dinomask.evaluate.datasets import load_dataset, load_pair
from dinomask.evaluate.masks import evaluate_masks
from dinomask.evaluate.predictors import Prediction, find_u2netp
from dinomask.evaluate.predictors import BASELINES as BASELINE_CLASSES
from dinomask.evaluate.settings import STANDARD, named_settings, parse_setting

BASELINES = [b.name for b in BASELINE_CLASSES]


def test_masks_eval_runs_every_option_side_by_side(tmp_path, davis, tiny_model_dir, capsys):
    out = tmp_path / "masks"
    assert main(["eval", "masks", "--dataset", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q",
                 "--max-frames", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"] == [s.split(":")[0] for s in STANDARD] + list(BASELINES)
    assert metrics["dataset"] == str(davis.resolve())
    assert "torch" in metrics["versions"]
    assert metrics["dataset_mean"]["paper"]["frames"] == 6  # 3 per sequence, references excluded
    # refs=3 uses frames 0-2 as references, so no setting scores them
    scored = {(r["sequence"], r["frame"]) for r in metrics["per_frame"]["dinomask"]}
    assert ("dog", "00000.jpg") not in scored and ("dog", "00008.jpg") not in scored
    assert set(metrics["threshold_sweeps"]) >= {"paper"}
    sweep = metrics["threshold_sweeps"]["paper"]
    assert len(sweep["thresholds"]) == len(sweep["j"]) == 21
    for name in ("report.md", "heatmaps.png", "threshold_curve.png", "confusion_paper.png", "settings.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("**RANDOM WEIGHTS")  # first thing a reader sees
    from tests.helpers import assert_tables_render

    assert_tables_render(report)  # every row of every table renders (issue 32: a newline in a cell broke 21 rows)
    assert metrics["conditions"][str(tiny_model_dir)]["runtime"].startswith("onnx")
    assert metrics["conditions"][str(tiny_model_dir)]["random_weights"]
    table = [line for line in report.splitlines() if line.startswith("| ") and "J&F" not in line and line[2].isdigit()]
    jf = [float(line.split(" | ")[2]) for line in table[: len(metrics["settings"])]]
    assert jf == sorted(jf, reverse=True)  # ranked by J&F
    assert any("| baseline: keep all |" in line for line in table)
    assert any("| baseline: reference mask copied |" in line for line in table)
    assert "| paper |" in report and "| upsample=nearest |" in report
    assert main(["eval", "masks", "--dataset", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_masks_eval_with_u2netp_when_its_file_is_available(tmp_path, davis, tiny_model_dir):
    if find_u2netp() is None:
        pytest.skip("u2netp.onnx not installed (scripts/setup.sh installs it)")
    out = tmp_path / "u2"
    assert main(["eval", "masks", "--dataset", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q",
                 "--setting", "quick", "--compare", "u2netp", "--max-frames", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "u2netp" in metrics["settings"]
    assert 0.0 <= metrics["dataset_mean"]["u2netp"]["miou"] <= 1.0


def test_unavailable_comparator_is_said_not_hidden(tmp_path, davis, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "none"))
    monkeypatch.setattr("dinomask.evaluate.predictors.find_u2netp", lambda path=None: None)
    out = tmp_path / "m"
    args = ["eval", "masks", "--dataset", str(davis), "--model", str(tiny_model_dir), "-q",
            "--setting", "quick", "--compare", "u2netp", "--compare", "maskrcnn", "--max-frames", "1"]
    assert main([*args, "-o", str(out)]) == 1  # a dropped comparison fails the run ...
    err = capsys.readouterr().err
    assert "u2netp.onnx not found" in err
    assert "Mask R-CNN unavailable" in err and "--allow-missing" in err
    assert len(json.loads((out / "metrics.json").read_text())["left_out"]) == 2
    assert "## Left out (2)" in (out / "report.md").read_text()  # ... and is in the report
    assert main([*args, "-o", str(tmp_path / "m2"), "--allow-missing"]) == 0  # unless the user accepts it


def test_control_eval(tmp_path, davis, tiny_model_dir):
    out = tmp_path / "ctl"
    assert main(["eval", "control", "--dataset", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["sequences"]) == {"car-shadow", "dog"}
    assert len(metrics["sequences"]["dog"]["with removal"]["deviation"]) == 11
    assert metrics["model"]["gain"] == 0.5
    assert (out / "deviation.png").is_file()
    assert "proportional control" in (out / "report.md").read_text()


def test_missing_and_mismatched_masks_are_reported_not_scored(tmp_path, davis, tiny_backbone):
    root = tmp_path / "d"
    shutil.copytree(davis, root)
    (root / "Annotations/480p/dog/00044.png").unlink()
    from PIL import Image

    Image.new("L", (10, 10)).save(root / "Annotations/480p/dog/00040.png")
    data = load_dataset(root)

    class AllObject:
        name = "all"

        def start_sequence(self, references):
            pass

        def predict(self, image, key):
            return Prediction(np.ones(image.shape[:2], bool))

    result = evaluate_masks(data, {"all": AllObject()}, {"all": 1}, show_progress=False)
    assert any("00044.jpg" in p and "no mask" in p for p in result.problems)
    assert any("00040" in p and "does not match" in p for p in result.problems)
    frames = {r["frame"] for r in result.per_frame["all"]}
    assert "00040.jpg" not in frames and "00044.jpg" not in frames
    assert result.dataset["all"]["frames"] == 9 + 9


def test_setting_parser():
    s = parse_setting("mine:method=paper,prototype=kmeans,k=8,threshold=relative:0.7,refs=2,aspect=keep,temporal=0.3")
    assert (s.name, s.config.prototype, s.config.k, s.config.threshold, s.refs) == ("mine", "kmeans", 8, "relative:0.7", 2)
    assert s.config.geometry.keep_aspect and s.config.temporal.alpha == 0.3
    with pytest.raises(ValueError, match="key=value"):
        parse_setting("bad:colour=red")
    with pytest.raises(ValueError, match="two settings"):
        named_settings(["quick", "paper:method=paper"])


def test_two_backbones_side_by_side_in_one_table(tmp_path, davis, tiny_model_dir, tiny_reg_model_dir):
    out = tmp_path / "two"
    assert main(["eval", "masks", "--dataset", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q",
                 "--max-frames", "2", "--setting", "plain:method=dinomask",
                 "--setting", f"registers:method=dinomask,model={tiny_reg_model_dir}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"] == ["plain", "registers", *BASELINES]
    assert metrics["setting_options"]["registers"].endswith(f"model={tiny_reg_model_dir}")
    assert "proto=kmeans4" in metrics["setting_options"]["plain"]
    assert metrics["dataset_mean"]["plain"]["miou"] != metrics["dataset_mean"]["registers"]["miou"]


def test_the_feature_cache_holds_one_frame_whatever_the_dataset_length(davis, tiny_backbone):
    """Features of every frame were kept for the whole run (about 6.7 MB a frame with ViT-S,
    10 GB for DAVIS-2016 val); now only the current frame's are."""
    from dinomask.evaluate.predictors import DinomaskPredictor, FeatureCache
    from dinomask.segmenter import SegmenterConfig

    cache = FeatureCache(tiny_backbone)
    configs = [SegmenterConfig.preset("dinomask"), SegmenterConfig.preset("paper")]  # two geometries
    predictors = [DinomaskPredictor(f"s{i}", tiny_backbone, c, cache) for i, c in enumerate(configs)]
    data = load_dataset(davis)
    sizes = []
    for sequence in data.sequences:
        pairs = [load_pair(f) for f in sequence.frames[:1]]
        for predictor in predictors:
            predictor.start_sequence(pairs)
        for frame in sequence.frames[1:]:
            image, _ = load_pair(frame)
            for predictor in predictors:
                predictor.predict(image, str(frame.image))
            sizes.append(len(cache))
    assert len(sizes) > 10 and max(sizes) == 2  # one frame x two geometries, never more


def test_an_empty_reference_mask_skips_the_sequence_for_every_setting(tmp_path, davis, tiny_model_dir, capsys):
    """Issue 21: the baselines scored a sequence whose empty reference mask the settings refused,
    so rows compared different frames. Now every setting scores the same frames."""
    from PIL import Image

    root = tmp_path / "d"
    shutil.copytree(davis, root)
    first = sorted((root / "Annotations/480p/dog").glob("*.png"))[0]
    Image.new("L", Image.open(first).size).save(first)
    out = tmp_path / "masks"
    assert main(["eval", "masks", "--dataset", str(root), "--model", str(tiny_model_dir), "-o", str(out), "-q",
                 "--max-frames", "2", "--setting", "quick", "--runtime", "torch"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    frames = {name: {(r["sequence"], r["frame"]) for r in rows} for name, rows in metrics["per_frame"].items()}
    assert len({frozenset(f) for f in frames.values()}) == 1  # the same frames for every setting and baseline
    assert all(sequence == "car-shadow" for f in frames.values() for sequence, _ in f)
    assert any("dog" in p and "skipped for every setting" in p for p in metrics["problems"])


def test_the_oracle_scores_each_setting_against_its_own_ceiling(tmp_path, davis, tiny_model_dir):
    """eval masks --oracle: each setting's ceiling beside its model score (issue 19). The oracle of
    nearest upsampling is below bilinear's, and both below 1 (the grid loses something)."""
    out = tmp_path / "oracle"
    assert main(["eval", "masks", "--dataset", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "-q", "--oracle",
                 "--runtime", "torch", "--max-frames", "3", "-s", "near:upsample=nearest", "-s", "bil:upsample=bilinear"]) == 0
    mean = json.loads((out / "metrics.json").read_text())["dataset_mean"]
    near, bil = mean["near"]["oracle"], mean["bil"]["oracle"]
    for oracle in (near, bil):
        assert set(oracle) >= {"j", "f", "jf"} and 0.5 < oracle["j"] < 1.0
    assert near["j"] < bil["j"]
    assert "oracle" not in mean["baseline: keep all"]  # baselines have no patch classifier to replace
    report = (out / "report.md").read_text()
    assert "## Ceilings" in report and "lost to the features" in report


def test_the_masks_report_says_which_frames_every_row_scores(tmp_path, davis, tiny_model_dir):
    """Issue 32: a refs=3 setting held 3 frames back for every row, unsaid; and the dinomask row is
    frame by frame where remove adds temporal smoothing, keyframes and a region of interest on video."""
    out = tmp_path / "out"
    assert main(["eval", "masks", "-d", str(davis), "--model", str(tiny_model_dir), "-o", str(out), "--runtime",
                 "torch", "-q", "--max-frames", "1", "--setting", "dinomask:method=dinomask",
                 "--setting", "refs=3:refs=3"]) == 0
    report = " ".join((out / "report.md").read_text().split())
    assert "each sequence's frames after its first 3" in report and "refs=3 holds 3" in report
    assert "`dinomask(video)` what it runs on a video file" in report and "keyframes act as on a video" in report


def test_the_rows_named_for_the_default_are_what_remove_runs():
    """Issue 32 item 4: `dinomask` is remove's config on images (each alone), `dinomask(video)`
    remove's config on a video file: every field equal, so the table's name is not a promise
    the row breaks."""
    import dataclasses

    from dinomask.cli.options import segmenter_config

    rows = {s.name: s.config for s in named_settings(["standard"])}
    remove_video = segmenter_config("dinomask")
    assert rows["dinomask(video)"] == remove_video
    # on separate images temporal state, keyframes and crops never act (batch resets per image)
    image_fields = {f.name for f in dataclasses.fields(remove_video)} - {"temporal", "keyframes", "roi"}
    for name in image_fields:
        assert getattr(rows["dinomask"], name) == getattr(remove_video, name), name
