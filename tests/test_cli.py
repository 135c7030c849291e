from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main
from dinomask.reference import Reference


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("reference", "remove", "live", "download", "eval", "models", "random-model"):
        assert command in out


def test_remove_writes_one_output_per_input_at_the_input_size(tmp_path, dog_ref, davis, capsys):
    out = tmp_path / "out"
    frames = sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))
    assert main(["remove", "--ref", str(dog_ref), str(davis / "JPEGImages/480p/dog"), "-o", str(out), "-q"]) == 0
    written = sorted(out.glob("*.png"))
    assert [p.stem for p in written] == [p.stem for p in frames]
    for path in written:
        assert Image.open(path).size == (854, 480)
    assert "12 written" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["paper", "dinomask"])
@pytest.mark.parametrize("kind,mode", [("composite", "RGB"), ("mask", "L"), ("heatmap", "RGB"), ("overlay", "RGB")])
def test_remove_output_kinds(tmp_path, dog_ref, davis, method, kind, mode):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    code = main(["remove", "--ref", str(dog_ref), str(frame), "-o", str(tmp_path / "o"), "--output-kind", kind,
                 "--method", method, "-q"])
    assert code == 0
    (path,) = (tmp_path / "o").glob("*.png")
    assert Image.open(path).mode == mode


def test_transparent_background_writes_rgba(tmp_path, dog_ref, davis):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(tmp_path / "o"), "-b", "transparent", "-q"]) == 0
    assert Image.open(tmp_path / "o/00004.png").mode == "RGBA"


