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
    for name in ("/camera/image", "/camera/mask", "/camera/similarity"):
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
    for name in ("/camera/image", "/camera/mask", "/camera/similarity", "/loop/fps", "/loop/latency_ms"):
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
