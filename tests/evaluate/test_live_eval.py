"""eval live and the live loop on a camera clock (issue 18): realtime delivery drops and never
queues, the oracle on a static clip gives the grid's own ceiling, a planted moving square is
shown within the latency budget, and the async loop keeps up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinomask.cli import main
from dinomask.evaluate.live import LiveEvalSettings, replay_sequence
from dinomask.keyframes import KeyframeSettings
from dinomask.postprocess import upsample_score
from dinomask.preprocess import InputGeometry, patch_coverage
from dinomask.reference import Reference
from dinomask.segmenter import Segmenter, SegmenterConfig
from dinomask.video import FrameSource, SourceSettings, run_live
from tests.helpers import textured


def write_clip(root: Path, frames: int, step: int, size=(240, 320), box=60, scales=(2.0,),
               tint=(0.9, 0.1, 0.1)) -> Path:
    """A DAVIS-layout clip: a textured square (red: as grey as the blue background) moving ``step``
    px right per frame on blue (``scales``: the texture's octaves, see :func:`tests.helpers.textured`)."""
    images, masks = root / "JPEGImages" / "480p" / "square", root / "Annotations" / "480p" / "square"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    background = textured(*size, seed=1, tint=(0.2, 0.3, 0.9), scales=scales)
    square = textured(box, box, seed=2, tint=tint, scales=scales)
    for i in range(frames):
        frame, mask = background.copy(), np.zeros(size, np.uint8)
        x = 40 + step * i
        frame[90:90 + box, x:x + box] = square
        mask[90:90 + box, x:x + box] = 255
        Image.fromarray(frame).save(images / f"{i:05d}.png")
        Image.fromarray(mask).save(masks / f"{i:05d}.png")
    return root


def test_realtime_delivery_drops_frames_while_busy_and_never_queues(tmp_path):
    """A 24 FPS folder and a loop that takes 100 ms a frame: about 2.4 frames per loop pass are
    dropped, the loop always gets the newest, and nothing waits in a queue."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(24):
        Image.fromarray(np.full((32, 32, 3), i * 10, np.uint8)).save(folder / f"{i:03d}.png")
    source = FrameSource(str(folder), SourceSettings(realtime=True, fps=24))
    taken = []

    def process(frame, meter):
        taken.append((frame.index, time.monotonic() - frame.captured_at))
        time.sleep(0.1)
        return frame.index

    stats = run_live(source, process, lambda frame, result, meter: True)
    indices = [i for i, _ in taken]
    assert indices == sorted(indices) and len(indices) < 16  # a 1 s clip at 100 ms a frame
    assert stats.frames_dropped >= 24 - len(indices) - 1
    gaps = np.diff(indices)[:-1]  # after the clip's last frame nothing newer comes
    assert (gaps >= 2).all(), indices  # 2.4 frames arrive per pass: the newest is taken, none waits its turn
    assert max(wait for _, wait in taken) < 0.5  # a queue would age its frames to over a second by the end
    every = FrameSource(str(folder), SourceSettings(realtime=False, fps=24))
    assert run_live(every, lambda frame, meter: frame.index, lambda *a: True).frames_processed == 24


@pytest.fixture
def colour_reference(colour_backbone):
    from tests.helpers import reference_on_black

    return Reference.from_images(colour_backbone, [reference_on_black(colour=(230, 25, 25))],
                                 settings=__import__("dinomask").ReferenceSettings(geometry=InputGeometry(140)))


def _segmenter(backbone, reference, keyframes: str) -> Segmenter:
    config = SegmenterConfig.preset("dinomask").replace(
        keyframes=KeyframeSettings.parse(keyframes), background="none", threshold="0.9",
        geometry=InputGeometry(tokens=300))
    return Segmenter(backbone, reference, config)


def test_the_oracle_on_a_static_clip_scores_the_grid_ceiling(tmp_path, colour_backbone, colour_reference):
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.metrics import score_mask

    sequence = load_dataset(write_clip(tmp_path / "d", frames=12, step=0)).sequences[0]
    truth = np.asarray(Image.open(sequence.frames[0].mask)) > 0
    segmenter = _segmenter(colour_backbone, colour_reference, "async")
    grid = segmenter.config.geometry.grid(*truth.shape, 14)
    ceiling = score_mask(upsample_score(patch_coverage(truth, grid) - 0.5, truth.shape, segmenter.config.upsample) > 0,
                         truth).iou
    for schedule in ("async", "auto", "off"):
        figures = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, schedule),
                                  KeyframeSettings.parse(schedule), LiveEvalSettings(oracle=True, costs=(100, 20)))
        # maps are carried at the flow's resolution (120 px for async): one more resampling
        tolerance = 6e-3 if schedule == "async" else 1e-6  # measured: 0.900 against 0.905
        assert figures["own_frame_j"] == pytest.approx(ceiling, abs=tolerance), schedule
        assert figures["live_j"] == pytest.approx(ceiling, abs=tolerance), schedule


def test_a_planted_moving_square_is_shown_within_the_latency_budget(tmp_path, colour_backbone, colour_reference):
    """At 24 FPS, 4 px a frame, a key within one camera frame (40 ms, what the rate controller aims
    for) and 10 ms a frame on the simulated clock (no test times the wall clock, issue 33: this
    asserted p95 < 80 ms on the wall clock and failed on a loaded machine): the async loop shows
    every frame within a frame's budget (p95), and the mask on screen follows the square (live J).
    The wall-clock figures live in benchmarks/live_camera.py."""
    from dinomask.evaluate.datasets import load_dataset

    sequence = load_dataset(write_clip(tmp_path / "d", frames=36, step=4)).sequences[0]
    figures = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, "async"),
                              KeyframeSettings.parse("async"), LiveEvalSettings(oracle=True, costs=(40, 10)))
    print({k: v for k, v in figures.items() if k != "curves"})
    assert figures["latency_ms_p95"] < 80
    assert figures["shown_fps"] > 12 and figures["own_frame_j"] > 0.8 and figures["live_j"] > 0.6


def test_the_simulated_clock_reproduces_the_issue_gap_between_auto_and_async(tmp_path, colour_backbone, colour_reference):
    """With a 262 ms key and a 22 ms flow step, a camera does not wait: auto falls back to the
    backbone on nearly every frame it takes, async keeps up (costs of issue 18)."""
    from dinomask.evaluate.datasets import load_dataset

    sequence = load_dataset(write_clip(tmp_path / "d", frames=48, step=4)).sequences[0]
    settings = LiveEvalSettings(oracle=True, costs=(262, 22))
    figures = {s: replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, s), KeyframeSettings.parse(s), settings)
               for s in ("async", "auto")}
    assert figures["auto"]["shown_fps"] < 6 and figures["async"]["shown_fps"] > 20
    assert figures["async"]["latency_ms_p95"] < 80 < figures["auto"]["latency_ms_p50"]
    assert figures["async"]["live_j"] > figures["auto"]["live_j"]
    again = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, "async"),
                            KeyframeSettings.parse("async"), settings)
    assert again["own_frame_j"] == figures["async"]["own_frame_j"]  # reproducible


def test_eval_live_cli_writes_metrics_report_and_plots(tmp_path, tiny_model_dir):
    root = write_clip(tmp_path / "d", frames=20, step=3)
    out = tmp_path / "out"
    assert main(["eval", "live", "-d", str(root), "--model", str(tiny_model_dir), "-o", str(out), "--oracle",
                 "--costs", "200,20", "--runtime", "torch", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("shown_fps", "latency_ms_p50", "latency_ms_p95", "own_frame_j", "own_frame_jf", "live_j", "keyframe_share"):
        assert isinstance(metrics[key], float), key
    assert metrics["schedule"] == "async" and set(metrics["schedules"]) == {"async", "auto:4"}
    assert (out / "live_square.png").stat().st_size > 10_000 and "| async |" in (out / "report.md").read_text()


# ----------------------------------------------------------------------------- issue 25: a yardstick one can tune on


def _shown(indices, fps=24.0, delay=0.001, mask=None):
    from dinomask.evaluate.live import Shown

    mask = np.zeros((4, 4), bool) if mask is None else mask
    return [Shown(k, k / fps, k / fps + delay, k == 0, mask) for k in indices]


def test_a_pipeline_that_drops_nothing_shows_the_camera_rate():
    """10 frames, start-up under one frame: 24 of 24 FPS (it read 21.6: 9 frames over 10)."""
    from dinomask.evaluate.live import score_replay

    truths = [np.zeros((4, 4), bool)] * 10
    assert score_replay(_shown(range(10)), truths, 24.0, True)["shown_fps"] == pytest.approx(24.0)
    half = score_replay(_shown(range(0, 10, 2)), truths, 24.0, True)["shown_fps"]
    assert half == pytest.approx(12.0)
    slow_start = _shown(range(3, 10), delay=0.001)  # the first mask ready during frame 3: frames 3..9 all shown
    slow_start[0].ready = 3 / 24 + 0.001
    assert score_replay(slow_start, truths, 24.0, True)["shown_fps"] == pytest.approx(24.0)


def test_a_clip_too_short_to_measure_gives_no_figure_and_stays_out_of_the_means(tmp_path, colour_backbone, colour_reference):
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.live import evaluate_live, score_replay

    one = score_replay(_shown([0]), [np.ones((4, 4), bool)], 24.0, True)
    assert one["shown_fps"] is None and one["own_frame_j"] is None and one["live_j"] is None  # was 0.0, and 0.991
    write_clip(tmp_path / "d", frames=12, step=2)
    short = write_clip(tmp_path / "short", frames=1, step=0)
    (tmp_path / "d/JPEGImages/480p/one").mkdir()
    (tmp_path / "d/Annotations/480p/one").mkdir()
    for kind in ("JPEGImages", "Annotations"):
        (short / kind / "480p/square/00000.png").rename(tmp_path / "d" / kind / "480p/one/00000.png")
    result = evaluate_live(load_dataset(tmp_path / "d"), lambda s, k: _segmenter(colour_backbone, colour_reference, "async"),
                           ["async"], LiveEvalSettings(oracle=True, costs=(100, 20)))
    figures = result["schedules"]["async"]
    assert figures["sequences"]["one"]["shown_fps"] is None and figures["sequences"]["one"]["live_j"] is None
    assert figures["shown_fps"] == pytest.approx(figures["sequences"]["square"]["shown_fps"])  # not averaged with 0
    assert figures["live_j"] == pytest.approx(figures["sequences"]["square"]["live_j"])


def test_a_clip_with_an_unannotated_frame_replays_every_frame(tmp_path, colour_backbone, colour_reference):
    """A camera delivers every frame; only the annotated ones are scored (the unannotated ones were
    cut out, so the camera played a faster clip)."""
    from dinomask.evaluate.datasets import load_dataset

    root = write_clip(tmp_path / "d", frames=12, step=4)
    (root / "Annotations/480p/square/00005.png").unlink()
    dataset = load_dataset(root)
    assert any("00005" in problem for problem in dataset.problems)
    sequence = dataset.sequences[0]
    assert len(sequence.frames) == 11 and len(sequence.played) == 12
    figures = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, "async"),
                              KeyframeSettings.parse("async"), LiveEvalSettings(oracle=True, costs=(100, 20), realtime=False))
    assert figures["frames"] == 12 and figures["dropped"] == 0
    assert figures["scored_frames"] == 10  # the reference frame and the unannotated one are played, not scored


def test_clips_that_cannot_be_replayed_are_named_and_the_rest_measured(tmp_path, colour_backbone, colour_reference):
    """An empty first mask, or frames that change size, aborted the whole run."""
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.live import evaluate_live

    root = write_clip(tmp_path / "d", frames=8, step=2)
    for name in ("empty", "resized"):
        for kind in ("JPEGImages", "Annotations"):
            folder = root / kind / "480p" / name
            folder.mkdir()
            for path in sorted((root / kind / "480p/square").glob("*.png")):
                image = Image.open(path)
                if name == "empty" and kind == "Annotations" and path.name == "00000.png":
                    image = Image.fromarray(np.zeros((240, 320), np.uint8))
                if name == "resized" and path.name == "00004.png":
                    image = image.resize((160, 120))
                image.save(folder / path.name)
    result = evaluate_live(load_dataset(root), lambda s, k: _segmenter(colour_backbone, colour_reference, "async"),
                           ["async"], LiveEvalSettings(oracle=True, costs=(100, 20)))
    assert set(result["schedules"]["async"]["sequences"]) == {"square"}
    said = " ".join(result["problems"])
    assert "empty: its first mask (00000.png) marks no object pixel" in said and "resized: its frames change size" in said


def test_the_one_frame_late_bound_and_the_key_scale_are_reported(tmp_path, colour_backbone, colour_reference):
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.metrics import score_mask

    sequence = load_dataset(write_clip(tmp_path / "d", frames=10, step=6)).sequences[0]
    figures = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, "async"),
                              KeyframeSettings.parse("async"), LiveEvalSettings(oracle=True, costs=(100, 20)))
    truths = [np.asarray(Image.open(f.mask)) > 0 for f in sequence.frames]
    expected = np.mean([score_mask(truths[k - 1], truths[k], boundary=False).iou for k in range(1, 10)])
    assert figures["late_by_one_j"] == pytest.approx(expected)  # 60 px square, 6 px a frame: 0.818
    grid = InputGeometry(tokens=300).grid(240, 320, 14)
    assert figures["key_scale_px_max"] == pytest.approx(max(240 / grid[0], 320 / grid[1]))


def test_the_simulated_clock_scales_a_key_with_its_patches_and_the_controller_acts():
    """A key costs KEY_MS at the configured tokens and (patches / tokens) ** 1.1 of it otherwise, so
    the rate controller lowers the tokens under the simulated clock as it does on the wall clock."""
    from dinomask.async_keys import KeyRateController
    from dinomask.evaluate.live import CostModel

    model = CostModel(262, 22, 1400, 1.1)
    assert model.key_s(1400) == pytest.approx(0.262)
    assert model.key_s(700) == pytest.approx(0.262 * 0.5 ** 1.1)
    assert model.key_s(350) < 0.262 / 4

    class Fake:
        config = SegmenterConfig.preset("dinomask")

    segmenter = Fake()
    controller = KeyRateController(segmenter, budget_ms=167)
    for _ in range(6):
        controller.update(1000 * model.key_s(segmenter.config.geometry.tokens))
    tokens = segmenter.config.geometry.tokens
    assert KeyRateController.MIN_TOKENS <= tokens < 1400
    assert 0.8 * 167 <= 1000 * model.key_s(tokens) <= 1.25 * 167


@pytest.mark.parametrize("args,phrase", [
    (["--costs", "inf,1"], "--costs"), (["--costs", "nan,1"], "--costs"), (["--costs", "0,1"], "--costs"),
    (["--key-budget-ms", "-5"], "--key-budget-ms"), (["--key-budget-ms", "nan"], "--key-budget-ms"),
    (["--fps", "0"], "--fps"), (["--fps", "nan"], "--fps"),
])
def test_eval_live_checks_its_numbers_before_the_model_loads(tmp_path, args, phrase, capsys):
    root = write_clip(tmp_path / "d", frames=3, step=1)
    code = main(["eval", "live", "-d", str(root), "--model", "/nonexistent/never-loaded", "-o", str(tmp_path / "o"), *args])
    said = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert code == 2 and phrase in said and "never-loaded" not in said, said


def test_a_planted_object_moving_30_px_a_frame_is_carried_between_keys(tmp_path, colour_backbone, colour_reference):
    """A textured object 80 px wide moving 30 px a frame, brighter than its background (flow works on
    grey) and textured at several scales (as real objects are). Keys cost 80 ms (2 camera frames):
    the frames between keys are carried by flow with own-frame J above 0.85 (measured 0.91 at
    120 px and 160 px flow). The default (a crop at the frame's scale, 160 px flow) holds it too."""
    import dataclasses

    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.live import key_maker, load_clip, replay_simulated
    from dinomask.evaluate.metrics import score_mask
    from dinomask.roi import RoiSettings

    root = write_clip(tmp_path / "d", frames=18, step=30, size=(240, 720), box=80, scales=(2.0, 6.0, 16.0),
                      tint=(0.95, 0.8, 0.2))
    images, truths, first = load_clip(load_dataset(root).sequences[0])
    settings = LiveEvalSettings(oracle=True, costs=(80, 10))
    for roi in (False, True):
        segmenter = _segmenter(colour_backbone, colour_reference, "async")
        keyframes = dataclasses.replace(segmenter.config.keyframes, flow_side=160)
        segmenter.config = segmenter.config.replace(keyframes=keyframes, roi=RoiSettings(enabled=roi, crop_tokens="scale"))
        shown = replay_simulated(images, segmenter, key_maker(segmenter, truths), keyframes, settings)
        scored = [(s.key, score_mask(s.mask, truths[s.index]).iou) for s in shown if s.index >= first]
        carried = [j for key, j in scored if not key]
        assert min(j for _, j in scored) > 0.85, (roi, scored)
        if not roi:
            assert len(carried) >= 6, scored  # most frames between keys are carried, and held


def test_the_machine_factor_plays_a_slower_machine(tmp_path, monkeypatch, colour_backbone, colour_reference):
    """Issue 33: the simulated clock can play a machine twice as slow: every cost doubles, so the
    same loop's frame (24 ms of flow at 160 px) takes 48 ms, more than a 24 FPS camera's 41.7: it shows
    its frames later and drops some."""
    from dinomask.evaluate.datasets import load_dataset

    import dinomask.evaluate.live as live

    monkeypatch.setattr(live, "MATCH_MS_AT_120", 0.0)  # the frame's flow step alone (matching: its own test)
    sequence = load_dataset(write_clip(tmp_path / "d", frames=24, step=4)).sequences[0]
    figures = {}
    for factor in (1.0, 2.0):
        figures[factor] = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, "async"),
                                          KeyframeSettings.parse("async"),
                                          LiveEvalSettings(oracle=True, costs=(100, 20), machine_factor=factor))
    from dinomask.evaluate.live import FLOW_STEP_MS_AT_120

    frame_ms = 20 + FLOW_STEP_MS_AT_120 * ((160 / 120) ** 2 - 1)  # 24.4 ms: the step at 160 px in place of 120's
    assert figures[1.0]["latency_ms_p50"] == pytest.approx(frame_ms, abs=0.1) and figures[1.0]["shown_fps"] == 24.0
    assert figures[2.0]["latency_ms_p50"] >= 2 * figures[1.0]["latency_ms_p50"]
    assert figures[2.0]["shown_fps"] < 24.0 and figures[2.0]["startup_ms"] > figures[1.0]["startup_ms"]
    with pytest.raises(ValueError, match="machine_factor"):
        LiveEvalSettings(machine_factor=float("nan"))


