"""``dinomask eval live``: replay labelled clips through the live loop on a camera's clock and
score what the user saw.

A clip is delivered as a camera delivers it: frame ``k`` is ready ``k / fps`` after the first,
and the loop takes the newest frame when it is free (the rest are dropped). For every mask the
loop shows we record the frame it was made for, when that frame was captured and when the
mask was ready. From these:

* ``shown_fps``: the camera's rate times the share of its frames shown, counted from the
  first mask on (like ``live_j``, start-up is excluded: a camera runs for hours);
  ``startup_ms``: the clip's start to its first mask (one key, before anything can be carried);
* ``latency_ms_p50`` / ``_p95``: capture of a frame to its mask being ready;
* ``own_frame_j`` / ``own_frame_jf``: each shown mask against its own frame's ground truth
  (DAVIS J and J&F);
* ``live_j``: at each camera frame's instant, the newest mask shown by then against the ground
  truth of *that* frame: what a user looking at the screen gets. Counted from the first mask
  shown (start-up is excluded: a camera runs for hours);
* ``keyframe_share``: backbone runs per shown frame; ``dropped``: camera frames never shown.

Schedules (``--keyframes``): ``off`` (the backbone on every frame it takes), ``auto`` and
``every:K`` (keyframes in the loop, flow between), ``async`` (the backbone in its own worker,
flow on every frame, keys carried forward when they land).

``oracle=True`` replaces the patch classifier by the ground truth averaged onto the grid (the
backbone still runs, so its cost is real): every schedule is measured against its own ceiling
without real weights. ``costs=(key_ms, flow_ms)`` replaces the wall clock by a simulated one
in which a key takes ``key_ms`` and a flow step ``flow_ms`` (the maps are still computed for
real), for figures that do not depend on the machine's load.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dinomask.evaluate.datasets import Dataset, LabelledSequence, load_pair
from dinomask.evaluate.metrics import score_mask
from dinomask.keyframes import FlowCarrier, KeyframeSettings, ScorePropagator
from dinomask.preprocess import patch_coverage
from dinomask.segmenter import SegmentationResult, Segmenter
from dinomask.video import Frame, FrameSource, SequenceCapture, SourceSettings, run_live

#: The figures every run gives, for the whole dataset and for each sequence.
LIVE_METRICS = ("shown_fps", "latency_ms_p50", "latency_ms_p95", "own_frame_j", "own_frame_jf", "live_j",
                "keyframe_share", "dropped", "startup_ms")


@dataclass(frozen=True)
class LiveEvalSettings:
    """How clips are replayed.

    Attributes:
        fps: the camera's rate.
        realtime: deliver on the camera clock (off: every frame is taken, as ``remove`` does).
        oracle: the ground truth on the grid is the patch classifier (the backbone still runs).
        costs: ``(key_ms, flow_ms)`` for a simulated clock, or None for the wall clock.
        max_frames: at most this many frames of each clip.
        key_budget_ms: ``async`` on the wall clock: the rate controller's target for one key, as
            in ``live`` (None: 4 camera frames; 0: the token budget stays fixed).
    """

    fps: float = 24.0
    realtime: bool = True
    oracle: bool = False
    costs: tuple[float, float] | None = None
    max_frames: int | None = None
    key_budget_ms: float | None = None

    @property
    def key_budget(self) -> float | None:
        """The controller's target in ms, or None for a fixed token budget."""
        budget = 4000.0 / self.fps if self.key_budget_ms is None else self.key_budget_ms
        return budget or None

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 1000:
            raise ValueError(f"fps must be in (0, 1000], got {self.fps}")
        if self.costs is not None and (len(self.costs) != 2 or min(self.costs) <= 0):
            raise ValueError(f"costs must be two positive numbers key_ms,flow_ms, got {self.costs}")


@dataclass
class Shown:
    """One mask the loop showed: for frame ``index``, captured at ``captured`` s and ready at
    ``ready`` s (both from the first frame's capture)."""

    index: int
    captured: float
    ready: float
    key: bool
    mask: np.ndarray = field(repr=False)


