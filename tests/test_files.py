from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinomask.batch import OutputOptions, remove_batch
from dinomask.composite import Background
from dinomask.files import AtomicVideoWriter, plan_outputs, write_image_atomic
from dinomask.reference import Reference, ReferenceSettings
from dinomask.preprocess import InputGeometry
from dinomask.segmenter import Segmenter
from dinomask.video import FrameSource
from tests.helpers import BLUE, RED, canvas, reference_on_black


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def test_plan_keeps_folder_structure_and_refuses_collisions(tmp_path):
    _write(tmp_path / "in/a/x.jpg", canvas(10, 10))
    _write(tmp_path / "in/b/x.jpg", canvas(10, 10))
    (tmp_path / "in/notes.txt").write_text("not an image")
    items, problems = plan_outputs([tmp_path / "in"], tmp_path / "out")
    assert sorted(str(i.output.relative_to(tmp_path / "out")) for i in items) == ["a/x.png", "b/x.png"]
    assert problems == []
    with pytest.raises(ValueError, match="would both be written"):
        plan_outputs([tmp_path / "in/a/x.jpg", tmp_path / "in/b/x.jpg"], tmp_path / "out")
    _, problems = plan_outputs([tmp_path / "missing.jpg", tmp_path / "in/notes.txt"], tmp_path / "out")
    assert any("no such file" in p for p in problems) and any("not an image" in p for p in problems)


def test_output_never_overwrites_an_input(tmp_path):
    _write(tmp_path / "x.png", canvas(10, 10))
    with pytest.raises(ValueError, match="would overwrite the input"):
        plan_outputs([tmp_path / "x.png"], tmp_path)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "o.png"
    write_image_atomic(target, canvas(4, 4))
    assert target.is_file()

    def broken_save(self, fp, format=None, **params):
        Path(fp).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_image_atomic(tmp_path / "p.png", canvas(4, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


@pytest.fixture
def segmenter(colour_backbone):
    ref = Reference.from_images(colour_backbone, [reference_on_black(margin=14)], settings=ReferenceSettings(geometry=InputGeometry(140)))
    return Segmenter(colour_backbone, ref, method="paper")


def test_batch_writes_one_output_per_input_skips_existing_and_reports_corrupt(tmp_path, segmenter):
    frame = canvas(70, 140, BLUE)
    frame[:, :70] = RED
    _write(tmp_path / "in/good1.png", frame)
    _write(tmp_path / "in/good2.jpg", frame)
    (tmp_path / "in/corrupt.jpg").write_bytes(b"\xff\xd8garbage")
    items, _ = plan_outputs([tmp_path / "in"], tmp_path / "out")
    report = remove_batch(segmenter, items, OutputOptions(), show_progress=False)
    assert not report.ok
    assert list(report.failed) == [str(tmp_path / "in/corrupt.jpg")]
    assert "could not decode" in report.failed[str(tmp_path / "in/corrupt.jpg")]
    assert len(report.written) == 2
    out = np.asarray(Image.open(tmp_path / "out/good1.png"))
    assert out.shape == (70, 140, 3)
    assert out[35, 100].tolist() == [0, 0, 0] and out[35, 20].tolist() == list(RED)
    again = remove_batch(segmenter, items, OutputOptions(), show_progress=False)
    assert len(again.skipped) == 2 and not again.written
    forced = remove_batch(segmenter, items, OutputOptions(overwrite=True), show_progress=False)
    assert len(forced.written) == 2


def _video(path: Path, frames: int = 5) -> Path:
    with AtomicVideoWriter(path, 10, (140, 70)) as writer:
        for i in range(frames):
            frame = canvas(70, 140, BLUE)
            frame[:, : 28 + 14 * i] = RED
            writer.write(frame)
    return path


def test_video_round_trip_keeps_frame_order_and_timestamps(tmp_path):
    path = _video(tmp_path / "v.mp4")
    frames = list(FrameSource(str(path)))
    assert [f.index for f in frames] == list(range(5))
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))
    assert frames[0].image.shape == (70, 140, 3)


def test_batch_video_to_mp4_and_to_transparent_frames(tmp_path, segmenter):
    path = _video(tmp_path / "in/v.mp4")
    items, _ = plan_outputs([path], tmp_path / "out")
    report = remove_batch(segmenter, items, OutputOptions(), show_progress=False)
    assert report.ok and report.frames == 5
    assert len(list(FrameSource(str(tmp_path / "out/v.mp4")))) == 5
    items, _ = plan_outputs([path], tmp_path / "alpha", transparent=True)
    report = remove_batch(segmenter, items, OutputOptions(background=Background.parse("transparent")), show_progress=False)
    assert report.ok
    frames = sorted((tmp_path / "alpha/v").glob("*.png"))
    assert len(frames) == 5 and (tmp_path / "alpha/v/.complete").is_file()
    assert np.asarray(Image.open(frames[0])).shape == (70, 140, 4)


def test_stale_temporary_files_of_an_interrupted_write_are_removed_when_redone(tmp_path, segmenter):
    frame = canvas(70, 140, BLUE)
    _write(tmp_path / "in/a.png", frame)
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out/.a.x1y2z3.part.png"
    stale.write_bytes(b"half an image")
    unrelated = tmp_path / "out/.b.x1y2z3.part.png"
    unrelated.write_bytes(b"someone else's")
    items, _ = plan_outputs([tmp_path / "in"], tmp_path / "out")
    assert remove_batch(segmenter, items, OutputOptions(), show_progress=False).ok
    assert (tmp_path / "out/a.png").is_file()
    assert not stale.exists()
    assert unrelated.exists()  # only this output's own leftovers are touched
