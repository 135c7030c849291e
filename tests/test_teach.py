"""Teaching while frames come, with planted features (a patch's feature is its colour): a
negative click removes a distractor from the next frame and undo brings it back; a second
view finds an object whose appearance changed."""

from __future__ import annotations

import numpy as np
import pytest

from dinomask.errors import InvalidReferenceError
from dinomask.features import extract_features
from dinomask.keyframes import KeyframeSettings
from dinomask.postprocess import TemporalSettings
from dinomask.reference import Reference
from dinomask.segmenter import Segmenter, SegmenterConfig
from dinomask.teach import Teacher
from tests.helpers import reference_on_black

ORANGE, RED, BLUE, GREY = (230, 120, 30), (220, 60, 40), (30, 90, 210), (128, 128, 128)
H, W = 140, 280  # a 10 x 20 grid of 14 px patches at 140 px
GEOMETRY_CONFIG = dict(threshold="0.5", background="none", upsample="nearest", temporal=TemporalSettings(alpha=0.0),
                       keyframes=KeyframeSettings(policy="off"))


def frame(object_colour=ORANGE, distractor: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey scene with the object (left) and, optionally, a red distractor (right)."""
    image = np.full((H, W, 3), GREY, np.uint8)
    obj = np.zeros((H, W), bool)
    obj[28:112, 28:112] = True
    image[obj] = object_colour
    other = np.zeros((H, W), bool)
    if distractor:
        other[42:98, 182:238] = True
        image[other] = RED
    return image, obj, other


@pytest.fixture
def setup(colour_backbone):
    from dinomask.preprocess import InputGeometry

    settings_geometry = InputGeometry(resolution=140)
    from dinomask.reference import ReferenceSettings

    reference = Reference.from_images(colour_backbone, [reference_on_black(140, ORANGE)],
                                      settings=ReferenceSettings(geometry=settings_geometry))
    config = SegmenterConfig(geometry=settings_geometry, **GEOMETRY_CONFIG)
    segmenter = Segmenter(colour_backbone, reference, config)
    return colour_backbone, reference, segmenter


def test_a_negative_click_removes_a_distractor_and_undo_brings_it_back(setup):
    backbone, reference, segmenter = setup
    image, obj, distractor = frame()
    before = segmenter.predict(image).mask
    assert before[distractor].mean() > 0.9 and before[obj].mean() > 0.9  # red passes for orange at 0.5
    teacher = Teacher(backbone, reference, on_change=segmenter.set_reference)
    teacher.click(image, [(210 / W, 70 / H)], positive=False)  # on the distractor
    after = segmenter.predict(image).mask
    assert after[distractor].mean() == 0.0 and after[obj].mean() > 0.9
    assert teacher.current.teaching.negative_clicks == 1 and len(teacher.current.negatives) >= 1
    teacher.undo()
    assert segmenter.predict(image).mask[distractor].mean() > 0.9
    with pytest.raises(InvalidReferenceError, match="nothing to undo"):
        teacher.undo()


def test_a_second_view_finds_an_object_whose_appearance_changed(setup):
    backbone, reference, segmenter = setup
    sequence = [frame(ORANGE, distractor=False) for _ in range(5)] + [frame(BLUE, distractor=False) for _ in range(5)]
    lost = [segmenter.predict(image).mask for image, _, _ in sequence]
    iou = [float((m & o).sum() / (m | o).sum()) for m, (_, o, _) in zip(lost, sequence)]
    assert min(iou[:5]) > 0.9 and max(iou[5:]) < 0.1  # the blue half is lost with one view
    teacher = Teacher(backbone, reference, on_change=segmenter.set_reference)
    image, mask, _ = sequence[5]
    teacher.add_view(image, mask)  # the user's view of the changed object (its mask after clicks)
    found = [segmenter.predict(image).mask for image, _, _ in sequence[6:]]
    assert all(float((m & o).sum() / (m | o).sum()) > 0.9 for m, (_, o, _) in zip(found, sequence[6:]))
    assert segmenter.predict(sequence[0][0]).mask[sequence[0][1]].mean() > 0.9  # the first look is still known
    assert teacher.current.teaching.views == ((H, W),)
    teacher.reset()
    assert segmenter.predict(sequence[6][0]).mask[sequence[6][1]].mean() < 0.1


def test_a_view_with_an_empty_or_full_mask_is_refused(setup):
    backbone, reference, _ = setup
    image, _, _ = frame()
    with pytest.raises(InvalidReferenceError, match="empty"):
        reference.add_view(backbone, image, np.zeros((H, W), bool))
    with pytest.raises(InvalidReferenceError, match="whole frame"):
        reference.add_view(backbone, image, np.ones((H, W), bool))


def test_a_taught_reference_keeps_its_clicks_and_views_on_disk(setup, tmp_path):
    backbone, reference, _ = setup
    image, obj, _ = frame()
    (features,) = extract_features(backbone, [image], reference.settings.geometry)
    taught = reference.add_points(features, [(0.75, 0.5)], positive=False).add_points(features, [(0.2, 0.5)], positive=True)
    taught = taught.add_view(backbone, image, obj)
    loaded = Reference.load(taught.save(tmp_path / "taught.npz"))
    assert loaded.teaching == taught.teaching
    assert (loaded.teaching.positive_clicks, loaded.teaching.negative_clicks, loaded.teaching.views) == (1, 1, ((H, W),))
    assert np.allclose(loaded.negatives, taught.negatives) and np.allclose(loaded.positives, taught.positives)
    with pytest.raises(InvalidReferenceError, match="fractions"):
        reference.add_points(features, [(1.5, 0.5)], positive=True)


def _clip(path, frames):
    from dinomask.files import AtomicVideoWriter

    with AtomicVideoWriter(path, 5, (W, H)) as writer:
        for image in frames:
            writer.write(image)
    return path


def test_live_commands_teach_between_frames_and_the_taught_reference_is_saved(setup, tmp_path):
    from dinomask.live import LiveOptions, run_live_command

    backbone, reference, segmenter = setup
    clip = _clip(tmp_path / "clip.mp4", [frame(ORANGE, distractor=False)[0]] * 10 + [frame(BLUE, distractor=False)[0]] * 10)
    options = LiveOptions(source=str(clip), window=False, save_ref=tmp_path / "taught.npz")
    stats = run_live_command(segmenter, options, commands=iter(["+", "a", "x", "s", "q"]))
    assert stats.frames_processed < 20  # q stopped it
    saved = Reference.load(tmp_path / "taught.npz")
    assert saved.teaching.views == ((H, W),)
    assert segmenter.config.threshold == "0.55"  # + moved the fixed 0.5 by one step
    with pytest.raises(Exception, match="exists"):
        run_live_command(segmenter, options, commands=iter(["q"]))  # no surprise overwrite of the saved file


def test_the_live_command_writes_the_reference_on_exit_without_a_window(tmp_path, dog_ref, davis, capsys):
    from dinomask.cli import main
    from dinomask.files import AtomicVideoWriter
    from dinomask.preprocess import load_image

    frames = [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:4]]
    clip = tmp_path / "dog.mp4"
    with AtomicVideoWriter(clip, 5, (frames[0].shape[1], frames[0].shape[0])) as writer:
        for image in frames:
            writer.write(image)
    assert main(["live", "-r", str(dog_ref), "--source", str(clip), "--no-window", "-o", str(tmp_path / "rec.mp4"),
                 "--save-ref", str(tmp_path / "taught.npz")]) == 0
    assert Reference.load(tmp_path / "taught.npz").teaching.views == ()
    assert "saved" in capsys.readouterr().err


def test_teaching_memory_is_bounded_whatever_the_user_does(setup):
    """Each step keeps a reference; undo steps, views and clicked rows have budgets set up front."""
    backbone, reference, _ = setup
    teacher = Teacher(backbone, reference, max_history=3, max_views=2)
    image, obj, _ = frame()
    for _ in range(6):
        teacher.click(image, [(0.2, 0.5)], positive=True)
        assert len(teacher.history) <= 4 and teacher.history[0] is reference  # the original always stays
    rows = Teacher(backbone, reference, max_clicked_rows=12)
    rows.click(image, [(0.75, 0.5)], positive=False)  # the distractor's patch and its 8 alike neighbours
    assert len(rows.current.negatives) == 9
    with pytest.raises(InvalidReferenceError, match="would hold 18 clicked background features, over the 12 kept"):
        rows.click(image, [(0.75, 0.5)], positive=False)
    assert len(rows.current.negatives) == 9  # checked before the click is kept: never over the budget
    tight = Teacher(backbone, reference, max_clicked_rows=4)
    with pytest.raises(InvalidReferenceError, match="would hold 9"):
        tight.click(image, [(0.75, 0.5)], positive=False)
    assert len(tight.current.negatives) == 0 and len(tight.history) == 1
    teacher.add_view(image, obj)
    teacher.add_view(image, obj)
    with pytest.raises(InvalidReferenceError, match="2 added views"):
        teacher.add_view(image, obj)
