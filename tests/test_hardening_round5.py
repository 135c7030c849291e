"""Hardening round 5 (issue 31 item 5): every failure is one line, before the work. The model path
``/nonexistent/m`` shows that the model was never loaded: each refusal comes before it."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings

import numpy as np
import pytest

from dinomask.cli import main

NO_MODEL = "/nonexistent/m"


def _one_line_error(capsys) -> str:
    said = capsys.readouterr().err
    assert NO_MODEL not in said and "Traceback" not in said, said
    return " ".join(said.replace("│", " ").split())


def _refused_port() -> int:
    with socket.socket() as sock:  # bound and closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", ["folder", "under a file", "unreachable", "no viewer", "no sdk"])
def test_every_rerun_failure_is_one_line_before_the_model_loads(tmp_path, dog_ref, davis, capsys, monkeypatch, case):
    pytest.importorskip("rerun")
    import importlib.util

    import dinomask.rerun_view as rerun_view

    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    (tmp_path / "recordings.rrd").mkdir()
    (tmp_path / "a-file").write_text("x")
    target = {"folder": str(tmp_path / "recordings.rrd"), "under a file": str(tmp_path / "a-file" / "run.rrd"),
              "unreachable": f"127.0.0.1:{_refused_port()}", "no viewer": "spawn", "no sdk": str(tmp_path / "r.rrd")}[case]
    if case == "no viewer":
        monkeypatch.setattr(rerun_view, "viewer_path", lambda: None)
    if case == "no sdk":
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rerun" else real(name, *a))
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(tmp_path / "o"), "--model", NO_MODEL,
                 "--rerun", target]) == 2
    said = _one_line_error(capsys)
    phrase = {"folder": "that is a folder", "under a file": "cannot write the Rerun recording", "unreachable": "no Rerun viewer answers",
              "no viewer": "none was found beside this Python or on PATH", "no sdk": "dinomask[robotics]"}[case]
    assert said.startswith("error:") and phrase in said, said
    assert not (tmp_path / "o").exists()


def test_the_viewer_beside_this_python_is_found_off_path(monkeypatch):
    pytest.importorskip("rerun")
    from pathlib import Path

    from dinomask.rerun_view import viewer_path

    monkeypatch.setenv("PATH", "/nonexistent")
    found = viewer_path()
    assert found is not None and Path(found).parent == Path(sys.executable).parent


@pytest.mark.parametrize("args,phrase", [(["--max-frames", "0"], "--max-frames"), (["--max-frames", "-1"], "--max-frames"),
                                         (["--retry-seconds", "nan"], "--retry-seconds"),
                                         (["--retry-seconds", "-1"], "--retry-seconds")])
def test_live_ranges_are_refused_before_the_model_loads(dog_ref, davis, capsys, args, phrase):
    code = main(["live", "-r", str(dog_ref), "--source", str(davis / "JPEGImages/480p/dog"), "--no-window",
                 "--model", NO_MODEL, *args])
    assert code == 2 and phrase in _one_line_error(capsys)


def test_eval_max_frames_is_at_least_one(tmp_path, davis, capsys):
    assert main(["eval", "masks", "-d", str(davis), "-o", str(tmp_path / "e"), "--model", NO_MODEL,
                 "--max-frames", "0"]) == 2
    assert "--max-frames" in _one_line_error(capsys)


def test_live_on_a_bag_where_no_message_decodes_exits_non_zero(tmp_path, dog_ref, davis, capsys):
    pytest.importorskip("rosbags")
    from dinomask.preprocess import load_image
    from tests.test_bags import TOPIC, _typestore, image_message, write_bag

    frame = load_image(davis / "JPEGImages/480p/dog/00004.jpg")[:48, :64]
    store = _typestore(False)
    bad = [image_message(store, frame, i, height=480, width=640) for i in range(3)]  # sizes unlike their data
    bag = write_bag(tmp_path / "bad", {TOPIC: ("sensor_msgs/msg/Image", bad)})
    assert main(["live", "-r", str(dog_ref), "--source", str(bag), "--no-window"]) == 2
    said = capsys.readouterr().err
    assert "none of its 3 messages" in said and TOPIC in said, said


def test_eval_live_with_no_replayable_clip_exits_non_zero(tmp_path, tiny_model_dir, capsys):
    from PIL import Image

    from tests.evaluate.test_live_eval import write_clip

    root = write_clip(tmp_path / "d", frames=4, step=2)
    first = root / "Annotations/480p/square/00000.png"
    Image.fromarray(np.zeros_like(np.asarray(Image.open(first)))).save(first)  # no object on the first frame
    code = main(["eval", "live", "-d", str(root), "--model", str(tiny_model_dir), "-o", str(tmp_path / "out"),
                 "--oracle", "--costs", "200,20", "--runtime", "torch", "-q", "--keyframes", "async"])
    said = capsys.readouterr().err
    assert code == 1 and "no clip of" in said and "marks no object pixel" in said, said


def test_a_one_frame_clip_plots_without_a_matplotlib_warning(tmp_path, tiny_model_dir):
    from tests.evaluate.test_live_eval import write_clip

    root = write_clip(tmp_path / "d", frames=1, step=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the run
        assert main(["eval", "live", "-d", str(root), "--model", str(tiny_model_dir), "-o", str(tmp_path / "out"),
                     "--oracle", "--costs", "200,20", "--runtime", "torch", "-q", "--keyframes", "async"]) == 0
    assert (tmp_path / "out/live_square.png").is_file()


def test_python_dash_m_dinomask_runs_the_command_line():
    done = subprocess.run([sys.executable, "-m", "dinomask", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "dinomask" in done.stdout, done.stderr


def test_remove_help_names_bags_and_the_robotics_extra(capsys):
    import os

    os.environ["COLUMNS"] = "200"
    try:
        assert main(["remove", "--help"]) == 0
    finally:
        del os.environ["COLUMNS"]
    said = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "or one ROS bag" in said and "a bare MCAP file when it ends in .mcap" in said
    assert "pip install 'dinomask[robotics]'" in said, said


def test_live_with_rerun_runs_where_opencv_has_no_window(tmp_path, dog_ref, davis, capsys, monkeypatch):
    """Issue 32: docs/robotics.md's 'live ... --rerun' exited 2 on the headless OpenCV setup.sh installs:
    with a Rerun viewer the frames are shown there, and OpenCV's missing window is only a note."""
    pytest.importorskip("rerun")
    import dinomask.live as live
    from dinomask.errors import DinomaskError

    def headless():
        raise DinomaskError("this OpenCV build has no window support (opencv-*-headless)")

    monkeypatch.setattr(live, "check_window_support", headless)
    recording = tmp_path / "live.rrd"
    assert main(["live", "-r", str(dog_ref), "--source", str(davis / "JPEGImages/480p/dog"), "--max-frames", "2",
                 "--rerun", str(recording)]) == 0, capsys.readouterr().err
    assert "Rerun viewer only" in capsys.readouterr().err and recording.is_file()
    assert main(["live", "-r", str(dog_ref), "--source", str(davis / "JPEGImages/480p/dog"), "--max-frames", "2"]) == 2
    assert "no window support" in capsys.readouterr().err  # without a viewer it is still an error, said before the model
