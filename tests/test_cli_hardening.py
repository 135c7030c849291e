"""The command line under hostile and careless use (issue 26): each case failed on 0.2.0."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main
from tests.test_cli import _clip


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_video_of_frames_too_small_for_flow_is_processed_and_the_batch_goes_on(tmp_path, dog_ref, davis, capsys):
    """8 x 8 frames crashed DIS optical flow ("width or height >= 12"), rc 1, and the rest of the
    batch was never processed."""
    from dinomask.files import AtomicVideoWriter

    folder = tmp_path / "in"
    with AtomicVideoWriter(folder / "a_tiny.mp4", 10, (16, 8)) as writer:
        for i in range(6):
            writer.write(np.full((8, 16, 3), 40 * i, np.uint8))
    Image.open(davis / "JPEGImages/480p/dog/00004.jpg").save(folder / "b_dog.png")
    assert main(["remove", "-r", str(dog_ref), str(folder), "-o", str(tmp_path / "out"), "-q"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out/a_tiny.mp4").is_file() and (tmp_path / "out/b_dog.png").is_file()
    assert "2 written" in capsys.readouterr().out


def test_stats_every_prints_the_last_partial_interval(tmp_path, dog_ref, davis, capsys):
    """--stats-every S never printed the last partial interval, so with S longer than the run (or
    0, 'only at the end' by the help) no JSON line appeared."""
    clip = _clip(tmp_path / "clip.mp4", davis)
    for every in ("100", "0"):
        assert main(["live", "-r", str(dog_ref), "--source", str(clip), "--no-window", "--stats-every", every]) == 0
        said = capsys.readouterr().out
        lines = _lines(said)
        shown = int(said.split(" frames processed")[0].split()[-1])
        assert len(lines) == 1 and lines[0]["final"] is True and lines[0]["shown"] == shown > 0, (every, lines)
    assert main(["live", "-r", str(dog_ref), "--source", str(clip), "--no-window"]) == 0
    assert _lines(capsys.readouterr().out) == []  # not asked: no JSON line


def test_max_frames_on_a_file_drops_nothing(tmp_path, dog_ref, davis, capsys):
    """live --source clip.mp4 --max-frames N reported 1 dropped when nothing was."""
    clip = _clip(tmp_path / "clip.mp4", davis, repeat=3)
    assert main(["live", "-r", str(dog_ref), "--source", str(clip), "--no-window", "--max-frames", "10"]) == 0
    said = capsys.readouterr().out
    assert "10 frames processed" in said and "; 0 dropped;" in said, said


@pytest.mark.parametrize("args,hint,phrase", [
    (["--output", "rec"], "--output", "ending in .mp4"),
    (["--fps", "1e-9"], "--fps", "0.1"),
    (["--fps", "nan"], "--fps", ""),
    (["--key-budget-ms", "-5"], "--key-budget-ms", "0"),
    (["--key-budget-ms", "inf"], "--key-budget-ms", ""),
])
def test_live_options_are_checked_before_the_model_loads(tmp_path, dog_ref, args, hint, phrase, capsys):
    code = main(["live", "-r", str(dog_ref), "--source", str(tmp_path), "--no-window", "--model",
                 "/nonexistent/never-loaded", *args])
    said = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert code == 2 and hint in said and phrase in said, said
    assert "never-loaded" not in said  # the model named was never looked for: the check came first


def test_a_frames_folder_without_frames_says_so(tmp_path, dog_ref, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["live", "-r", str(dog_ref), "--source", str(tmp_path / "empty"), "--no-window"]) == 2
    assert "holds no frames" in capsys.readouterr().err


@pytest.mark.parametrize("actors", ["-1", "0"])
def test_ray_actor_counts_are_checked_before_ray_starts(tmp_path, dog_ref, davis, actors, capsys, monkeypatch):
    """--actors -1 gave a raw tuple after Ray had started (~10 s); --actors 0 meant the default.
    Ray must not be started at all (checked by behaviour, not by the wall clock)."""
    import dinomask.ray_engine as ray_engine

    def started(*args, **kwargs):
        raise AssertionError("Ray was started before --actors was checked")

    monkeypatch.setattr(ray_engine, "init_ray", started)
    assert main(["remove", "-r", str(dog_ref), str(davis / "JPEGImages/480p/dog/00004.jpg"), "-o", str(tmp_path / "o"),
                 "--engine", "ray", "--actors", actors]) == 2
    said = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "--actors" in said and "greater than or equal to 1" in said, said


def test_ctrl_c_in_a_batch_prints_what_was_done(tmp_path, dog_ref, davis, capsys, monkeypatch):
    """Ctrl-C (and SIGTERM, handled as it) ended a batch without its summary."""
    import dinomask.batch as batch

    real, calls = batch._process_image, []

    def interrupted(segmenter, item, options, view=None):
        calls.append(item)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(segmenter, item, options, view)

    monkeypatch.setattr(batch, "_process_image", interrupted)
    frames = sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:3]
    assert main(["remove", "-r", str(dog_ref), *map(str, frames), "-o", str(tmp_path / "out"), "-q"]) == 130
    said = capsys.readouterr().err
    assert "1 written" in said and "INTERRUPTED after 1 of 3 inputs" in said
    assert [p.name for p in (tmp_path / "out").iterdir()] == [frames[0].with_suffix(".png").name]


def test_a_reference_without_any_background_is_said(tmp_path, tiny_model_dir, davis, caplog):
    """--background black on a photo without a black background, or an all-255 mask, wrote a
    reference with 0 background patches and no warning."""
    photo = davis / "JPEGImages/480p/dog/00000.jpg"
    Image.fromarray(np.full((480, 854), 255, np.uint8)).save(tmp_path / "all.png")
    with caplog.at_level("WARNING", logger="dinomask"):
        assert main(["reference", str(photo), "--background", "black", "-o", str(tmp_path / "a.npz"),
                     "--model", str(tiny_model_dir)]) == 0
        assert main(["reference", str(photo), "--mask", str(tmp_path / "all.png"), "-o", str(tmp_path / "b.npz"),
                     "--model", str(tiny_model_dir)]) == 0
    said = caplog.text
    assert "00000.jpg: only" in said and "is --background black right" in said
    assert "0 scene-background patches" in said and "inverted or all object" in said


def test_a_reference_made_with_an_export_names_the_export(tmp_path, tiny_model_dir, davis, capsys):
    """A reference made with an .onnx recorded the export's source folder: without --model, 'remove'
    loaded that folder, and where only the .onnx travelled it failed without suggesting --model X.onnx."""
    import shutil

    from dinomask.reference import Reference

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    export = tmp_path / "shipped" / "m.onnx"
    assert main(["export-onnx", "--model", str(model), "-o", str(export)]) == 0
    frame, mask = davis / "JPEGImages/480p/dog/00000.jpg", davis / "Annotations/480p/dog/00000.png"
    assert main(["reference", str(frame), "--mask", str(mask), "-o", str(tmp_path / "r.npz"), "--model", str(export)]) == 0
    assert Reference.load(tmp_path / "r.npz").backbone.name == str(export.resolve())
    shutil.rmtree(model)  # only the export was shipped
    target = davis / "JPEGImages/480p/dog/00004.jpg"
    assert main(["remove", "-r", str(tmp_path / "r.npz"), str(target), "-o", str(tmp_path / "out"), "-q"]) == 0
    old = Reference.load(tmp_path / "r.npz")
    import dataclasses

    dataclasses.replace(old, backbone=dataclasses.replace(old.backbone, name=str(model))).save(tmp_path / "old.npz")
    capsys.readouterr()
    assert main(["remove", "-r", str(tmp_path / "old.npz"), str(target), "-o", str(tmp_path / "out2"), "-q"]) == 2
    assert "--model X.onnx" in capsys.readouterr().err


def test_models_and_exports_are_written_readable_by_others(tmp_path):
    """random-model's weights and export-onnx's embeddings were 0600 beside 0644 files."""
    old = os.umask(0o022)
    try:
        assert main(["random-model", str(tmp_path / "m")]) == 0
        assert main(["export-onnx", "--model", str(tmp_path / "m"), "-o", str(tmp_path / "e/m.onnx")]) == 0
    finally:
        os.umask(old)
    files = [*(tmp_path / "m").iterdir(), *(tmp_path / "e").iterdir()]
    assert {p.name for p in files} >= {"model.safetensors", "config.json", "m.onnx", "m.json", "m.embeddings.safetensors"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_painted_reference_says_its_rule_and_how_to_get_the_stronger_one(tmp_path, tiny_model_dir, capsys):
    """Issue 32: the headline workflow (a photo painted black) silently took the weaker rule."""
    photo = np.zeros((140, 140, 3), np.uint8)
    photo[30:110, 30:110] = (200, 40, 40)
    Image.fromarray(photo).save(tmp_path / "mug_on_black.png")
    assert main(["reference", str(tmp_path / "mug_on_black.png"), "-o", str(tmp_path / "mug.npz"),
                 "--model", str(tiny_model_dir)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "Otsu with the presence floor" in said and "--mask" in said and "fg-vs-bg" in said