def parse_costs(text: str | None) -> tuple[float, float] | None:
    """``"262,22"`` -> ``(262.0, 22.0)`` (key ms, flow ms)."""
    if not text:
        return None
    try:
        key, flow = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected --costs KEY_MS,FLOW_MS such as 262,22, got {text!r}") from None
    return key, flow


# ----------------------------------------------------------------------------- keys


def key_maker(segmenter: Segmenter, truths: list[np.ndarray] | None):
    """``(image, index) -> maps``: the segmenter's key, or with ``truths`` the oracle (the model
    runs first so its cost is paid, then the ground truth's patch coverage replaces its score;
    with a region of interest or a refiner, the oracle's mask on the key's own crop and grid,
    refined, is carried, and the next crop follows it)."""

    from dinomask.async_keys import segmenter_keys
    from dinomask.evaluate.oracle import oracle_frame

    real = segmenter_keys(segmenter)
    if truths is None:
        return real
    config, patch = segmenter.config, segmenter.backbone.spec.patch_size

    def make(image: np.ndarray, index: int) -> list:
        result = segmenter.key(image)
        if not (config.roi.enabled or segmenter.refiner is not None):
            coverage = patch_coverage(truths[index], result.score.shape)
            return [coverage - 0.5, coverage]
        frame = oracle_frame(image, truths[index], config, patch, result.roi, segmenter.refiner)
        segmenter.follow(frame.mask)
        return [np.where(frame.mask, 1.0, -1.0).astype(np.float32), frame.coverage]

    return make


class SyncStage:
    """Keyframes inside the loop (``off``, ``auto``, ``every:K``): a key when the propagator
    asks for one, else a flow step; ``process(frame) -> (result, was_key)``."""

    def __init__(self, segmenter: Segmenter, make, settings: KeyframeSettings):
        self.segmenter, self.make = segmenter, make
        self.propagator = ScorePropagator(settings) if settings.enabled else None

    def __call__(self, frame: Frame) -> tuple[SegmentationResult, bool]:
        maps = self.propagator.step(frame.image) if self.propagator is not None else None
        key = maps is None
        if key:
            maps = self.make(frame.image, frame.index)
            if self.propagator is not None:
                self.propagator.seed(frame.image, maps)
        return self.segmenter.carried_result(frame.image, maps, keyframe=key), key

    def close(self) -> None:
        """Nothing runs beside the loop."""


class AsyncStage:
    """``--keyframes async`` for the wall clock: :class:`~dinomask.async_keys.AsyncKeyStage`."""

    def __init__(self, segmenter: Segmenter, make, key_budget_ms: float | None = None):
        from dinomask.async_keys import AsyncKeyStage

        self.stage = AsyncKeyStage(segmenter, key_maker=make, key_budget_ms=key_budget_ms)

    def __call__(self, frame: Frame) -> tuple[SegmentationResult, bool]:
        result = self.stage(frame)
        return result, result.keyframe

    @property
    def keyed(self) -> set[int]:
        """Frames the worker ran the backbone on."""
        return self.stage.keyed

    def close(self) -> None:
        """Stop the key worker."""
        self.stage.close()


# ----------------------------------------------------------------------------- replays


def replay_wall_clock(images: list[np.ndarray], stage, settings: LiveEvalSettings) -> list[Shown]:
    """The real live loop (:func:`~dinomask.video.run_live`) on a real camera clock."""
    bgr = [np.ascontiguousarray(image[:, :, ::-1]) for image in images]
    source = FrameSource("replay", SourceSettings(realtime=settings.realtime, fps=settings.fps),
                         open_capture=lambda _: SequenceCapture(bgr, settings.fps))
    shown: list[Shown] = []
    origin: list[float] = []
    lock = threading.Lock()

    def process(frame: Frame, meter) -> SegmentationResult:
        if not origin:
            origin.append(frame.captured_at - frame.timestamp)
        result, key = stage(frame)
        ready = time.monotonic()
        with lock:
            shown.append(Shown(frame.index, frame.captured_at - origin[0], ready - origin[0], key, result.mask))
        return result

    try:
        run_live(source, process, lambda frame, result, meter: True)
    finally:
        stage.close()
    keyed = getattr(stage, "keyed", set())
    for item in shown:
        item.key = item.key or item.index in keyed
    return shown


