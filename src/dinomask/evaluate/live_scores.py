"""The yardstick of ``eval live``: what a replay showed, scored against the ground truth. Apart
from the replay (:mod:`dinomask.evaluate.live`), so it can be read and tested on its own.

A replay is a list of :class:`Shown` masks (for which camera frame, when captured, when ready).
On a camera's clock, what the user sees at camera frame ``k``'s instant is the newest mask ready
by then; without a clock, each frame's own mask (:class:`LiveScorer`).

The figures (see :data:`LIVE_METRICS`):

* ``shown_fps``, ``startup_ms``, ``latency_ms_p50``/``_p95``, ``own_frame_j``/``_jf``,
  ``live_j``, ``late_by_one_j``, ``keyframe_share``, ``dropped``, ``key_scale_px_*``: as in the
  module docstring of :mod:`dinomask.evaluate.live`;
* coming and going (:func:`come_and_go_figures`): ``absent_frames`` (scored frames whose ground
  truth is empty), ``absent_fp_rate`` (the share of those with any object pixel on screen),
  ``reacquire_frames_mean``/``_max`` (for each return, the first present frame after absent
  ones: frames from it until the mask on screen first scores J >= :data:`REACQUIRED_J`; 0 = on
  the return frame), ``reacquire_missed`` (returns never re-acquired before the clip ends or the
  object leaves again), ``present_live_j`` (live J over the frames where the object is present).
  A clip without an absent frame gives None for the first five;
* ``late_by_one_absent_fp_rate``, ``late_by_one_reacquire_frames_mean``: the same two figures for
  the ground truth shown one frame late (as ``late_by_one_j``): what a perfect mask on a screen that
  lags the camera by a frame scores, the best a live loop can read. An object that leaves the view
  over a few frames is still on the last frame's mask (a false positive) and a fast object's
  frame-old mask may miss it by more than half.

Several objects (a label-map ground truth): each object is scored as above on its own mask
(the labels equal to its id) and the clip's figure is the mean over its objects, as DAVIS-2017
does; each clip keeps ``objects``: id -> that object's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dinomask.evaluate.metrics import score_mask

#: The figures of one replay, for the whole dataset and for each sequence (None where a clip is too
#: short to measure one; such a clip stays out of that figure's mean).
LIVE_METRICS = ("shown_fps", "latency_ms_p50", "latency_ms_p95", "own_frame_j", "own_frame_jf", "live_j",
                "late_by_one_j", "keyframe_share", "dropped", "startup_ms", "key_scale_px_max", "key_scale_px_mean",
                "absent_frames", "absent_fp_rate", "reacquire_frames_mean", "reacquire_frames_max", "reacquire_missed",
                "present_live_j", "late_by_one_absent_fp_rate", "late_by_one_reacquire_frames_mean")
#: Figures that describe a whole set by their sum or maximum over clips, not their mean.
SUMMED = ("absent_frames", "reacquire_missed")
MAXED = ("reacquire_frames_max", "key_scale_px_max")
#: The figures each object of a several-object clip gets.
OBJECT_METRICS = ("own_frame_j", "live_j", "absent_frames", "absent_fp_rate", "reacquire_frames_mean",
                  "reacquire_frames_max", "reacquire_missed", "present_live_j")
#: A clip with fewer camera frames than this after start-up (or fewer scored frames) gives no figure.
MIN_MEASURED_FRAMES = 2
#: The J at which a returning object counts as found again (the DAVIS recall threshold).
REACQUIRED_J = 0.5


@dataclass
class Shown:
    """One mask the loop showed: for frame ``index``, captured at ``captured`` s and ready at
    ``ready`` s (both from the first frame's capture); ``labels`` (``H x W`` uint8, 0 background,
    ``i`` object ``i``) where several objects are segmented."""

    index: int
    captured: float
    ready: float
    key: bool
    mask: np.ndarray = field(repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)

    def object_mask(self, object_id: int | None) -> np.ndarray:
        """The mask of object ``object_id`` (None: every object)."""
        if object_id is None:
            return self.mask
        if self.labels is None:
            return self.mask if object_id == 1 else np.zeros_like(self.mask)
        return self.labels == object_id


def mean_of(values) -> float | None:
    """The mean of the values that are not None, or None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate(metric: str, values) -> float | int | None:
    """A set's figure from its clips': summed counts, the maximum of maxima, else the mean."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    if metric in SUMMED:
        return int(sum(values))
    if metric in MAXED:
        return max(values)
    return float(np.mean(values))


def _j(prediction: np.ndarray, truth: np.ndarray) -> float:
    return score_mask(prediction, truth, boundary=False).iou


@dataclass(frozen=True)
class FrameRecord:
    """One scored camera frame, as far as coming and going needs it: whether the object is there,
    the J of the mask on screen (None: no mask on screen yet), and whether that mask shows any of it."""

    index: int
    present: bool
    j: float | None
    shows_object: bool


def come_and_go_figures(records: list[FrameRecord]) -> dict:
    """The come-and-go figures (see the module docstring) from one object's scored frames, in order."""
    absent = [r for r in records if not r.present]
    present_j = [r.j for r in records if r.present and r.j is not None]
    out = {"present_live_j": mean_of(present_j), "absent_frames": None, "absent_fp_rate": None,
           "reacquire_frames_mean": None, "reacquire_frames_max": None, "reacquire_missed": None}
    if not absent:
        return out
    found, missed = [], 0
    for position, record in enumerate(records):
        if not record.present or position == 0 or records[position - 1].present:
            continue  # a return: the first present frame after one or more absent ones
        for later in records[position:]:
            if not later.present:
                missed += 1  # gone again before it was found
                break
            if later.j is not None and later.j >= REACQUIRED_J:
                found.append(later.index - record.index)
                break
        else:
            missed += 1  # the clip ended before it was found
    out.update(absent_frames=len(absent), absent_fp_rate=sum(r.shows_object for r in absent) / len(absent),
               reacquire_frames_mean=float(np.mean(found)) if found else None,
               reacquire_frames_max=max(found) if found else None, reacquire_missed=missed)
    return out


