"""Random weights are visible wherever results are (issue 32 item 2): the server's health and page,
written images, bags and Rerun recordings say it, from the one source (``backbone.random_weights``)."""

from __future__ import annotations

import pytest
from PIL import Image

from dinomask.cli import main


def test_a_written_image_says_its_weights_were_random(tmp_path, dog_ref, davis):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(tmp_path / "out"), "-q"]) == 0
    text = Image.open(tmp_path / "out/00004.png").text["dinomask"]
    assert "RANDOM WEIGHTS" in text and "means nothing" in text


def test_a_bag_and_a_rerun_recording_say_it(tmp_path, dog_ref, davis):
    pytest.importorskip("rosbags")
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    from dinomask.bags import read_mark
    from dinomask.preprocess import load_image
    from tests.test_bags import _bag

    frames = [load_image(p)[:96, :128] for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:2]]
    bag = _bag(tmp_path, frames, "mcap")
    recording = tmp_path / "run.rrd"
    assert main(["remove", "-r", str(dog_ref), str(bag), "-o", str(tmp_path / "masks"), "-q",
                 "--rerun", str(recording)]) == 0
    assert "RANDOM WEIGHTS" in read_mark(tmp_path / "masks")["made_by"]
    chunks = [c for c in RrdReader(recording).stream().to_chunks() if str(c.entity_path) == "/dinomask"]
    assert chunks, "the recording has no /dinomask note"
    assert "RANDOM WEIGHTS" in str(chunks[0].to_record_batch() if hasattr(chunks[0], "to_record_batch") else chunks[0])
