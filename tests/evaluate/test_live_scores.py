"""The come-and-go yardstick (issue 30) on hand-made replays with known answers: an absent
stretch, one return, a miss, two objects; and the rules for clips that cannot give a figure."""

from __future__ import annotations

import numpy as np
import pytest

from dinomask.evaluate.live_scores import Shown, score_replay

FPS = 24.0
OBJECT = np.zeros((8, 8), bool)
OBJECT[2:6, 2:6] = True
EMPTY = np.zeros((8, 8), bool)


def _replay(masks: list[np.ndarray], labels: list[np.ndarray] | None = None) -> list[Shown]:
    """One mask per camera frame, ready at once: a loop that drops nothing."""
    return [Shown(k, k / FPS, k / FPS, k == 0, m, None if labels is None else labels[k]) for k, m in enumerate(masks)]


def test_an_absent_stretch_a_return_and_its_reacquisition():
    # frames: 0 reference, 1-2 present, 3-6 absent, 7-10 present (returns at 7)
    truths = [OBJECT] * 3 + [EMPTY] * 4 + [OBJECT] * 4
    # on screen: the old mask stays for two absent frames (false positives), nothing at the return
    # until frame 9 (reacquired 2 frames after the return)
    masks = [OBJECT] * 3 + [OBJECT, OBJECT, EMPTY, EMPTY] + [EMPTY, EMPTY, OBJECT, OBJECT]
    figures = score_replay(_replay(masks), truths, FPS, realtime=True)
    assert figures["absent_frames"] == 4
    assert figures["absent_fp_rate"] == pytest.approx(0.5)
    assert figures["reacquire_frames_mean"] == 2 and figures["reacquire_frames_max"] == 2
    assert figures["reacquire_missed"] == 0
    assert figures["present_live_j"] == pytest.approx(4 / 6)  # frames 1, 2, 9, 10 of 1, 2, 7, 8, 9, 10
    assert figures["live_j"] == pytest.approx((4 + 2) / 10)  # absent frames with an empty mask score 1


def test_a_return_found_on_its_own_frame_counts_zero():
    truths = [OBJECT, OBJECT, EMPTY, OBJECT, OBJECT]
    figures = score_replay(_replay([OBJECT, OBJECT, EMPTY, OBJECT, OBJECT]), truths, FPS, realtime=True)
    assert (figures["reacquire_frames_mean"], figures["reacquire_frames_max"], figures["reacquire_missed"]) == (0, 0, 0)
    assert figures["absent_fp_rate"] == 0


def test_a_return_never_found_before_the_object_leaves_again_or_the_clip_ends_is_a_miss():
    truths = [OBJECT, EMPTY, OBJECT, OBJECT, EMPTY, OBJECT, OBJECT]
    masks = [OBJECT, EMPTY, EMPTY, EMPTY, EMPTY, EMPTY, EMPTY]  # neither return is ever found
    figures = score_replay(_replay(masks), truths, FPS, realtime=True)
    assert figures["reacquire_missed"] == 2 and figures["reacquire_frames_mean"] is None
    assert figures["absent_frames"] == 2 and figures["absent_fp_rate"] == 0


def test_a_clip_that_never_loses_its_object_gives_no_come_and_go_figure():
    figures = score_replay(_replay([OBJECT] * 5), [OBJECT] * 5, FPS, realtime=True)
    for metric in ("absent_frames", "absent_fp_rate", "reacquire_frames_mean", "reacquire_frames_max",
                   "reacquire_missed"):
        assert figures[metric] is None, metric
    assert figures["present_live_j"] == 1.0


def test_the_mask_on_screen_is_the_newest_ready_at_each_camera_instant():
    late = [Shown(0, 0.0, 0.0, True, OBJECT), Shown(1, 1 / FPS, 3.5 / FPS, False, EMPTY)]
    # frame 1's mask (empty) is ready only after frame 3's instant: frames 1-3 still show frame 0's
    live = score_replay(late, [OBJECT] * 5, FPS, realtime=True)["curves"]["live_j"]
    assert live == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.0)]
    own = score_replay(late, [OBJECT] * 3, FPS, realtime=False)["curves"]["live_j"]
    assert own == [(1, 0.0)]  # without a clock each frame shows its own mask; frame 2 was never shown


def test_two_objects_are_scored_each_on_its_own_and_the_clip_by_their_mean():
    first = np.zeros((8, 8), np.uint8)
    first[1:4, 1:4] = 1
    first[5:8, 5:8] = 2
    only_one = np.where(first == 1, 1, 0).astype(np.uint8)  # object 2 leaves at frame 2, back at 4
    truth_labels = [first, first, only_one, only_one, first, first]
    shown_labels = [first, first, first, only_one, only_one, first]  # object 2 shown one frame too long, back 1 late
    objects = {i: [t == i for t in truth_labels] for i in (1, 2)}
    figures = score_replay(_replay([lab > 0 for lab in shown_labels], shown_labels),
                           [t > 0 for t in truth_labels], FPS, realtime=True, objects=objects)
    assert figures["objects"]["1"]["live_j"] == 1.0 and figures["objects"]["1"]["absent_frames"] is None
    two = figures["objects"]["2"]
    assert two["absent_frames"] == 2 and two["absent_fp_rate"] == 0.5
    assert two["reacquire_frames_mean"] == 1 and two["reacquire_missed"] == 0
    assert figures["live_j"] == pytest.approx((1.0 + two["live_j"]) / 2)  # the clip: the mean of its objects
    assert figures["absent_frames"] == 2  # counts are summed over objects


def test_coming_and_going_ignores_frames_without_ground_truth():
    truths = [OBJECT, None, EMPTY, None, OBJECT]
    figures = score_replay(_replay([OBJECT, OBJECT, OBJECT, EMPTY, OBJECT]), truths, FPS, realtime=False)
    assert figures["absent_frames"] == 1 and figures["absent_fp_rate"] == 1.0
    assert figures["reacquire_frames_mean"] == 0


def test_the_ground_truth_one_frame_late_gives_the_ceiling_of_coming_and_going():
    """What a perfect mask on a screen one frame behind the camera scores: the last present frame's
    mask is still up on the first absent frame, and the return's own frame shows the empty one."""
    truths = [OBJECT] * 3 + [EMPTY] * 4 + [OBJECT] * 4  # absent 3-6, returns at 7
    figures = score_replay(_replay([EMPTY] * 11), truths, FPS, realtime=True)
    assert figures["late_by_one_absent_fp_rate"] == pytest.approx(1 / 4)  # frame 3 shows frame 2's object
    assert figures["late_by_one_reacquire_frames_mean"] == 1  # frame 8 shows frame 7's
    assert figures["late_by_one_j"] == pytest.approx(8 / 10)  # frames 3 and 7 miss
    still = score_replay(_replay([OBJECT] * 5), [OBJECT] * 5, FPS, realtime=True)
    assert still["late_by_one_absent_fp_rate"] is None and still["late_by_one_reacquire_frames_mean"] is None