class LiveScorer:
    """Scores a replay as it runs, holding no frame it has scored: a 10,000-frame clip costs the
    memory of a few frames (the truths are read through ``truths[k]`` once each, in order).

    Feed it each :class:`Shown` in the order the loop showed them (their ``ready`` times never go
    back), then :meth:`finish`. On a camera's clock, camera frame ``k`` is scored against the newest
    mask ready by its instant (``k / fps``); without one, each frame against its own mask.

    Args:
        truths: per camera frame, ``H x W`` bool (every object) or None (not annotated): a
            sequence read by index, in order.
        annotated: per camera frame, whether it has a ground truth (so that ``truths`` is only read
            where there is one).
        objects: with several objects, ``{id: per-frame truths of that object}`` (sequences as
            ``truths``): J and come-and-go figures per object, the clip's the mean over them.
    """

    def __init__(self, truths, fps: float, realtime: bool, first_scored: int = 1, annotated=None,
                 objects: dict | None = None):
        self.truths, self.fps, self.realtime, self.first_scored = truths, fps, realtime, first_scored
        self.count = len(truths)
        self.annotated = list(annotated) if annotated is not None else [t is not None for t in truths]
        self.objects = objects or {None: truths}
        self.timeline: list[tuple[int, float, float, bool]] = []  # (index, captured, ready, key), no masks
        self.own: dict = {o: [] for o in self.objects}
        self.records: dict = {o: [] for o in self.objects}
        self.late: list[float] = []
        self.late_records: list[FrameRecord] = []  # the ground truth one frame late, as shown masks
        self._current: Shown | None = None
        self._next = 0  # the next camera frame to score

    def add(self, shown: Shown) -> None:
        """One mask the loop showed."""
        self.timeline.append((shown.index, shown.captured, shown.ready, shown.key))
        if shown.index >= self.first_scored and shown.index < self.count and self.annotated[shown.index]:
            for object_id, truths in self.objects.items():
                self.own[object_id].append(score_mask(shown.object_mask(object_id), truths[shown.index]))
        if self.realtime:
            while self._next < self.count and self._next / self.fps + 1e-9 < shown.ready:
                self._score(self._next, self._current)
            self._current = shown
        else:
            while self._next < min(shown.index, self.count):  # frames never shown: no mask on screen
                self._score(self._next, None)
            if self._next == shown.index < self.count:
                self._score(self._next, shown)

    def _score(self, k: int, shown: Shown | None) -> None:
        self._next = k + 1
        if k < self.first_scored or not self.annotated[k]:
            return
        if self.annotated[k - 1] if k >= 1 else False:
            previous, truth = self.truths[k - 1], self.truths[k]
            self.late.append((k, _j(previous, truth)))
            self.late_records.append(FrameRecord(k, bool(truth.any()), self.late[-1][1], bool(previous.any())))
        for object_id, truths in self.objects.items():
            truth = truths[k]
            mask = None if shown is None else shown.object_mask(object_id)
            self.records[object_id].append(FrameRecord(k, bool(truth.any()), None if mask is None else _j(mask, truth),
                                                       mask is not None and bool(mask.any())))

    def finish(self, keyed=frozenset(), keys=()) -> dict:
        """The figures (see the module docstring). ``keyed``: frames the backbone ran on beside the
        loop (their masks count as keys); ``keys``: each key's :class:`~dinomask.segmenter.KeyInfo`."""
        while self._next < self.count:
            self._score(self._next, self._current if self.realtime else None)
        figures: dict = {}
        for object_id in self.objects:
            own, records = self.own[object_id], self.records[object_id]
            scored = [r for r in records if r.j is not None]
            figures[object_id] = {"own_frame_j": mean_of(o.iou for o in own), "own_frame_jf": mean_of(o.jf for o in own),
                                  "live_j": mean_of(r.j for r in scored), "curve": [(r.index, r.j) for r in scored],
                                  **come_and_go_figures(records)}
        timeline = self.timeline
        latency = np.array([(ready - captured) * 1e3 for _, captured, ready, _ in timeline])
        duration = self.count / self.fps
        first = min((ready for _, _, ready, _ in timeline), default=duration)
        shown_fps = None
        if self.realtime:  # of the camera frames from the end of start-up on (the newest then included), the share shown
            start = int(math.floor(first * self.fps + 1e-9))
            available = self.count - start
            if available >= MIN_MEASURED_FRAMES:
                shown_fps = self.fps * sum(1 for index, *_ in timeline if index >= start) / available
        else:
            span = max((ready for _, _, ready, _ in timeline), default=first) - first
            if len(timeline) >= MIN_MEASURED_FRAMES and span > 0:
                shown_fps = (len(timeline) - 1) / span
        scales = [k.scale_px for k in keys if k is not None]
        combined = {metric: aggregate(metric, (f[metric] for f in figures.values()))
                    for metric in OBJECT_METRICS + ("own_frame_jf",)}
        curves = [dict(f["curve"]) for f in figures.values()]  # each made once: a clip may have 10,000 frames
        curve = [(k, float(np.mean([c.get(k, 0.0) for c in curves]))) for k in sorted(set().union(*curves))]
        scored_frames = sum(1 for k in range(self.first_scored, self.count) if self.annotated[k])
        ceiling = come_and_go_figures(self.late_records)
        out = {
            "shown_fps": shown_fps,
            "startup_ms": first * 1e3,
            "latency_ms_p50": float(np.percentile(latency, 50)) if len(latency) else None,
            "latency_ms_p95": float(np.percentile(latency, 95)) if len(latency) else None,
            **combined,
            "late_by_one_j": mean_of(j for _, j in self.late),
            "late_by_one_absent_fp_rate": ceiling["absent_fp_rate"],
            "late_by_one_reacquire_frames_mean": ceiling["reacquire_frames_mean"],
            "keyframe_share": (sum(key or index in keyed for index, _, _, key in timeline) / len(timeline)
                               if timeline else None),
            "dropped": self.count - len(timeline),
            "frames": self.count,
            "scored_frames": scored_frames,
            "key_scale_px_max": max(scales) if scales else None,
            "key_scale_px_mean": float(np.mean(scales)) if scales else None,
            "curves": {"live_j": curve, "late_by_one_j": list(self.late),
                       "latency_ms": [(index, float(l)) for (index, *_), l in zip(timeline, latency)]},
        }
        if None not in self.objects:
            out["objects"] = {str(i): {m: f[m] for m in OBJECT_METRICS} for i, f in figures.items()}
        return out


def score_replay(shown: list[Shown], truths: list[np.ndarray | None], fps: float, realtime: bool,
                 first_scored: int = 1, keys=(), objects: dict[int, list[np.ndarray | None]] | None = None) -> dict:
    """The live metrics of a finished replay (a :class:`LiveScorer` fed every mask shown).

    Args:
        shown: the masks the loop showed, in order.
        truths: per camera frame, its ground truth (``H x W`` bool, every object), or None for a
            frame without one (it is delivered and may be shown, but not scored).
        first_scored: frames before this one (the reference frame the clip was taught on) are
            played but never scored.
        keys: :class:`~dinomask.segmenter.KeyInfo` of each key made.
        objects: with several objects, ``{id: per-frame truths of that object}``: the J and
            come-and-go figures become the mean over the objects, each kept under ``objects``.

    Figures a clip is too short to give are None: ``shown_fps`` with fewer than
    :data:`MIN_MEASURED_FRAMES` camera frames after start-up, the J figures without a scored frame.
    """
    scorer = LiveScorer(truths, fps, realtime, first_scored, objects=objects)
    for item in sorted(shown, key=lambda s: s.ready) if realtime else shown:
        scorer.add(item)
    return scorer.finish(keys=keys)