def test_the_oracle_puts_the_ground_truth_on_the_grid_the_key_used(colour_backbone, colour_reference):
    """A search key (the whole frame at SEARCH_TOKENS) and a crop key at the frame's scale process
    fewer patches than the token budget: the oracle's mask is the ground truth on the grid each key
    really used (``KeyInfo.grids``). On the budget's finer grid it scored a ceiling the loop never had
    (0.005 live J on davis-live)."""
    from dinomask.evaluate.live import key_maker
    from dinomask.evaluate.oracle import oracle_frame
    from dinomask.roi import RoiSettings
    from dinomask.segmenter import SEARCH_TOKENS
    from tests.helpers import textured

    image = textured(240, 320, seed=1, tint=(0.2, 0.3, 0.9))
    truth = np.zeros((240, 320), bool)
    truth[70:163, 101:189] = True  # edges off every grid's lines
    image[truth] = textured(93, 88, seed=2, tint=(0.9, 0.1, 0.1)).reshape(-1, 3)
    segmenter = _segmenter(colour_backbone, colour_reference, "async")
    segmenter.config = segmenter.config.replace(geometry=InputGeometry(tokens=1200),
                                                roi=RoiSettings(enabled=True, crop_tokens="scale"))
    make = key_maker(segmenter, [truth])
    for kind in ("search", "crop"):
        box = None if kind == "search" else segmenter._roi_box
        maps = make(image, 0)
        info = segmenter.last_key
        budget = segmenter.config.geometry.grid(*(truth.shape if box is None else (box[1] - box[0], box[3] - box[2])), 14)
        assert info.patches < budget[0] * budget[1], kind
        if kind == "search":
            assert info.patches <= SEARCH_TOKENS and box is None
        else:
            assert box is not None  # the search found it: this key is a crop around it
        used = oracle_frame(image, truth, segmenter.config, 14, box, grid=info.grids[0]).mask
        finer = oracle_frame(image, truth, segmenter.config, 14, box).mask
        shown = maps[0] > 0
        assert np.array_equal(shown, used), kind
        assert not np.array_equal(shown, finer), kind  # the budget's grid would have drawn another mask