def test_a_corrupt_input_is_reported_and_the_rest_still_written(tmp_path, dog_ref, davis, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(davis / "JPEGImages/480p/dog/00004.jpg", folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8 broken")
    code = main(["remove", "--ref", str(dog_ref), str(folder), "-o", str(tmp_path / "out"), "-q"])
    assert code == 1
    assert (tmp_path / "out/a.png").is_file()
    assert not (tmp_path / "out/b.png").exists()
    err = capsys.readouterr().err
    assert "FAILED" in err and "b.jpg" in err


def test_missing_model_is_one_clear_message_without_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    image = np.zeros((140, 140, 3), np.uint8)
    image[30:110, 30:110] = 200
    Image.fromarray(image).save(tmp_path / "obj.png")
    code = main(["reference", str(tmp_path / "obj.png"), "-o", str(tmp_path / "r.npz"), "--model", "dinov2_vits14_reg"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dinomask download dinov2_vits14_reg" in err
    assert "Traceback" not in err


def test_reference_with_no_object_left_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    Image.fromarray(np.zeros((140, 140, 3), np.uint8)).save(tmp_path / "black.png")
    code = main(["reference", str(tmp_path / "black.png"), "-o", str(tmp_path / "r.npz"), "--model", str(tiny_model_dir),
                 "--background", "black"])
    assert code == 2
    assert "no object left" in capsys.readouterr().err


def test_reference_is_not_overwritten_by_surprise(dog_ref, davis, tiny_model_dir, capsys):
    before = dog_ref.read_bytes()
    code = main(["reference", str(davis / "JPEGImages/480p/dog/00000.jpg"), "--mask",
                 str(davis / "Annotations/480p/dog/00000.png"), "-o", str(dog_ref), "--model", str(tiny_model_dir)])
    assert code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert dog_ref.read_bytes() == before


def test_reference_made_with_another_model_is_refused(tmp_path, dog_ref, davis, capsys):
    other = tmp_path / "other"
    assert main(["random-model", str(other), "--seed", "7"]) == 0
    code = main(["remove", "--ref", str(dog_ref), str(davis / "JPEGImages/480p/dog/00004.jpg"), "-o",
                 str(tmp_path / "o"), "--model", str(other), "-q"])
    assert code == 2
    assert "was made with backbone" in capsys.readouterr().err


def test_live_headless_on_a_video_file_records_an_mp4(tmp_path, dog_ref, davis, capsys):
    from dinomask.files import AtomicVideoWriter
    from dinomask.preprocess import load_image

    video = tmp_path / "dog.mp4"
    with AtomicVideoWriter(video, 10, (854, 480)) as writer:
        for path in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg")):
            writer.write(load_image(path))
    out = tmp_path / "live.mp4"
    code = main(["live", "--ref", str(dog_ref), "--source", str(video), "--output", str(out), "--no-window"])
    assert code == 0
    assert out.is_file() and out.stat().st_size > 0
    assert "FPS" in capsys.readouterr().out


def test_live_with_a_camera_that_is_not_there(tmp_path, dog_ref, capsys):
    code = main(["live", "--ref", str(dog_ref), "--source", "7", "--no-window", "--retry-seconds", "0"])
    assert code == 2
    assert "could not open camera 7" in capsys.readouterr().err


def test_live_window_on_a_headless_opencv_says_what_to_do(tmp_path, dog_ref, capsys, monkeypatch):
    import cv2

    def no_gui(*args, **kwargs):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(cv2, "namedWindow", no_gui)
    code = main(["live", "--ref", str(dog_ref), "--source", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no window support" in err and "--output" in err


@pytest.mark.parametrize("args,names", [(["--k", "abc"], "--k"), (["--engine", "spark"], "--engine")])
def test_a_bad_option_value_is_a_usage_message_not_a_traceback(tmp_path, args, names, capsys):
    code = main(["remove", "--ref", str(tmp_path / "r.npz"), str(tmp_path), "-o", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert names in err and "Traceback" not in err


def test_help_keeps_the_extra_name(capsys):
    assert main(["remove", "--help"]) == 0
    assert "dinomask[ray]" in capsys.readouterr().out.replace("\n", "").replace(" ", "").replace("│", "")


def _clip(path, davis, repeat: int = 1):
    from dinomask.files import AtomicVideoWriter
    from dinomask.preprocess import load_image

    frames = [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))]
    with AtomicVideoWriter(path, 10, (854, 480)) as writer:
        for _ in range(repeat):
            for image in frames:
                writer.write(image)
    return path


def _two_refs(tmp_path, dog_ref, tiny_model_dir, davis):
    """The dog and a second object (the car of car-shadow) as two references."""
    car = tmp_path / "car.npz"
    assert main(["reference", str(davis / "JPEGImages/480p/car-shadow/00000.jpg"), "--mask",
                 str(davis / "Annotations/480p/car-shadow/00000.png"), "-o", str(car), "--model", str(tiny_model_dir),
                 "--label", "car", "--runtime", "torch"]) == 0
    return ["--ref", str(dog_ref), "--ref", str(car)]


def test_several_references_with_the_default_keyframes_in_remove_and_live(tmp_path, dog_ref, tiny_model_dir, davis, capsys):
    """Issue 21: two --ref files failed every input with keyframes on (the default for video)."""
    refs = _two_refs(tmp_path, dog_ref, tiny_model_dir, davis)
    video = _clip(tmp_path / "dog.mp4", davis)
    assert main(["remove", str(video), *refs, "-o", str(tmp_path / "out"), "--runtime", "torch", "--output-kind", "mask"]) == 0
    assert main(["live", *refs, "--source", str(video), "-o", str(tmp_path / "live.mp4"), "--no-window",
                 "--runtime", "torch", "--keyframes", "every:3"]) == 0
    said = capsys.readouterr()
    assert "keyframes every:3" in said.out + said.err and (tmp_path / "live.mp4").stat().st_size > 0


def test_save_ref_without_the_suffix_checks_the_file_it_would_write(tmp_path, dog_ref, davis, capsys):
    """``--save-ref taught`` writes taught.npz: an existing taught.npz is not replaced without --overwrite."""
    video = _clip(tmp_path / "dog.mp4", davis)
    (tmp_path / "taught.npz").write_bytes(b"keep me")
    code = main(["live", "-r", str(dog_ref), "--source", str(video), "--no-window", "--save-ref", str(tmp_path / "taught")])
    assert code == 2 and "taught.npz exists" in capsys.readouterr().err
    assert (tmp_path / "taught.npz").read_bytes() == b"keep me"
    code = main(["reference", str(davis / "JPEGImages/480p/dog/00000.jpg"), "-o", str(tmp_path / "taught"),
                 "--mask", str(davis / "Annotations/480p/dog/00000.png")])
    assert code == 2 and "taught.npz exists" in capsys.readouterr().err


def test_sigterm_on_live_keeps_the_recording_and_the_taught_reference(tmp_path, dog_ref, davis):
    """A service manager's SIGTERM ends live as Ctrl-C does: exit 143, the recording finished and
    playable, the taught reference saved, no .part file left (issue 21)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import cv2

    video = _clip(tmp_path / "long.mp4", davis, repeat=30)
    out, taught = tmp_path / "rec" / "live.mp4", tmp_path / "rec" / "taught.npz"
    out.parent.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "dinomask.cli", "live", "-r", str(dog_ref), "--source", str(video), "--no-window",
         "-o", str(out), "--save-ref", str(taught), "--runtime", "torch"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    while not any(".part" in p.name for p in out.parent.iterdir()):  # recording under way
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    assert sorted(p.name for p in out.parent.iterdir()) == ["live.mp4", "taught.npz"]
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) > 0
    assert Reference.load(taught).label == "dog"


@pytest.mark.parametrize("method,keyframes,roi,expected,crop", [
    ("dinomask", None, None, True, "budget"),    # files frame by frame: the crop gets the whole budget (finer)
    ("dinomask", "async", None, True, "scale"),  # a camera's clock: the crop keeps the frame's scale (sooner keys)
    ("dinomask", "off", None, True, "budget"),
    ("dinomask", None, False, False, "budget"),  # --no-roi
    ("dinomask", "async", False, False, "scale"),
    ("paper", None, None, False, "budget"),      # the method as written never crops
])
def test_the_region_of_interest_default_follows_how_frames_arrive(method, keyframes, roi, expected, crop):
    from dinomask.cli import segmenter_config

    config = segmenter_config(method, keyframes=keyframes, roi=roi)
    assert config.roi.enabled is expected and config.roi.crop_tokens == crop
    assert config.upsample == ("nearest" if method == "paper" else "bicubic")


def test_live_on_a_camera_crops_at_the_frames_scale(monkeypatch, dog_ref):
    """live decides async for a camera before the region of interest's default is taken: crop keys
    at the whole frame's scale (issue 25: davis-motion live J 0.502 -> 0.513 under the oracle)."""
    import dinomask.cli as cli
    import dinomask.cli.live as live_command

    seen = {}

    def stop(refs, model, device, dtype, runtime, fast, config, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(live_command, "_load_segmenter", stop)
    with pytest.raises(SystemExit):
        cli.app(["live", "--ref", str(dog_ref), "--source", "rtsp://camera.invalid/stream", "--no-window"],
                standalone_mode=False)
    config = seen["config"]
    assert config.keyframes.policy == "async" and config.keyframes.flow_side == 160
    assert config.roi.enabled and config.roi.crop_tokens == "scale"


@pytest.mark.parametrize("command, panels", [
    ("remove", ("Model and runtime", "Method", "Video and live", "Outputs", "Robotics and Rerun", "Ray")),
    ("live", ("Model and runtime", "Method", "Video and live", "Outputs", "Robotics and Rerun")),
])
def test_help_groups_the_options_in_panels(command, panels, capsys):
    """Issue 32 item 6: 33 options in one list read as a wall; --help groups them by what they are about."""
    from dinomask.cli import main

    assert main([command, "--help"]) == 0
    said = capsys.readouterr().out
    for panel in panels:
        assert f"─ {panel} ─" in said, panel
    options = said.split("─ Options ─")[1].split("╰")[0] if "─ Options ─" in said else ""
    assert options.count("--") <= 6, options  # what is left ungrouped: the command's own few
