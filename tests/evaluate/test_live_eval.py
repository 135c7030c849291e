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


def write_clip(root: Path, frames: int, step: int, size=(240, 320), box=60) -> Path:
    """A DAVIS-layout clip: a textured red square moving ``step`` px right per frame on blue."""
    images, masks = root / "JPEGImages" / "480p" / "square", root / "Annotations" / "480p" / "square"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    background = textured(*size, seed=1, tint=(0.2, 0.3, 0.9))
    square = textured(box, box, seed=2, tint=(0.9, 0.1, 0.1))
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
    """On the wall clock, at 24 FPS, 4 px a frame: the async loop shows most frames, within 80 ms
    (p95), and the mask on screen follows the square (live J)."""
    from dinomask.evaluate.datasets import load_dataset

    sequence = load_dataset(write_clip(tmp_path / "d", frames=36, step=4)).sequences[0]
    figures = replay_sequence(sequence, _segmenter(colour_backbone, colour_reference, "async"),
                              KeyframeSettings.parse("async"), LiveEvalSettings(oracle=True))
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