def test_the_oracle_gives_each_object_its_own_part_of_a_coarse_keys_mask(colour_backbone, colour_reference):
    """Two objects, a whole-frame key on a coarse grid: the oracle's mask reaches past both objects'
    ground truths. Each object's share of it (what flow carries, what the next crops follow) is the
    part nearest that object: object 1 took the rim of object 2 before (on the pairs, its crop then
    spanned both objects and the key's patches grew coarser)."""
    from dinomask.evaluate.live import key_maker
    from dinomask.roi import RoiSettings
    from tests.helpers import textured

    image = textured(240, 640, seed=1, tint=(0.2, 0.3, 0.9))
    ids = np.zeros((240, 640), np.uint8)
    ids[70:163, 61:149] = 1
    ids[80:171, 451:530] = 2  # edges off the grid's lines
    segmenter = _segmenter(colour_backbone, [colour_reference, colour_reference], "async")
    segmenter.config = segmenter.config.replace(roi=RoiSettings(enabled=True, crop_tokens="scale"))
    maps = key_maker(segmenter, [ids > 0], [ids], (1, 2))(image, 0)
    assert segmenter.last_key.grids[0][0] * segmenter.last_key.grids[0][1] <= 300  # one whole-frame key
    mask, shares = maps[0] > 0, np.stack(maps[2:]) > 0
    assert (mask & (ids == 0)).sum() > 100  # the grid's rim outside both objects
    np.testing.assert_array_equal(shares.any(axis=0), mask)
    assert not (shares[0] & shares[1]).any()
    assert not shares[0][:, 320:].any() and not shares[1][:, :320].any()
    assert shares[1][ids == 2].mean() > 0.9 and shares[0][ids == 1].mean() > 0.9

