"""--rerun on live and remove (issue 27): a recording written and read back with Rerun's own reader."""

from __future__ import annotations

import pytest

pytest.importorskip("rerun")

from dinomask.cli import main  # noqa: E402
from dinomask.rerun_view import parse_target  # noqa: E402


def _entities(path) -> dict[str, set[str]]:
    """entity path -> its time lines, from Rerun's own reader."""
    from rerun.chunk import RrdReader

    found: dict[str, set[str]] = {}
    for chunk in RrdReader(path).stream().to_chunks():
        found.setdefault(str(chunk.entity_path), set()).update(chunk.timeline_names)
    return found


def test_remove_with_rerun_saves_frames_masks_and_similarity(tmp_path, dog_ref, davis):
    frames = sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:2]
    recording = tmp_path / "run.rrd"
    assert main(["remove", "-r", str(dog_ref), *map(str, frames), "-o", str(tmp_path / "out"), "-q",
                 "--rerun", str(recording)]) == 0
    entities = _entities(recording)
    for name in ("/camera", "/camera/mask", "/similarity"):
        assert "frame" in entities[name], (name, entities)
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_live_on_a_bag_logs_its_capture_time_and_the_loop(tmp_path, dog_ref, davis):
    from dinomask.preprocess import load_image
    from tests.test_bags import TOPIC, _bag

    frames = [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:3]]
    bag = _bag(tmp_path, frames, "mcap")
    recording = tmp_path / "live.rrd"
    assert main(["live", "-r", str(dog_ref), "--source", str(bag), "--topic", TOPIC, "--no-window",
                 "--rerun", str(recording)]) == 0
    entities = _entities(recording)
    for name in ("/camera", "/camera/mask", "/similarity", "/loop/fps", "/loop/latency_ms"):
        assert {"frame", "capture_time"} <= entities[name], (name, entities)


@pytest.mark.parametrize("target,kind", [("spawn", "spawn"), ("out/run.rrd", "save"), ("localhost:9876", "connect"),
                                         ("[::1]:9876", "connect")])
def test_rerun_targets(target, kind):
    assert parse_target(target)[0] == kind


def test_a_bad_rerun_target_is_refused_before_the_model_loads(tmp_path, dog_ref, davis, capsys):
    frame = davis / "JPEGImages/480p/dog/00004.jpg"
    assert main(["remove", "-r", str(dog_ref), str(frame), "-o", str(tmp_path / "o"), "--model", "/nonexistent/m",
                 "--rerun", "nowhere"]) == 2
    said = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "--rerun FILE.rrd or --rerun HOST:PORT" in said and "/nonexistent/m" not in said


def test_a_bare_rerun_means_spawn():
    from dinomask.cli import _expand_bare_rerun

    assert _expand_bare_rerun(["live", "--rerun"]) == ["live", "--rerun", "spawn"]
    assert _expand_bare_rerun(["live", "--rerun", "--no-window"]) == ["live", "--rerun", "spawn", "--no-window"]
    assert _expand_bare_rerun(["live", "--rerun", "a.rrd"]) == ["live", "--rerun", "a.rrd"]


def _components(path) -> dict[str, set[str]]:
    """entity path -> the names of its components, from Rerun's own reader."""
    from rerun.chunk import RrdReader

    found: dict[str, set[str]] = {}
    for chunk in RrdReader(path).stream().to_chunks():
        found.setdefault(str(chunk.entity_path), set()).update(chunk.to_record_batch().schema.names)
    return found


def test_the_mask_is_logged_over_its_frame_and_frames_are_jpeg_unless_asked(tmp_path, dog_ref, davis):
    """Issue 32 item 5: the segmentation is a child of the frame's entity (the viewer overlays it),
    frames are JPEG by default (a recording a fraction of the raw one's size), raw on request."""
    from dinomask.preprocess import load_image
    from dinomask.reference import Reference
    from dinomask.rerun_view import RerunView
    from dinomask.segmenter import Segmenter
    from dinomask.backbones import load_backbone

    reference = Reference.load(dog_ref)
    backbone = load_backbone(reference.backbone.name, device="cpu")
    segmenter = Segmenter(backbone, reference)
    frames = [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:3]]
    sizes = {}
    for images in ("jpeg", "raw"):
        path = tmp_path / f"{images}.rrd"
        view = RerunView(str(path), segmenter.object_names, images=images)
        for index, frame in enumerate(frames):
            view.log(index, frame, segmenter.predict(frame))
        view.close()
        sizes[images] = path.stat().st_size
        components = _components(path)
        blob = any("EncodedImage" in c for c in components["/camera"])
        assert blob == (images == "jpeg"), components["/camera"]
        assert any("SegmentationImage" in c for c in components["/camera/mask"])
    raw_bytes = sum(f.nbytes for f in frames)
    assert sizes["raw"] > 0.5 * raw_bytes and sizes["jpeg"] < 0.25 * sizes["raw"], sizes  # measured: 0.44 MB against 3.6 MB
    with pytest.raises(ValueError, match="'jpeg' or 'raw'"):
        RerunView(str(tmp_path / "x.rrd"), images="png")
