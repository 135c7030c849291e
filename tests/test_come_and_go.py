"""The loop when objects come and go (issue 30): a scene cut drops the carried mask at once and a
key made before it is refused; an object that leaves the frame and comes back is found again
within a few frames; the scenario builder writes what it says."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dinomask.keyframes import FlowCarrier
from tests.helpers import import_benchmark, textured

SIZE = (240, 320)


def _scene(seed: int, tint) -> np.ndarray:
    return textured(*SIZE, seed=seed, tint=tint, scales=(2.0, 8.0))


def test_a_scene_cut_drops_the_carried_mask_and_refuses_a_key_from_before_it():
    first, second = _scene(1, (0.2, 0.3, 0.9)), _scene(7, (0.9, 0.8, 0.2))
    carrier = FlowCarrier(flow_side=160)
    carrier.step(0, first)
    square = np.full((15, 20), -1.0, np.float32)
    square[5:10, 5:10] = 1.0
    assert carrier.land(0, [square, np.zeros_like(square)])
    for index in range(1, 6):  # the same scene, a little jitter: carried, never a cut
        shifted = np.roll(first, index, axis=1)
        assert (carrier.step(index, shifted)[0] > 0).any(), index
    assert carrier.cut_at is None
    maps = carrier.step(6, second)  # a cut
    assert carrier.cut_at == 6 and not (maps[0] > 0).any()  # nothing of the old scene is carried onto the new
    assert not carrier.land(4, [square, np.zeros_like(square)])  # a key made before the cut is refused
    assert carrier.land(6, [square, np.zeros_like(square)])  # one made on the cut frame is taken
    assert (carrier.step(7, second)[0] > 0).any()


def test_a_whip_pan_is_no_scene_cut_where_a_splice_is():
    """The warp's error jumps where the flow cannot follow the motion, not only at a cut: a view that
    jumps far along the same scene fails the flow as a splice does, but keeps its colours
    (CUT_COLOUR); a splice of another scene changes them."""
    import dinomask.keyframes as keyframes

    def scene(width: int, seed: int, tint) -> np.ndarray:  # high contrast: the warp's error is large where it fails
        grey = textured(240, width, seed=seed, tint=(0.5, 0.5, 0.5), scales=(2.0, 8.0))[..., 0].astype(np.float32)
        grey = np.clip((grey - grey.mean()) * 6 + 128, 0, 255) / 255
        return (np.stack([grey * 0.6 + 0.4 * t for t in tint], axis=2) * 255).astype(np.uint8)

    world = scene(1200, 1, (0.2, 0.3, 0.9))
    other = scene(320, 7, (0.9, 0.8, 0.2))
    views = [np.ascontiguousarray(world[:, x:x + 320]) for x in range(0, 20, 2)]
    jumped = np.ascontiguousarray(world[:, 700:1020])  # a whip pan: far along the same scene

    def cut_at(colour_rule: bool, last: np.ndarray) -> int | None:
        carrier = FlowCarrier(flow_side=160)
        before = keyframes.CUT_COLOUR
        keyframes.CUT_COLOUR = before if colour_rule else 0.0
        try:
            for index, view in enumerate(views + [last]):
                carrier.step(index, view)
        finally:
            keyframes.CUT_COLOUR = before
        return carrier.cut_at

    assert keyframes.colour_change(FlowCarrier._small_colour(jumped, (160, 213)),
                                   FlowCarrier._small_colour(views[-1], (160, 213))) < keyframes.CUT_COLOUR
    assert cut_at(False, jumped) == len(views)  # the warp's error alone calls the jump a cut
    assert cut_at(True, jumped) is None  # its colours say it is the same scene
    assert cut_at(True, other) == len(views)  # a splice changes them


def _panned_view(width: int, thing_columns: tuple[int, int], offsets) -> list[tuple[float, float, int]]:
    """A camera panning over a textured world (240 px high) holding a textured object in
    ``thing_columns``, its view 320 px wide with its left edge at each of ``offsets``: the object's
    ground truth of the first view is carried by :class:`FlowCarrier` (160 px) over the others. Each
    later view gives (IoU of the carried mask with the truth at the flow's size, the share of the
    view the object holds, DIS passes of that step)."""
    height, view = 240, 320
    world = textured(height, width, seed=3, tint=(0.5, 0.5, 0.4), scales=(2.0, 8.0))
    thing = np.zeros((height, width), bool)
    thing[50:190, thing_columns[0]:thing_columns[1]] = True
    world[thing] = textured(height, width, seed=4, tint=(0.9, 0.3, 0.2), scales=(2.0, 8.0))[thing]
    carrier, steps = FlowCarrier(flow_side=160), []
    for index, offset in enumerate(offsets):
        image, truth = np.ascontiguousarray(world[:, offset:offset + view]), thing[:, offset:offset + view]
        maps = carrier.step(index, image)
        if index == 0:
            carrier.land(0, [np.where(truth, 1.0, -1.0).astype(np.float32), truth.astype(np.float32)])
            continue
        small = cv2.resize(truth.astype(np.uint8), maps.shape[:0:-1], interpolation=cv2.INTER_NEAREST) > 0
        carried = maps[0] > 0
        steps.append(((carried & small).sum() / (carried | small).sum(), float(small.mean()), carrier.passes))
    return steps


def test_an_object_the_camera_pans_back_onto_grows_into_the_view_as_it_enters():
    """A camera panning back onto an object cut by the frame's left edge: each frame 10 px more of it
    comes into view. What comes in has nothing in the previous frame to go back to, so it fails the
    forward-backward check, and no object pixel lands on it by forward flow; it is still no uncovered
    background, and the carried mask grows with the object (it was erased strip by strip: IoU 0.71
    after eight frames, where it is now above 0.95)."""
    steps = _panned_view(560, (40, 220), range(160, 70, -10))
    assert all(iou > 0.95 for iou, _, _ in steps), steps
    assert steps[-1][1] > 1.9 * (140 / 240) * (220 - 160) / 320  # it came in: twice what was in view


def test_an_object_is_carried_across_a_pan_faster_than_dis_follows_alone():
    """A camera panning 45 px a frame (30 px at the flow's 160 px): DIS alone loses the shift, and the
    carried mask fell to IoU 0.63, 0.38, 0.21, 0.08 over the first four frames. Started from the
    camera's shift (:class:`~dinomask.keyframes.PannedFlow`), it stays above 0.9."""
    steps = _panned_view(2400, (900, 1100), range(810, 810 + 6 * 45, 45))
    assert all(iou > 0.9 for iou, _, _ in steps), steps
    assert steps[0][2] == 3  # DIS ran again from the shift where it lost it


def _leaving_clip(root: Path, frames: int = 48) -> Path:
    """A textured square, brighter than its background (flow works on grey), that moves right out of
    the frame (gone from frame 10 to 30) and comes back."""
    images, masks = root / "JPEGImages/480p/leaves", root / "Annotations/480p/leaves"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    background = _scene(1, (0.2, 0.3, 0.9))
    square = textured(60, 60, seed=2, tint=(0.95, 0.8, 0.2), scales=(2.0, 6.0, 16.0))
    for i in range(frames):
        x = 180 + 14 * i if i < 20 else 180 + 14 * (40 - i)  # out past x=320 from frame 10 on, back at 30
        frame, mask = background.copy(), np.zeros(SIZE, np.uint8)
        left, right = max(0, x), min(SIZE[1], x + 60)
        if right > left:
            frame[90:150, left:right] = square[:, left - x:right - x]
            mask[90:150, left:right] = 255
        Image.fromarray(frame).save(images / f"{i:05d}.png")
        Image.fromarray(mask).save(masks / f"{i:05d}.png")
    return root


def test_an_object_that_leaves_the_frame_and_returns_is_found_again(tmp_path, colour_backbone):
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.live import LiveEvalSettings, replay_sequence
    from dinomask.keyframes import KeyframeSettings
    from dinomask.preprocess import InputGeometry
    from dinomask.reference import Reference, ReferenceSettings
    from dinomask.segmenter import Segmenter, SegmenterConfig
    from tests.helpers import reference_on_black

    reference = Reference.from_images(colour_backbone, [reference_on_black(colour=(230, 25, 25))],
                                      settings=ReferenceSettings(geometry=InputGeometry(140)))
    config = SegmenterConfig.preset("dinomask").replace(keyframes=KeyframeSettings.parse("async"),
                                                        background="none", threshold="0.9",
                                                        geometry=InputGeometry(tokens=300))
    sequence = load_dataset(_leaving_clip(tmp_path)).sequences[0]
    figures = replay_sequence(sequence, Segmenter(colour_backbone, reference, config), KeyframeSettings.parse("async"),
                              LiveEvalSettings(oracle=True, costs=(100, 20)))
    assert figures["absent_frames"] >= 8
    assert figures["reacquire_missed"] == 0 and figures["reacquire_frames_max"] <= 8, figures
    assert figures["absent_fp_rate"] <= 0.3, figures


def test_the_scenario_builder_writes_cuts_pans_tiles_and_long_runs(tmp_path, davis):
    from dinomask.evaluate.datasets import load_dataset, load_truth_labels
    from dinomask.evaluate.scenarios import build

    cut = build("cut", [davis], tmp_path / "cut", k=3)
    assert len(cut) == 2
    source = next(s for s in load_dataset(davis).sequences if cut[0].name.startswith(s.name + "-cut3-"))
    sequence = next(s for s in load_dataset(tmp_path / "cut").sequences if s.name == cut[0].name)
    present = [bool(load_truth_labels(f.mask).any()) for f in sequence.frames]
    half = len(source.frames) // 2
    assert present == [True] * half + [False] * 3 + [True] * (len(source.frames) - half)
    tiles = build("tile", [davis], tmp_path / "tile", pairs=1)
    labels = load_truth_labels(next(iter(sorted(tiles[0].parent.parent.parent.glob("Annotations/480p/*/00000.png")))))
    assert set(np.unique(labels)) == {0, 1, 2} and labels.shape == (480, 854 * 2)
    long = build("long", [davis], tmp_path / "long", n=13)
    assert len(list(long[0].glob("*.jpg"))) == 13
    with pytest.raises(FileExistsError):
        build("long", [davis], tmp_path / "long", n=13)  # nothing is written over



def test_a_slower_pan_takes_longer_off_the_object_and_back():
    """``--speed``: the pan off the object and back takes an eighth of the clip each way at 1, twice
    that at 0.5 (starting after an eighth of the clip where a quarter leaves too little room); a clip
    too short for it is left out, and a speed that is not above 0 is refused."""
    from dinomask.evaluate.scenarios import _pan_offsets

    def ramp(offsets):  # frames from the first that moves to the first at the full travel
        return offsets.index(100.0) - next(t for t, o in enumerate(offsets) if o) + 1

    default, slow = _pan_offsets(96, 100.0, 6), _pan_offsets(96, 100.0, 6, speed=0.5)
    assert ramp(default) == 12 and default.index(100 / 12) == 24  # off over 12 frames, after a quarter
    assert ramp(slow) == 24 and slow.index(100 / 24) == 12  # 24 frames, after an eighth
    assert sum(o == 100 for o in slow) == 1 + 6 and slow[-24:] == [0.0] * 24  # there, held 6, then on it for 24
    assert _pan_offsets(60, 100.0, 12, speed=0.5) is None
    with pytest.raises(ValueError, match="above 0"):
        _pan_offsets(96, 100.0, 6, speed=0)


def test_the_clips_alone_are_the_frames_their_pair_shows_and_each_object_is_compared_with_them(tmp_path, davis):
    """A pair is as long as its shorter clip: ``alone`` writes each clip of each pair cut to that
    length (``NAME@LENGTH``), with the same ground truth as its half of the pair, and
    benchmarks/tile_vs_alone.py compares each object with those frames, not the whole clip."""
    from dinomask.evaluate.datasets import load_dataset, load_truth_labels
    from dinomask.evaluate.scenarios import build

    (pair,) = build("tile", [davis], tmp_path / "tile", pairs=1)
    written = build("alone", [davis], tmp_path / "alone", pairs=1)
    length = len(list(pair.glob("*.jpg")))
    names = pair.name.split("+")
    assert sorted(p.name for p in written) == sorted(f"{n}@{length}" for n in names)
    with pytest.raises(FileExistsError):
        build("alone", [davis], tmp_path / "alone", pairs=1)  # nothing is written over, nothing skipped
    for number, name in enumerate(names, start=1):
        alone = load_dataset(tmp_path / "alone").sequences
        (sequence,) = [s for s in alone if s.name == f"{name}@{length}"]
        assert len(sequence.frames) == length
        half = load_truth_labels(tmp_path / "tile/Annotations/480p" / pair.name / "00001.png")
        half = half[:, (number - 1) * 854:number * 854] == number
        np.testing.assert_array_equal(load_truth_labels(sequence.frames[1].mask) > 0, half)

    tile_vs_alone = import_benchmark("tile_vs_alone")
    tile = {pair.name: {"frames": length, "objects": {"1": {"live_j": 0.70}, "2": {"live_j": 0.50}}}}
    singles = {f"{names[0]}@{length}": {"live_j": 0.72}, f"{names[1]}@{length}": {"live_j": 0.60},
               names[1]: {"live_j": 0.40}}  # the whole clip would flatter the pair
    rows = tile_vs_alone.compare(tile, singles)
    assert [round(r["difference"], 3) for r in rows] == [-0.02, -0.1]
    with pytest.raises(SystemExit, match="scenarios.py alone"):
        tile_vs_alone.compare(tile, {names[0]: {"live_j": 0.7}})

def _planted_clip(root: Path, frames: int, size=(480, 640)) -> Path:
    images, masks = root / "JPEGImages/480p/planted", root / "Annotations/480p/planted"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    background = textured(*size, seed=1, tint=(0.2, 0.3, 0.9), scales=(2.0, 8.0))
    square = textured(120, 120, seed=2, tint=(0.95, 0.8, 0.2), scales=(2.0, 6.0, 16.0))
    for i in range(frames):
        frame, mask = background.copy(), np.zeros(size, np.uint8)
        x = 100 + 8 * i
        frame[180:300, x:x + 120] = square
        mask[180:300, x:x + 120] = 255
        Image.fromarray(frame).save(images / f"{i:05d}.jpg", quality=90)
        Image.fromarray(mask).save(masks / f"{i:05d}.png")
    return root


def test_a_pan_is_built_only_where_the_camera_comes_back_in_time_to_see_the_object_again(tmp_path):
    """A pan holds ``hold`` frames away from the object and must then be back on it for as long as it
    took to come back: a return on the clip's last frames (or none at all) could not be re-acquired
    by any loop, and was scored as missed (3 of 11 clips at 3x zoom and a 24-frame hold)."""
    from dinomask.evaluate.datasets import load_dataset, load_truth_labels
    from dinomask.evaluate.scenarios import build

    source = _planted_clip(tmp_path / "source", 24)  # on it 6 frames, 4 to pan off, hold, 4 back, 4 after
    assert build("pan", [source], tmp_path / "too-long", hold=7) == []
    (written,) = build("pan", [source], tmp_path / "fits", hold=6)
    present = [bool(load_truth_labels(f.mask).any()) for f in load_dataset(tmp_path / "fits").sequences[0].frames]
    assert not all(present) and all(present[-8:]), present  # it left, came back, and stays in view


def test_eval_live_streams_a_long_clip_in_the_memory_of_a_short_one(tmp_path, colour_backbone):
    """Issue 30: every frame of a set was held in memory (1.9 GiB at 1280x720 on davis-motion). A
    300-frame clip at 640x480 would hold about 460 MB of frames, truths and shown masks; streamed,
    its peak RSS stays within 60 MiB of a 30-frame clip's."""
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.live import LiveEvalSettings, evaluate_live
    from dinomask.evaluate.scenarios import long
    from dinomask.keyframes import KeyframeSettings
    from dinomask.preprocess import InputGeometry
    from dinomask.reference import Reference, ReferenceSettings
    from dinomask.segmenter import Segmenter, SegmenterConfig
    from tests.helpers import peak_rss_growth, reference_on_black

    source = load_dataset(_planted_clip(tmp_path / "source", 24)).sequences[0]
    reference = Reference.from_images(colour_backbone, [reference_on_black(colour=(230, 200, 50))],
                                      settings=ReferenceSettings(geometry=InputGeometry(140)))
    config = SegmenterConfig.preset("dinomask").replace(keyframes=KeyframeSettings.parse("async"),
                                                        background="none", geometry=InputGeometry(tokens=300))
    growth, results = {}, {}
    for frames in (30, 300):
        long(source, tmp_path / f"long{frames}", frames)
        dataset = load_dataset(tmp_path / f"long{frames}")

        def run():
            results[frames] = evaluate_live(dataset, lambda s, k: Segmenter(colour_backbone, reference, config),
                                            ["async"], LiveEvalSettings(oracle=True, costs=(100, 20)))

        growth[frames] = peak_rss_growth(run)
    figures = results[300]["schedules"]["async"]
    assert figures["sequences"]["planted-long300"]["frames"] == 300 and figures["live_j"] > 0.5
    assert growth[300] - growth[30] < 60, growth


def test_eval_live_scores_each_object_of_a_label_map(tmp_path, tiny_model_dir, davis):
    """Two clips side by side (the tile scenario): one reference per object of the first frame's
    label map, each object scored on its own, the clip by their mean (DAVIS-2017)."""
    import json

    from dinomask.cli import main
    from dinomask.evaluate.scenarios import build

    build("tile", [davis], tmp_path / "tile", pairs=1)
    out = tmp_path / "out"
    assert main(["eval", "live", "-d", str(tmp_path / "tile"), "--model", str(tiny_model_dir), "-o", str(out),
                 "--oracle", "--costs", "100,20", "--runtime", "torch", "-q", "--keyframes", "async",
                 "--max-frames", "6"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    (clip,) = metrics["schedules"]["async"]["sequences"].values()
    assert set(clip["objects"]) == {"1", "2"}
    for figures in clip["objects"].values():
        assert figures["own_frame_j"] > 0.5  # the oracle keys each object where it is
    assert clip["live_j"] == pytest.approx(np.mean([o["live_j"] for o in clip["objects"].values()]))
    assert "## Objects" in (out / "report.md").read_text()


def test_eval_masks_scores_each_object_of_a_label_map(tmp_path, tiny_model_dir, davis):
    import json

    from dinomask.cli import main
    from dinomask.evaluate.scenarios import build

    build("tile", [davis], tmp_path / "tile", pairs=1)
    out = tmp_path / "out"
    assert main(["eval", "masks", "-d", str(tmp_path / "tile"), "--model", str(tiny_model_dir), "-o", str(out),
                 "--setting", "quick", "--runtime", "torch", "-q", "--max-frames", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    (clip,) = metrics["per_sequence"]["dinomask"].values()
    assert set(clip["objects"]) == {"1", "2"} and clip["frames"] == 4  # two frames of each object
    assert clip["j_mean"] == pytest.approx(np.mean([o["j_mean"] for o in clip["objects"].values()]))


def _roi_segmenter(colour_backbone):
    from dinomask.roi import RoiSettings
    from tests.test_keyframes import colour_segmenter

    segmenter = colour_segmenter(colour_backbone, "async")
    segmenter.config = segmenter.config.replace(roi=RoiSettings(enabled=True, crop_tokens="scale"))
    return segmenter


def test_after_a_scene_cut_a_lost_object_is_looked_for_where_it_was_last_seen(colour_backbone):
    """Search keys (the object is lost) look at the whole frame at the coarse search budget. After a
    scene cut they look in turn where it was last seen, as a crop key would have looked (a cut back
    shows it there); an object that left the view or that the flow lost is looked for in the whole
    frame (looking back where it walked out lost a little on the pan scenarios)."""
    from dinomask.segmenter import SEARCH_TOKENS
    from tests.test_keyframes import scene

    segmenter = _roi_segmenter(colour_backbone)
    present, truth = scene((0, 0))
    empty = textured(*SIZE, seed=1)
    first = segmenter.key(present)
    assert first.roi is None and first.mask[truth].mean() > 0.4  # nothing to crop around yet: the whole frame
    seen = segmenter._roi_box
    assert seen is not None
    gone = segmenter.key(empty)  # a crop where it was, nothing there: lost
    assert gone.roi == seen and not gone.mask.any()
    searches = [segmenter.key(empty) for _ in range(3)]
    assert [s.roi for s in searches] == [None, None, None]
    whole = segmenter.config.geometry.grid(*SIZE, 14)
    assert searches[0].patches <= min(SEARCH_TOKENS, whole[0] * whole[1])
    segmenter.scene_cut()
    assert [segmenter.key(empty).roi for _ in range(3)] == [seen, None, seen]
    segmenter.scene_cut()
    back = segmenter.key(present)  # the cut back: looked for where it was, and found
    assert back.roi == seen and back.mask[truth].mean() > 0.4
    assert segmenter.key(present).roi is not None  # found: crops follow it again

    at_edge, _ = scene((0, 170))  # the square at the right edge
    segmenter.reset()
    segmenter.key(at_edge)
    assert segmenter.key(at_edge).roi is not None and segmenter._roi_box[3] == SIZE[1]
    segmenter.key(empty)  # it left across the edge
    assert [segmenter.key(empty).roi for _ in range(3)] == [None, None, None]


def test_a_key_for_the_scene_before_a_cut_is_cancelled_and_the_cut_frame_keyed(colour_backbone):
    """The key worker is busy with a frame before the cut: it is told to stop (where the backbone
    can), and the worker takes the new scene's frame instead of waiting for a key that would be refused."""
    import threading
    import time

    from dinomask.async_keys import AsyncKeyStage
    from dinomask.errors import RunCancelled
    from dinomask.video import Frame

    segmenter = _roi_segmenter(colour_backbone)
    release = threading.Event()
    cancels: list[int] = []

    def cancel() -> bool:
        cancels.append(1)
        release.set()
        return True

    segmenter.backbone.cancel = cancel  # this test's backbone can stop a run
    keyed: list[int] = []

    def make(image, index):
        keyed.append(index)
        if index > 0 and not release.is_set():  # a long key: runs until cancelled
            release.wait(10)
            if cancels:
                raise RunCancelled("stopped")
        return segmenter.carry_maps(segmenter.key(image))

    first, second = _scene(1, (0.2, 0.3, 0.9)), _scene(7, (0.9, 0.8, 0.2))
    stage = AsyncKeyStage(segmenter, key_maker=make)
    try:
        for index in range(4):
            stage(Frame(np.roll(first, index, axis=1), index, index / 24))
            time.sleep(0.05)
        assert stage._keying is not None and stage._keying < 4  # a key for the old scene is running
        stage(Frame(second, 4, 4 / 24))  # the cut
        assert stage.carrier.cut_at == 4 and cancels == [1]
        deadline = time.time() + 10
        while 4 not in keyed and time.time() < deadline:
            time.sleep(0.01)
        assert 4 in keyed and stage.stats["keys_cancelled"] == 1 and stage.stats["key_failures"] == 0
    finally:
        release.set()
        stage.close()


def test_a_cut_never_stops_the_new_scenes_key_when_the_old_one_ends_as_it_is_stopped(colour_backbone):
    """The worst moment for the cut's cancel: the old scene's key ends just as the loop stops it, and
    the worker would take the cut frame next. The run the backbone stops must still be the old one
    (the worker waits for the cancel to finish), never the cut frame's key (which would then be lost)."""
    import threading
    import time

    from dinomask.async_keys import AsyncKeyStage
    from dinomask.video import Frame

    segmenter = _roi_segmenter(colour_backbone)
    release = threading.Event()
    started_while_stopping: list[bool] = []  # whether the cut frame's key started while a run was being stopped
    keyed: list[int] = []

    def cancel() -> bool:
        release.set()  # the old key ends here, on its own
        deadline = time.time() + 1.0  # and the worker gets every chance to start the cut frame's key
        while 4 not in keyed and time.time() < deadline:
            time.sleep(0.01)
        started_while_stopping.append(4 in keyed)
        return True

    segmenter.backbone.cancel = cancel

    def make(image, index):
        keyed.append(index)
        if index == 3:
            release.wait(10)  # a long key for the old scene
        return segmenter.carry_maps(segmenter.key(image))

    first, second = textured(*SIZE, seed=1), _scene(7, (0.9, 0.8, 0.2))  # no object before the cut: searches,
    stage = AsyncKeyStage(segmenter, key_maker=make)  # so the cut frame is offered as it arrives
    try:
        for index in range(4):
            stage(Frame(np.roll(first, index, axis=1), index, index / 24))
            time.sleep(0.05)
        deadline = time.time() + 10
        while stage._keying != 3 and time.time() < deadline:
            time.sleep(0.01)
        assert stage._keying == 3  # the old scene's key is running
        stage(Frame(second, 4, 4 / 24))  # the cut
        assert started_while_stopping == [False]  # the run stopped was the old scene's
        deadline = time.time() + 10
        while 4 not in keyed and time.time() < deadline:
            time.sleep(0.01)
        assert 4 in keyed
    finally:
        release.set()
        stage.close()


@pytest.mark.parametrize("present", [False, True])
def test_a_search_key_starts_beside_the_flow_step_and_a_crop_key_after_it(colour_backbone, present):
    """A key that needs nothing of a frame's mask (a search: the object is not in view) is offered to
    the worker as the frame arrives, and runs beside its flow step (on the simulated clock a return
    after a cut is found in 3.3 frames on cut24, max 4, where it took 5.7, max 29); a crop key follows
    the frame's mask, so its frame is offered only once that mask is made and followed (an idle worker
    took it before, and cropped around the frame before's)."""
    import threading
    import time

    from dinomask.async_keys import AsyncKeyStage
    from dinomask.video import Frame
    from tests.test_keyframes import scene

    segmenter = _roi_segmenter(colour_backbone)
    started: dict[int, float] = {}

    def make(image, index):
        started.setdefault(index, time.perf_counter())
        return segmenter.carry_maps(segmenter.key(image))

    stage = AsyncKeyStage(segmenter, key_maker=make)
    stepped: dict[int, float] = {}
    followed: list[float] = []  # when the loop's thread followed a mask
    real, follow = stage.carrier.step, segmenter.follow

    def following(mask, labels=None):
        follow(mask, labels)
        if threading.current_thread() is threading.main_thread():
            followed.append(time.perf_counter())

    segmenter.follow = following

    def slow(index, image):  # a flow step of 150 ms: long enough to see which starts first
        maps = real(index, image)
        time.sleep(0.15)
        stepped[index] = time.perf_counter()
        return maps

    stage.carrier.step = slow
    image = scene((0, 0))[0] if present else textured(*SIZE, seed=1)
    try:
        stage(Frame(image, 0, 0.0))  # the first key, in the loop: found or not
        assert segmenter.key_follows_mask == present
        stage(Frame(np.roll(image, 2, axis=1), 1, 1 / 24))
        frame_followed = followed[-1]  # the last thing frame 1 did in the loop
        deadline = time.time() + 10
        while 1 not in started and time.time() < deadline:
            time.sleep(0.01)
    finally:
        stage.close()
    if present:
        assert started[1] > frame_followed > stepped[1]  # after the mask it crops around is made and followed
    else:
        assert started[1] < stepped[1] - 0.1  # beside the flow step


def _cut_clip(root: Path, before: int = 12, away: int = 12, after: int = 12) -> Path:
    """A textured square on one scene, ``away`` frames of another scene, and back (square where it was)."""
    from tests.test_keyframes import scene

    images, masks = root / "JPEGImages/480p/cut", root / "Annotations/480p/cut"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    other = _scene(7, (0.9, 0.8, 0.2))
    for i in range(before + away + after):
        frame, mask = scene((0, i % 3))
        if before <= i < before + away:
            frame, mask = other, np.zeros(SIZE, bool)
        Image.fromarray(frame).save(images / f"{i:05d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{i:05d}.png")
    return root


@pytest.mark.parametrize("can_cancel", [False, True])
def test_a_cut_back_is_found_within_two_frames_where_keys_can_be_cancelled(tmp_path, colour_backbone, can_cancel):
    """On the simulated clock: a key costs 2.5 camera frames, so one is always running when the
    scene cuts back; where the backbone can stop it, the worker takes the cut frame (offered as it
    arrived) once the flow step has found the cut, and keys it in a crop where the object was; that
    cheap key lands before the next frame's flow step ends, is shown with that frame, and is on
    screen from the instant after: 2 frames after the return. Where the running key cannot be
    stopped, the cut frame waits for it."""
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.live import LiveEvalSettings, replay_sequence
    from dinomask.keyframes import KeyframeSettings

    segmenter = _roi_segmenter(colour_backbone)
    segmenter.backbone.can_cancel = can_cancel
    sequence = load_dataset(_cut_clip(tmp_path)).sequences[0]
    figures = replay_sequence(sequence, segmenter, KeyframeSettings.parse("async"),
                              LiveEvalSettings(oracle=True, costs=(100, 20)))
    assert figures["absent_frames"] == 12 and figures["reacquire_missed"] == 0, figures
    if can_cancel:
        assert figures["reacquire_frames_max"] <= 2, figures
    else:
        assert figures["reacquire_frames_max"] <= 8, figures


def _red_and_green(backbone, tokens: int):
    """A live segmenter (async keys, crops at the frame's scale) for two objects: red, then green."""
    from dinomask.keyframes import KeyframeSettings
    from dinomask.preprocess import InputGeometry
    from dinomask.reference import Reference, ReferenceSettings
    from dinomask.roi import RoiSettings
    from dinomask.segmenter import Segmenter, SegmenterConfig
    from tests.helpers import reference_on_black

    settings = ReferenceSettings(geometry=InputGeometry(140))
    references = [Reference.from_images(backbone, [reference_on_black(colour=c)], settings=settings, label=name)
                  for c, name in (((230, 25, 25), "red"), ((25, 230, 25), "green"))]
    config = SegmenterConfig.preset("dinomask").replace(
        keyframes=KeyframeSettings.parse("async"), background="none", threshold="0.9",
        geometry=InputGeometry(tokens=tokens), roi=RoiSettings(enabled=True, crop_tokens="scale"))
    return Segmenter(backbone, references, config)

def test_objects_apart_are_each_keyed_in_a_crop_of_their_own(colour_backbone):
    """Two objects at the two ends of a wide frame: the crop around both is the whole frame, so after
    the first key each object gets a crop of its own at the frame's scale (fewer patches than the
    whole frame, finer than it at the same cost), and each object is taken from its own crop."""
    segmenter = _red_and_green(colour_backbone, tokens=400)
    frame = textured(240, 960, seed=1)
    red, green = np.zeros((240, 960), bool), np.zeros((240, 960), bool)
    red[80:160, 40:120], green[80:160, 840:920] = True, True
    frame[red] = (230, 25, 25)
    frame[green] = (25, 230, 25)
    first = segmenter.key(frame)
    assert first.crops == () and (first.labels[red] == 1).mean() > 0.5 and (first.labels[green] == 2).mean() > 0.5
    second = segmenter.key(frame)
    assert len(second.crops) == 2 and second.roi is None
    left, right = second.crops
    assert left[3] < 480 < right[2]  # one crop an object, nothing of the frame between them
    assert second.patches < first.patches
    assert (second.labels[red] == 1).mean() > 0.5 and (second.labels[green] == 2).mean() > 0.5
    assert not second.labels[:, 300:660].any()
    carried = segmenter.carry_maps(second)  # the crops' mask is carried as itself
    assert carried[0].shape == (240, 960) and (carried[0] > 0).sum() == second.mask.sum()


def test_an_object_gone_while_another_stays_in_view_is_searched_for_in_every_key(colour_backbone):
    """Two objects apart in a wide frame; the green one goes while the red one stays. The crop around
    the red one would never look for it (only the whole-frame refresh, every 15th key, would): every
    key now searches the whole frame for it until it is found, as for a lone object, at
    SEARCH_SCALE_PX a patch (finer than SEARCH_TOKENS over two views side by side), and finds it
    where it comes back."""
    from dinomask.segmenter import SEARCH_SCALE_PX

    segmenter = _red_and_green(colour_backbone, tokens=2000)
    background = textured(240, 960, seed=1)

    def frame(green_x: int | None) -> np.ndarray:
        image = background.copy()
        image[80:160, 40:120] = (230, 25, 25)
        if green_x is not None:
            image[80:160, green_x:green_x + 80] = (25, 230, 25)
        return image

    segmenter.key(frame(840))
    assert len(segmenter.key(frame(840)).crops) == 2  # both in view: a crop each
    gone = segmenter.key(frame(None))  # the green one is gone: its crop finds nothing
    assert len(gone.crops) == 2 and not (gone.labels == 2).any() and not segmenter.key_follows_mask
    expected = ((240 + SEARCH_SCALE_PX - 1) // SEARCH_SCALE_PX) * ((960 + SEARCH_SCALE_PX - 1) // SEARCH_SCALE_PX)
    for _ in range(2):  # so the next keys search the whole frame for it (no larger than a lone search's window)
        search = segmenter.key(frame(None))
        assert search.roi is None and not search.crops and segmenter.last_key.patches == expected
        assert not segmenter.key_follows_mask
    back = segmenter.key(frame(480))  # found where it came back
    assert back.roi is None and (back.labels[80:160, 480:560] == 2).mean() > 0.5
    assert segmenter.key_follows_mask  # and the next key crops around each again
    assert len(segmenter.key(frame(480)).crops) == 2


def _wide_red_and_green(green_x: int | None) -> np.ndarray:
    """480 x 1920: a red square at the left, a green one at ``green_x`` (or none)."""
    image = textured(480, 1920, seed=1)
    image[200:280, 40:120] = (230, 25, 25)
    if green_x is not None:
        image[200:280, green_x:green_x + 80] = (25, 230, 25)
    return image


def test_on_a_wide_frame_a_gone_object_is_looked_for_first_where_it_was_last_seen(colour_backbone):
    """On a frame larger than a lone object's search (SEARCH_TOKENS patches at SEARCH_SCALE_PX: 414,720
    pixels), the searches for one of several objects that has gone look in turn in a window that
    large around where it was last seen, the others each in its own crop (what a lone object's search
    costs, and their crops), and at the whole frame."""
    from dinomask.segmenter import SEARCH_SCALE_PX, SEARCH_TOKENS

    segmenter = _red_and_green(colour_backbone, tokens=2000)
    segmenter.key(_wide_red_and_green(1700))
    assert len(segmenter.key(_wide_red_and_green(1700)).crops) == 2  # both in view: a crop each
    gone = segmenter.key(_wide_red_and_green(None))
    assert not (gone.labels == 2).any() and not segmenter.key_follows_mask
    window = segmenter.key(_wide_red_and_green(1500))  # it came back near where it went
    red_crop, around = window.crops
    assert red_crop[3] < 480 and around == (0, 480, 1920 - 864, 1920)  # 480 x 864, inside the frame
    assert segmenter.last_key.grids[1] == (480 // SEARCH_SCALE_PX, 864 // SEARCH_SCALE_PX)
    assert segmenter.last_key.grids[1][0] * segmenter.last_key.grids[1][1] == SEARCH_TOKENS
    assert segmenter.last_key.patches < ((480 // SEARCH_SCALE_PX) * (1920 // SEARCH_SCALE_PX))  # less than the whole frame
    assert (window.labels[200:280, 1500:1580] == 2).mean() > 0.5 and (window.labels[200:280, 40:120] == 1).mean() > 0.5
    assert segmenter.key_follows_mask and len(segmenter.key(_wide_red_and_green(1500)).crops) == 2  # found

    segmenter.key(_wide_red_and_green(None))  # gone again
    missed = segmenter.key(_wide_red_and_green(600))  # the window misses it, far off
    assert missed.crops[1][2] >= 1920 - 864 and not (missed.labels == 2).any()
    whole = segmenter.key(_wide_red_and_green(600))  # the next search looks at the whole frame
    assert whole.roi is None and not whole.crops and (whole.labels[200:280, 600:680] == 2).mean() > 0.5


def test_a_sliver_left_of_an_object_that_has_gone_is_not_shown_on_a_cameras_clock(colour_backbone):
    """On a camera's clock the loop counts a mask under the region of interest's min_area as lost
    (and searches the whole frame): what is left of an object that walked out is not shown either.
    Files (crops at the token budget) show every mask, however small."""
    from dinomask.roi import RoiSettings

    segmenter = _red_and_green(colour_backbone, tokens=400)
    image = textured(240, 320, seed=3)
    score = np.full((240, 320), -1.0, np.float32)
    score[100:104, 316:320] = 1.0  # 16 px of a 76,800 px frame: under min_area (0.2%)
    shares = [np.where(score > 0, 1.0, 0.0).astype(np.float32), np.zeros((240, 320), np.float32)]
    sliver = segmenter.carried_result(image, [score, score, *shares])
    assert not sliver.mask.any() and not sliver.labels.any()
    segmenter.follow(sliver.mask, sliver.labels)
    assert not segmenter.key_follows_mask  # the loop searches, as it did with the sliver
    score[60:160, 200:300] = 1.0  # an object in view is shown
    shares[0] = np.where(score > 0, 1.0, 0.0).astype(np.float32)
    assert segmenter.carried_result(image, [score, score, *shares]).mask.sum() == (score > 0).sum()
    segmenter.config = segmenter.config.replace(roi=RoiSettings(enabled=True, crop_tokens="budget"))
    score[60:160, 200:300] = -1.0
    assert segmenter.carried_result(image, [score, score, *shares]).mask.sum() == 16