def test_the_simulated_clock_takes_a_key_that_lands_during_the_flow_step(monkeypatch, colour_backbone, colour_reference):
    """As the live loop does (AsyncKeyStage looks for a landed key after the frame's flow step), the
    simulated clock uses a key that lands during a frame's flow step for that frame. Keys cost 50 ms,
    a frame's work 20 ms of which the flow step (120 px) is 5.6: the first key for a frame after the
    first lands at 170 ms, 3.3 ms into frame 4's flow step (frame 4 arrives at 166.7 ms), and frame 4
    shows it; waiting for the next frame would show it on frame 5."""
    import dataclasses

    import dinomask.evaluate.live as live
    from dinomask.evaluate.live import CostModel, FLOW_STEP_MS_AT_120, replay_simulated
    from tests.helpers import textured

    model = CostModel(50.0, 20.0, tokens=1, exponent=0.0, flow_side=120)
    assert model.step_s == pytest.approx(FLOW_STEP_MS_AT_120 / 1000)
    monkeypatch.setattr(live, "cost_model", lambda *args: model)
    monkeypatch.setattr(live, "MATCH_MS_AT_120", 0.0)  # the frame's work as above (matching: its own test)
    segmenter = _segmenter(colour_backbone, colour_reference, "async")
    keyframes = dataclasses.replace(segmenter.config.keyframes, flow_side=120)
    image = textured(240, 320, seed=1)

    def make(frame, index):  # frame 0's key shows nothing, every later frame's key the whole frame
        score = np.full((8, 8), 1.0 if index > 0 else -1.0, np.float32)
        return [score, np.zeros((8, 8), np.float32)]

    shown = replay_simulated([image] * 8, segmenter, make, keyframes, LiveEvalSettings(oracle=True, costs=(50, 20)))
    first_full = next(s for s in shown if s.mask.all())
    assert first_full.index == 4 and first_full.ready == pytest.approx(166.67e-3 + 20e-3, abs=1e-4)


