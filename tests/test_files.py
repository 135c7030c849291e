from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinomask.atomic import temporary_file, temporary_folder
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
    """Only this output's own leftovers go: never those of a name that starts the same (issue 26:
    the Ray worker for cam.mp4 deleted the temporary file another worker was writing for cam.1.mp4)."""
    frame = canvas(70, 140, BLUE)
    for name in ("a.png", "[x].png"):
        _write(tmp_path / "in" / name, frame)
    (tmp_path / "out").mkdir()
    stale = [Path(temporary_file(tmp_path / "out/a.png")), Path(temporary_file(tmp_path / "out/[x].png")),
             temporary_folder(tmp_path / "out/a.png")]
    others = [Path(temporary_file(tmp_path / "out" / name)) for name in ("a.b.png", "b.png", "a.1.png", "x.png")]
    for path in stale + others:
        assert path.name.startswith(".") and ".part" in path.name
    items, _ = plan_outputs([tmp_path / "in"], tmp_path / "out")
    assert remove_batch(segmenter, items, OutputOptions(), show_progress=False).ok
    assert (tmp_path / "out/a.png").is_file() and (tmp_path / "out/[x].png").is_file()
    assert not any(path.exists() for path in stale)  # '[x]' (a glob's bracket) had its own cleaned too
    assert all(path.exists() for path in others)  # a.b.png's and a.1.png's writes in progress are untouched


def test_stale_parts_match_exactly_names_that_share_a_start():
    from dinomask.atomic import part_stem

    stems = {part_stem(Path(name)) for name in ("cam.mp4", "cam.1.mp4", "cam.2.jpg", "a.png", "a.b.png", "[a].png", "*.png")}
    assert len(stems) == 7
    assert not any(a != b and b.startswith(a + ".") for a in stems for b in stems)


def test_a_legal_long_output_name_is_written(tmp_path, segmenter):
    """A 244-byte output name is legal; its temporary name must stay under 255 bytes too."""
    name = "n" * 240 + ".png"
    _write(tmp_path / "in" / name, canvas(70, 140, BLUE))
    items, _ = plan_outputs([tmp_path / "in"], tmp_path / "out")
    report = remove_batch(segmenter, items, OutputOptions(), show_progress=False)
    assert report.ok, report.summary()
    assert (tmp_path / "out" / name).is_file()
    assert len(temporary_file(tmp_path / "out" / ("m" * 250 + ".png")).name.encode()) < 80


def test_a_video_frames_folder_and_an_image_folder_of_one_name_are_refused_up_front(tmp_path):
    """v.mp4 beside v/000000.jpg (what ffmpeg -i v.mp4 v/%06d.jpg writes): with a transparent
    background both would land in OUT/v/, one replacing the other."""
    _video(tmp_path / "in/v.mp4")
    _write(tmp_path / "in/v/000000.jpg", canvas(70, 140, BLUE))
    with pytest.raises(ValueError, match="writes its frames into the folder .*v.*000000"):
        plan_outputs([tmp_path / "in"], tmp_path / "out", transparent=True)
    items, _ = plan_outputs([tmp_path / "in"], tmp_path / "out")  # as mp4 they do not meet
    assert sorted(str(i.output.relative_to(tmp_path / "out")) for i in items) == ["v.mp4", "v/000000.png"]


def test_overwriting_a_frames_folder_leaves_no_frame_of_the_old_run(tmp_path, segmenter):
    options = OutputOptions(background=Background.parse("transparent"), overwrite=True)
    out = tmp_path / "out"
    items, _ = plan_outputs([_video(tmp_path / "in/v.mp4", frames=9)], out, transparent=True)
    assert remove_batch(segmenter, items, options, show_progress=False).ok
    assert len(list((out / "v").glob("*.png"))) == 9
    items, _ = plan_outputs([_video(tmp_path / "in/v.mp4", frames=4)], out, transparent=True)
    assert remove_batch(segmenter, items, options, show_progress=False).ok
    assert sorted(p.name for p in (out / "v").glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert len(json.loads((out / "v/timestamps.json").read_text())["frames"]) == 4
    assert [p.name for p in out.iterdir()] == ["v"]  # no folder left beside it


def test_video_codecs_auto_is_h264_where_opencv_has_it_else_stated_mpeg4_and_vp9_on_request(tmp_path, caplog, monkeypatch):
    """Issue 32 item 5: ``auto`` writes H.264 where this OpenCV has an encoder, else MPEG-4 Part 2,
    said once with what to do; VP9 (browsers play it, 25x slower to encode) when asked. Every file
    reads back whole, and the probe prints nothing of FFmpeg's."""
    import cv2

    from dinomask import files
    from dinomask.files import VIDEO_CODECS, video_codec

    monkeypatch.setattr(files, "_codec_said", [])  # said once a process: this test must see it
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
    for choice in ("auto", "vp9", "mp4v"):
        path = tmp_path / f"{choice}.mp4"
        with AtomicVideoWriter(path, 24.0, (64, 48), codec=choice) as writer:
            for frame in frames:
                writer.write(frame)
        capture = cv2.VideoCapture(str(path))
        read = 0
        while capture.read()[0]:
            read += 1
        capture.release()
        assert read == len(frames), (choice, writer.codec, read)
        assert writer.codec == video_codec(".mp4", choice)[1]
    h264 = files._writes(VIDEO_CODECS["h264"][0], ".mp4")
    assert video_codec(".mp4", "auto")[1] == ("H.264" if h264 else "MPEG-4 Part 2")
    if not h264:
        assert any("browsers do not" in r.getMessage() and "--video-codec vp9" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="auto or one of"):
        video_codec(".mp4", "hevc")


def test_the_codec_probe_keeps_ffmpeg_quiet(capfd):
    from dinomask import files

    files._codec_cache.clear()
    files.video_codec(".mp4", "auto")
    assert capfd.readouterr().err == ""