def replay_simulated(images: list[np.ndarray], segmenter: Segmenter, make, keyframes: KeyframeSettings,
                     settings: LiveEvalSettings) -> list[Shown]:
    """The same schedules on a simulated clock: a key costs ``key_ms``, a flow step ``flow_ms``
    (the loop on one core, the async key worker on the other); the maps are computed for real."""
    key_s, flow_s = (c / 1000.0 for c in settings.costs)
    fps, count = settings.fps, len(images)
    shown: list[Shown] = []
    now, last = 0.0, -1

    def next_frame(at: float) -> int:
        newest = int(math.floor(at * fps + 1e-9)) if settings.realtime else last + 1
        return max(newest, last + 1)

    if keyframes.policy != "async":
        stage = SyncStage(segmenter, make, keyframes)
        while (index := next_frame(now)) < count:
            now = max(now, index / fps)
            result, key = stage(Frame(images[index], index, index / fps))
            now += key_s if key else flow_s
            shown.append(Shown(index, index / fps, now, key, result.mask))
            last = index
        return shown
    carrier = FlowCarrier(keyframes.flow_side, keyframes.fb_tolerance)
    job: tuple[int, float, list] | None = None  # the worker's key: (frame, done at, maps)
    offered: list[tuple[int, float]] = []  # frames the loop offered: (index, at)
    keyed: set[int] = set()  # frames the worker ran the backbone on
    while (index := next_frame(now)) < count:
        now = max(now, index / fps)
        maps = carrier.step(index, images[index])
        key = False
        if job is not None and job[1] <= now:
            carrier.land(job[0], job[2])
            maps, key, free_at = carrier.maps, job[0] == index, job[1]
            job = None
            waiting = [o for o in offered if o[1] <= free_at]  # the worker takes the newest offer when it frees
            if waiting:
                job = (waiting[-1][0], free_at + key_s, make(images[waiting[-1][0]], waiting[-1][0]))
                keyed.add(waiting[-1][0])
            offered = [o for o in offered if o[1] > free_at]
        cost = flow_s
        if maps is None:
            carrier.land(index, make(images[index], index))
            maps, key, cost = carrier.maps, True, flow_s + key_s
        result = segmenter.carried_result(images[index], maps, keyframe=key)
        now += cost
        shown.append(Shown(index, index / fps, now, key, result.mask))
        if job is None:
            job = (index, now + key_s, make(images[index], index))
            keyed.add(index)
            offered = []
        else:
            offered.append((index, now))
        last = index
    for item in shown:
        item.key = item.key or item.index in keyed
    return shown


# ----------------------------------------------------------------------------- scores