def test_the_simulated_clock_charges_a_third_dis_pass_where_flow_ran_again_from_the_camera_shift(monkeypatch, colour_backbone, colour_reference):
    """A flow step that ran DIS again from the camera's shift (:class:`~dinomask.keyframes.PannedFlow`)
    costs half a step more on the simulated clock, as it does on the wall clock."""
    import dataclasses

    import dinomask.evaluate.live as live
    from dinomask.evaluate.live import CostModel, replay_simulated
    from dinomask.keyframes import FlowCarrier
    from tests.helpers import textured

    model = CostModel(50.0, 20.0, tokens=1, exponent=0.0, flow_side=120)
    assert model.pass_s(2) == 0 and model.pass_s(3) == pytest.approx(model.step_s / 2)
    monkeypatch.setattr(live, "cost_model", lambda *args: model)
    segmenter = _segmenter(colour_backbone, colour_reference, "async")
    keyframes = dataclasses.replace(segmenter.config.keyframes, flow_side=120)
    image = textured(240, 320, seed=1)

    def make(frame, index):
        return [np.full((8, 8), 1.0, np.float32), np.zeros((8, 8), np.float32)]

    def latencies():
        shown = replay_simulated([image] * 8, segmenter, make, keyframes, LiveEvalSettings(oracle=True, costs=(50, 20)))
        return [s.ready - s.captured for s in shown if not s.key and s.index > 3]

    plain = latencies()
    monkeypatch.setattr(FlowCarrier, "passes", property(lambda self: 3))
    assert latencies() == pytest.approx([latency + model.step_s / 2 for latency in plain])


def test_the_simulated_clock_charges_each_object_matched_to_its_own_shift(monkeypatch, colour_backbone, colour_reference):
    """Each carried object is matched to its own shift on every flow step and on each step a late key
    is carried through (:func:`~dinomask.keyframes.follow_object`); the simulated clock charges each
    match (:data:`~dinomask.evaluate.live.MATCH_MS_AT_120`), as the wall clock pays it."""
    import dataclasses

    import dinomask.evaluate.live as live
    from dinomask.evaluate.live import CostModel, replay_simulated
    from tests.helpers import textured

    model = CostModel(50.0, 20.0, tokens=1, exponent=0.0, flow_side=120)
    monkeypatch.setattr(live, "cost_model", lambda *args: model)
    segmenter = _segmenter(colour_backbone, colour_reference, "async")
    keyframes = dataclasses.replace(segmenter.config.keyframes, flow_side=120)
    image = textured(240, 320, seed=1)

    def make(frame, index):  # an object over the whole frame: one match a step
        return [np.full((8, 8), 1.0, np.float32), np.zeros((8, 8), np.float32)]

    def latencies():
        shown = replay_simulated([image] * 8, segmenter, make, keyframes, LiveEvalSettings(oracle=True, costs=(50, 20)))
        return [s.ready - s.captured for s in shown if not s.key and s.index > 3]

    one = model.match_s(1)
    assert one == pytest.approx(live.MATCH_MS_AT_120 / 1000) and one > 0
    charged = latencies()
    monkeypatch.setattr(live, "MATCH_MS_AT_120", 0.0)
    free = latencies()
    extra = [(a - b) / one for a, b in zip(charged, free)]
    assert extra and all(k >= 1 - 1e-6 and abs(k - round(k)) < 1e-6 for k in extra), extra  # a match or more a frame