def score_replay(shown: list[Shown], truths: list[np.ndarray], fps: float, realtime: bool) -> dict:
    """The live metrics of one replay (see the module docstring), with per-frame curves."""
    count = len(truths)
    own = [score_mask(s.mask, truths[s.index]) for s in shown]
    latency = np.array([(s.ready - s.captured) * 1e3 for s in shown])
    live, curve = [], []
    if realtime and shown:
        by_ready = sorted(shown, key=lambda s: s.ready)
        pointer = -1
        for k in range(count):
            at = k / fps
            while pointer + 1 < len(by_ready) and by_ready[pointer + 1].ready <= at + 1e-9:
                pointer += 1
            if pointer >= 0:
                j = score_mask(by_ready[pointer].mask, truths[k], boundary=False).iou
                live.append(j)
                curve.append((k, j))
    else:
        live = [o.iou for o in own]
        curve = [(s.index, o.iou) for s, o in zip(shown, own)]
    duration = count / fps
    first = min((s.ready for s in shown), default=duration)
    if realtime:  # of the camera frames from the end of start-up on (the newest then included), the share shown
        available = count - int(math.floor(first * fps + 1e-9))
        shown_fps = min(fps, fps * (len(shown) - 1) / available) if available > 0 else 0.0
    else:
        span = max((s.ready for s in shown), default=first) - first
        shown_fps = (len(shown) - 1) / span if span > 0 else 0.0
    return {
        "shown_fps": shown_fps,
        "startup_ms": first * 1e3,
        "latency_ms_p50": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "latency_ms_p95": float(np.percentile(latency, 95)) if len(latency) else float("nan"),
        "own_frame_j": float(np.mean([o.iou for o in own])) if own else 0.0,
        "own_frame_jf": float(np.mean([o.jf for o in own])) if own else 0.0,
        "live_j": float(np.mean(live)) if live else 0.0,
        "keyframe_share": sum(s.key for s in shown) / len(shown) if shown else 0.0,
        "dropped": count - len(shown),
        "frames": count,
        "curves": {"live_j": curve, "latency_ms": [(s.index, float(l)) for s, l in zip(shown, latency)]},
    }


def evaluate_live(dataset: Dataset, segmenter_for, schedules: list[str], settings: LiveEvalSettings,
                  progress=None) -> dict:
    """Replay every sequence with every schedule; returns ``{"schedules": {name: {dataset
    figures..., "sequences": {seq: figures}}}}``.

    Args:
        segmenter_for: ``(sequence, KeyframeSettings) -> Segmenter`` (a fresh one per replay).
        schedules: ``--keyframes`` values (``async``, ``auto``, ``every:4``, ``off``).
    """
    out: dict = {"schedules": {}}
    for text in schedules:
        keyframes = KeyframeSettings.parse(text)
        per_sequence: dict[str, dict] = {}
        for sequence in dataset.sequences:
            per_sequence[sequence.name] = replay_sequence(sequence, segmenter_for(sequence, keyframes), keyframes, settings)
            if progress is not None:
                progress.update(1)
        means = {m: float(np.mean([s[m] for s in per_sequence.values()])) for m in LIVE_METRICS if per_sequence}
        out["schedules"][keyframes.describe()] = means | {"sequences": per_sequence}
    return out


def replay_sequence(sequence: LabelledSequence, segmenter: Segmenter, keyframes: KeyframeSettings,
                    settings: LiveEvalSettings) -> dict:
    """One clip through one schedule: its live metrics and curves."""
    frames = sequence.frames[: settings.max_frames] if settings.max_frames else sequence.frames
    pairs = [load_pair(frame) for frame in frames]
    images, truths = [p[0] for p in pairs], [p[1] for p in pairs]
    make = key_maker(segmenter, truths if settings.oracle else None)
    segmenter.reset()
    if settings.costs is not None:
        shown = replay_simulated(images, segmenter, make, keyframes, settings)
    else:
        stage = (AsyncStage(segmenter, make, settings.key_budget) if keyframes.policy == "async"
                 else SyncStage(segmenter, make, keyframes))
        shown = replay_wall_clock(images, stage, settings)
    return score_replay(shown, truths, settings.fps, settings.realtime)


def plot_sequence(result: dict, sequence: str, path: Path) -> Path:
    """Live J and latency over the clip's frames for each schedule (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, figures in result["schedules"].items():
        curves = figures["sequences"][sequence]["curves"]
        if curves["live_j"]:
            top.plot(*zip(*curves["live_j"]), label=f"{name} (live J {figures['sequences'][sequence]['live_j']:.3f})")
        if curves["latency_ms"]:
            bottom.plot(*zip(*curves["latency_ms"]), marker=".", linestyle="-", label=name)
    top.set_ylabel("live J (newest shown mask\nvs the frame on the camera)")
    top.set_ylim(0, 1)
    bottom.set_ylabel("latency (ms, capture to mask)")
    bottom.set_xlabel(f"camera frame of {sequence}")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"eval live: {sequence}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
