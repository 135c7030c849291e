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
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dinomask.evaluate.datasets import Dataset, LabelledSequence
from dinomask.evaluate.live_scores import LIVE_METRICS, Shown, aggregate, score_replay  # noqa: F401 (the yardstick)
from dinomask.keyframes import FlowCarrier, KeyframeSettings, ScorePropagator
from dinomask.preprocess import patch_coverage
from dinomask.segmenter import SegmentationResult, Segmenter
from dinomask.video import Frame, FrameSource, SequenceCapture, SourceSettings, run_live

#: The largest key or flow cost, and key budget, taken (ms): a minute.
MAX_COST_MS = 60_000.0


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
            in ``live`` (None: one camera frame; 0: the token budget stays fixed).
        machine_factor: the simulated clock plays a machine this many times slower than the one
            ``costs`` were measured on (keys, flow and a finer flow's extra all scale by it).
    """

    fps: float = 24.0
    realtime: bool = True
    oracle: bool = False
    costs: tuple[float, float] | None = None
    max_frames: int | None = None
    key_budget_ms: float | None = None
    machine_factor: float = 1.0

    @property
    def key_budget(self) -> float | None:
        """The controller's target in ms, or None for a fixed token budget."""
        from dinomask.async_keys import default_key_budget_ms

        budget = default_key_budget_ms(self.fps) if self.key_budget_ms is None else self.key_budget_ms
        return budget or None

    def __post_init__(self) -> None:
        from dinomask.video import MAX_FPS, MIN_FPS

        if not (math.isfinite(self.fps) and MIN_FPS <= self.fps <= MAX_FPS):
            raise ValueError(f"fps must be in {MIN_FPS}..{MAX_FPS}, got {self.fps}")
        if self.costs is not None and (len(self.costs) != 2 or not all(math.isfinite(c) and 0 < c <= MAX_COST_MS
                                                                       for c in self.costs)):
            raise ValueError(f"costs must be two numbers KEY_MS,FLOW_MS in (0, {MAX_COST_MS:g}] ms, got {self.costs}")
        if not (math.isfinite(self.machine_factor) and 0.1 <= self.machine_factor <= 100):
            raise ValueError(f"machine_factor must be in 0.1..100, got {self.machine_factor}")
        if self.key_budget_ms is not None and not (math.isfinite(self.key_budget_ms) and 0 <= self.key_budget_ms <= MAX_COST_MS):
            raise ValueError(f"key_budget_ms must be in 0..{MAX_COST_MS:g} ms (0: a fixed token budget), got {self.key_budget_ms}")


def parse_costs(text: str | None) -> tuple[float, float] | None:
    """``"262,22"`` -> ``(262.0, 22.0)`` (key ms, flow ms); both finite and in (0, 60000]."""
    if not text:
        return None
    try:
        key, flow = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected --costs KEY_MS,FLOW_MS such as 262,22, got {text[:40]!r}") from None
    if not all(math.isfinite(c) and 0 < c <= MAX_COST_MS for c in (key, flow)):
        raise ValueError(f"--costs KEY_MS,FLOW_MS must be two numbers in (0, {MAX_COST_MS:g}] ms, got {text[:40]!r}")
    return key, flow


#: One flow step (two DIS flows, the camera's shift, warping, uncovered background) at the default
#: 120 px short side, 854 x 480 frames, measured on the 2-core build machine with
#: ``benchmarks/flow_cost.py`` (5.1 ms; 10.9 at 180 px, 18.9 at 240: it grows with the flow image's
#: area), and a tenth more since each step also finds the camera's shift (7.0 -> 7.7 ms at 120 px,
#: 11.6 -> 12.8 at 160, both measured in one run; :class:`~dinomask.keyframes.PannedFlow`).
FLOW_STEP_MS_AT_120 = 5.6
#: Matching one carried object to its own shift (:func:`~dinomask.keyframes.follow_object`), on each
#: flow step and on each step a late key is carried through, at a 120 px flow: what
#: ``FlowCarrier.step`` with one object gained with it on four clips of davis-motion and davis-train6
#: (median 7.6 / 7.8 -> 8.1 / 8.3 ms at 120 px, 13.0 / 13.2 -> 13.8 / 14.1 at 160, two rounds each,
#: build machine), grown with the flow image's area as the step is.
MATCH_MS_AT_120 = 0.5


@dataclass(frozen=True)
class CostModel:
    """The simulated clock: a key costs ``key_ms`` at ``tokens`` patches and grows with its own
    patch count as ``(patches / tokens) ** exponent`` (the exponent measured with
    ``benchmarks/backbone_speed.py``; a crop key of fewer patches costs less); every frame pays
    ``flow_ms`` (all of a frame's work with flow at 120 px) and, with a finer flow, the extra a
    flow step costs at ``flow_side`` (:data:`FLOW_STEP_MS_AT_120` times the growth of its area)."""

    key_ms: float
    flow_ms: float
    tokens: int
    exponent: float
    flow_side: int = 120
    factor: float = 1.0

    def key_s(self, patches: int) -> float:
        return self.factor * self.key_ms / 1000.0 * (max(patches, 1) / self.tokens) ** self.exponent

    @property
    def step_s(self) -> float:
        """The flow step at the start of a frame's work (it grows with the flow image's area): the loop
        takes a key that landed by its end (:class:`~dinomask.async_keys.AsyncKeyStage` looks for one
        after the step)."""
        return self.factor * FLOW_STEP_MS_AT_120 * (self.flow_side / 120.0) ** 2 / 1000.0

    def match_s(self, matches: int) -> float:
        """What matching ``matches`` carried objects to their own shift costs (:data:`MATCH_MS_AT_120`)."""
        return matches * self.factor * MATCH_MS_AT_120 * (self.flow_side / 120.0) ** 2 / 1000.0

    def pass_s(self, passes: int) -> float:
        """What a flow step's DIS passes beyond its two cost (a third when DIS ran again from the
        camera's shift): half a step each, the step being two passes and the rest."""
        return max(0, passes - 2) * self.step_s / 2

    @property
    def frame_s(self) -> float:
        """A frame's work in the loop: ``flow_ms`` (measured with a 120 px flow step) with the step at
        ``flow_side`` in place of that one."""
        return self.factor * (self.flow_ms - FLOW_STEP_MS_AT_120) / 1000.0 + self.step_s




# ----------------------------------------------------------------------------- keys


def nearest_truth(truths: list[np.ndarray | None], index: int) -> np.ndarray:
    """The ground truth of frame ``index``, or of the nearest annotated frame (the earlier one first)
    where ``index`` has none: the oracle's key on an unannotated frame."""
    if truths[index] is not None:
        return truths[index]
    for distance in range(1, len(truths)):
        for other in (index - distance, index + distance):
            if 0 <= other < len(truths) and truths[other] is not None:
                return truths[other]
    raise ValueError("the clip has no annotated frame")


def key_maker(segmenter: Segmenter, truths, labels=None, objects: tuple[int, ...] = ()):
    """``(image, index) -> maps``: the segmenter's key, or with ``truths`` the oracle (the model
    runs first so its cost is paid, then the ground truth's patch coverage replaces its score;
    with a region of interest or a refiner, the oracle's mask on the key's own crop and grid,
    refined, is carried, and the next crop follows it). Frames without a ground truth take the
    nearest annotated frame's. With several ``objects`` (ids in ``labels``, the per-frame label
    maps), each object's share of the frame follows the maps, as :meth:`Segmenter.carry_maps` does.

    The returned function's ``keys`` list gets each key's :class:`~dinomask.segmenter.KeyInfo`."""

    from dinomask.async_keys import segmenter_keys
    from dinomask.evaluate.oracle import oracle_frame
    from dinomask.postprocess import split_among

    real = segmenter_keys(segmenter)
    patch = segmenter.backbone.spec.patch_size
    keys: list = []

    def make(image: np.ndarray, index: int) -> list:
        if truths is None:
            maps = real(image, index)
            keys.append(segmenter.last_key)
            return maps
        result = segmenter.key(image, follow=False)  # the crops follow the ground truth's mask (below)
        keys.append(segmenter.last_key)
        truth = nearest_truth(truths, index)
        members = []  # with several objects, each one's ground truth
        if len(objects) > 1:
            ids = nearest_truth(labels, index)
            members = [ids == object_id for object_id in objects]
        shares = [member.astype(np.float32) for member in members]
        if not (segmenter.config.roi.enabled or segmenter.refiner is not None):
            coverage = patch_coverage(truth, result.score.shape)
            return [coverage - 0.5, coverage, *shares]
        grids = segmenter.last_key.grids  # the ground truth on the grids the key really used
        if result.crops:  # a crop per object: each object's ground truth on its own crop's grid
            frames = [oracle_frame(image, members[i], segmenter.config, patch, box, segmenter.refiner, grids[i])
                      for i, box in enumerate(result.crops)]
            mask = np.any([f.mask for f in frames], axis=0)
        else:
            mask = oracle_frame(image, truth, segmenter.config, patch, result.roi, segmenter.refiner, grids[0]).mask
        coverage = patch_coverage(truth, result.score.shape)
        found = None
        if members:  # each object's part of the oracle's mask: the next key's crops follow them, flow carries them
            # a crop's mask is its object's; the grid's fringe outside every object goes to the nearest one
            claims = shares if not result.crops else [f.mask + member for f, member in zip(frames, shares)]
            found = split_among(mask, np.stack(claims))
            shares = [(found == i + 1).astype(np.float32) for i in range(len(members))]
        segmenter.follow(mask, found)
        return [np.where(mask, 1.0, -1.0).astype(np.float32), coverage, *shares]

    make.keys = keys
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

    def __init__(self, segmenter: Segmenter, make, key_budget_ms: float | None = None, fps: float | None = None):
        from dinomask.async_keys import AsyncKeyStage

        self.stage = AsyncKeyStage(segmenter, key_maker=make, key_budget_ms=key_budget_ms, fps=fps)

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


class _Emitter:
    """Where a replay's shown masks go: a :class:`~dinomask.evaluate.live_scores.LiveScorer` (as
    they come, nothing kept) or a list (returned to the caller)."""

    def __init__(self, scorer=None, multi: bool = False):
        self.scorer, self.multi, self.shown = scorer, multi, []

    def __call__(self, index: int, captured: float, ready: float, key: bool, result: SegmentationResult) -> None:
        shown = Shown(index, captured, ready, key, result.mask, result.labels if self.multi else None)
        if self.scorer is not None:
            self.scorer.add(shown)
        else:
            self.shown.append(shown)

    def result(self, keyed: set[int]):
        """The keyed frames (with a scorer), or the shown list with keys marked."""
        if self.scorer is not None:
            return keyed
        for item in self.shown:
            item.key = item.key or item.index in keyed
        return self.shown


def replay_wall_clock(images, stage, settings: LiveEvalSettings, scorer=None, objects: int = 1):
    """The real live loop (:func:`~dinomask.video.run_live`) on a real camera clock, frames read as
    it plays. Returns the shown list (keys marked), or with ``scorer`` the frames keyed beside the
    loop. With a scorer the masks are scored after the run, not in the loop (scoring costs time the
    loop must not pay): meanwhile each is held packed, 1 bit a pixel (51 KB at 854 x 480)."""
    source = FrameSource("replay", SourceSettings(realtime=settings.realtime, fps=settings.fps),
                         open_capture=lambda _: SequenceCapture(images, settings.fps,
                                                                lambda image: np.ascontiguousarray(image[:, :, ::-1])))
    held: list[tuple] = []
    origin: list[float] = []
    lock = threading.Lock()
    multi = objects > 1

    def process(frame: Frame, meter) -> SegmentationResult:
        if not origin:
            origin.append(frame.captured_at - frame.timestamp)
        result, key = stage(frame)
        ready = time.monotonic()
        with lock:
            held.append((frame.index, frame.captured_at - origin[0], ready - origin[0], key,
                         np.packbits(result.mask), result.mask.shape,
                         result.labels.copy() if multi else None))
        return result

    try:
        run_live(source, process, lambda frame, result, meter: True)
    finally:
        stage.close()
    emit = _Emitter(scorer, multi)
    for index, captured, ready, key, packed, shape, labels in held:
        mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        emit(index, captured, ready, key, SimpleNamespace(mask=mask, labels=labels))
    return emit.result(getattr(stage, "keyed", set()))


def replay_simulated(images, segmenter: Segmenter, make, keyframes: KeyframeSettings,
                     settings: LiveEvalSettings, scorer=None):
    """The same schedules on a simulated clock (:class:`CostModel`): the loop on one core, the async
    key worker on the other; the maps are computed for real. With ``async`` the rate controller
    (:class:`~dinomask.async_keys.KeyRateController`) moves the token budget by the modelled costs, as
    it does by measured ones on the wall clock, so cheaper (fewer-patch) keys come sooner.

    Returns the shown list (keys marked), or with ``scorer`` (fed each mask as it is shown, so
    nothing of a frame is kept) the frames keyed beside the loop."""
    from dinomask.async_keys import KeyRateController

    model = cost_model(segmenter, settings, keyframes)
    controller = KeyRateController(segmenter, settings.key_budget if keyframes.policy == "async" else None)
    flow_s = model.frame_s
    fps, count = settings.fps, len(images)
    emit = _Emitter(scorer, len(segmenter.object_names) > 1)
    now, last = 0.0, -1

    key_seconds = [0.0]  # the cost of the last key made

    def key(index: int) -> tuple[list, float]:
        maps = make(images[index], index)
        info = segmenter.last_key
        key_seconds[0] = model.key_s(info.patches if info is not None else model.tokens)
        controller.update(key_seconds[0] * 1000.0)
        return maps, key_seconds[0]

    def next_frame(at: float) -> int:
        newest = int(math.floor(at * fps + 1e-9)) if settings.realtime else last + 1
        return max(newest, last + 1)

    if keyframes.policy != "async":  # the loop's own schedule: a frame pays its flow step, and its key when keyed
        stage = SyncStage(segmenter, lambda image, index: key(index)[0], keyframes)
        while (index := next_frame(now)) < count:
            now = max(now, index / fps)
            result, was_key = stage(Frame(images[index], index, index / fps))
            now += (flow_s if stage.propagator is not None else 0.0) + (key_seconds[0] if was_key else 0.0)
            emit(index, index / fps, now, was_key, result)
            last = index
        return emit.result(set())
    carrier = FlowCarrier.for_settings(keyframes)
    can_cancel = getattr(segmenter.backbone, "can_cancel", False)
    job: tuple[int, float, list] | None = None  # the worker's key: (frame, done at, maps)
    offered: list[tuple[int, float]] = []  # frames the loop offered: (index, at)
    keyed: set[int] = set()  # frames the worker ran the backbone on

    def start(frame: int, at: float) -> tuple[int, float, list]:
        """The worker takes ``frame`` at ``at`` s: its job (frame, done at, maps)."""
        key_maps, seconds = key(frame)
        keyed.add(frame)
        return frame, at + seconds, key_maps

    while (index := next_frame(now)) < count:
        now = max(now, index / fps)
        early = carrier.maps is not None and not segmenter.key_follows_mask  # as AsyncKeyStage offers it
        maps = carrier.step(index, images[index])
        extra = model.pass_s(carrier.passes) + model.match_s(carrier.matches)
        step_matches = carrier.matches
        stepped = now + model.step_s + extra  # the end of this frame's flow step
        was_key = False
        if early and job is not None:
            offered.append((index, now))
        if job is not None and job[1] <= stepped:  # landed by the end of the flow step
            carrier.land(job[0], job[2])
            maps, was_key, free_at = carrier.maps, job[0] == index, job[1]
            job = None
            waiting = [o for o in offered if o[1] <= free_at]  # the worker takes the newest offer when it frees
            if waiting:
                job = start(waiting[-1][0], free_at)
            offered = [o for o in offered if o[1] > free_at]
        if early and job is None:  # offered as it arrived (a key that needs nothing of its mask)
            job, offered = start(index, now), []
        if carrier.cut_at == index:  # as AsyncKeyStage does
            segmenter.scene_cut()
            if job is not None and job[0] < index and can_cancel:  # a key for the old scene is stopped
                job, offered = None, []  # (cancel_stale_key), after the flow step that found the cut,
                if early:  # and the worker takes the cut frame, offered as it arrived
                    job = start(index, stepped)
        cost = flow_s + extra + model.match_s(carrier.matches - step_matches)  # a late key's replays
        if maps is None:
            key_maps, seconds = key(index)
            carrier.land(index, key_maps)
            maps, was_key, cost = carrier.maps, True, flow_s + extra + seconds
        result = segmenter.carried_result(images[index], maps, keyframe=was_key)
        segmenter.follow(result.mask, result.labels)  # as the live loop does: the next crop key is around this mask
        now += cost
        emit(index, index / fps, now, was_key, result)
        if not early:  # a crop key: offered now that the mask it crops around is made
            if job is None:
                job, offered = start(index, now), []
            else:
                offered.append((index, now))
        last = index
    return emit.result(keyed)


def cost_model(segmenter: Segmenter, settings: LiveEvalSettings, keyframes: KeyframeSettings) -> CostModel:
    """The simulated clock's model for this segmenter: ``--costs`` at its configured token budget
    and flow side."""
    from dinomask.async_keys import KeyRateController

    key_ms, flow_ms = settings.costs
    return CostModel(key_ms, flow_ms, segmenter.config.geometry.tokens, KeyRateController.COST_EXPONENT,
                     keyframes.flow_side if keyframes.enabled else 120, settings.machine_factor)


class ClipProblem(ValueError):
    """A clip that cannot be replayed as it is (named in the report's problems, skipped)."""


def evaluate_live(dataset: Dataset, segmenter_for, schedules: list[str], settings: LiveEvalSettings,
                  progress=None) -> dict:
    """Replay every sequence with every schedule; returns ``{"schedules": {name: {dataset
    figures..., "sequences": {seq: figures}}}, "problems": [...]}``.

    A clip whose first mask is empty, whose frames change size, or whose files cannot be read is
    skipped and named in ``problems``; the others are measured. Dataset figures are means over the
    clips that give them (a clip too short for a figure stays out of that mean).

    Args:
        segmenter_for: ``(sequence, KeyframeSettings) -> Segmenter`` (a fresh one per replay).
        schedules: ``--keyframes`` values (``async``, ``auto``, ``every:4``, ``off``).
    """
    from dinomask.errors import DinomaskError

    out: dict = {"schedules": {}, "problems": []}
    clips: set[str] = set()  # checked here; each replay reads its clip afresh, frame by frame
    for sequence in dataset.sequences:
        try:
            load_clip(sequence, settings.max_frames)
            clips.add(sequence.name)
        except (ClipProblem, DinomaskError, OSError) as exc:
            out["problems"].append(f"{sequence.name}: {exc}; not replayed")
    for text in schedules:
        keyframes = KeyframeSettings.parse(text)
        per_sequence: dict[str, dict] = {}
        for sequence in dataset.sequences:
            if sequence.name in clips:
                try:
                    per_sequence[sequence.name] = replay_clip(load_clip(sequence, settings.max_frames),
                                                              segmenter_for(sequence, keyframes),
                                                              keyframes, settings)
                except (DinomaskError, OSError) as exc:  # a frame that cannot be read as it plays
                    problem = f"{sequence.name}: {exc}; not replayed"
                    if problem not in out["problems"]:
                        out["problems"].append(problem)
            if progress is not None:
                progress.update(1)
        means = {m: aggregate(m, (s[m] for s in per_sequence.values())) for m in LIVE_METRICS}
        out["schedules"][keyframes.describe()] = means | {"sequences": per_sequence}
    if settings.costs is not None:
        out["cost_model"] = describe_costs(settings.costs) + (
            f"; played {settings.machine_factor:g} times slower (--machine-factor)" if settings.machine_factor != 1 else "")
    return out


def describe_costs(costs: tuple[float, float]) -> str:
    """The simulated clock's model in words, for the report."""
    from dinomask.async_keys import KeyRateController

    return (f"simulated clock: a key costs {costs[0]:g} ms at the configured --tokens, times (its own patches / "
            f"those tokens) ** {KeyRateController.COST_EXPONENT:g} (a crop or a coarser key costs less); every frame "
            f"costs {costs[1]:g} ms of flow and carrying with flow at 120 px, plus a finer flow's measured extra "
            f"({FLOW_STEP_MS_AT_120:g} ms times the growth of the flow image's area); the rate controller sees these "
            "costs as it sees measured ones")


class Frames:
    """A clip's frames read on demand, the last :attr:`CACHE` kept: a long clip costs the memory of a
    few frames. ``load(item) -> array``; an item that is None reads as None (a frame without a mask)."""

    CACHE = 8

    def __init__(self, items: list, load):
        self.items, self.load = items, load
        self._cache: dict[int, np.ndarray] = {}
        self._keep = False

    def preload(self) -> None:
        """Read every frame now and keep them all (the wall clock's replay of a clip that fits)."""
        self._keep = True
        for index in range(len(self.items)):
            self[index]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self.items)
        if self.items[index] is None:
            return None
        if index not in self._cache:
            if len(self._cache) >= self.CACHE and not self._keep:
                del self._cache[next(iter(self._cache))]
            self._cache[index] = self.load(self.items[index])
        return self._cache[index]


class ObjectTruths:
    """One object's ground truth per frame (``labels[k] == id``; every object's for ``id`` None),
    read through a label-map :class:`Frames`; None where a frame has no mask."""

    def __init__(self, labels: Frames, object_id: int | None = None):
        self.labels, self.object_id = labels, object_id

    @property
    def items(self) -> list:
        return self.labels.items

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        ids = self.labels[index]
        if ids is None:
            return None
        return ids > 0 if self.object_id is None else ids == self.object_id


@dataclass
class Clip:
    """A sequence as a camera delivers it, read as it plays (see :class:`Frames`).

    Attributes:
        images: ``H x W x 3`` uint8 RGB per frame.
        truths: ``H x W`` bool per frame (every object), None where the frame has no mask.
        labels: ``H x W`` uint8 object ids per frame (None where no mask).
        first_scored: frames before this one (up to the reference frame) are played, not scored.
        objects: the object ids of the reference frame when there are several, else ``()``.
    """

    images: Frames
    truths: ObjectTruths
    labels: Frames
    first_scored: int
    objects: tuple[int, ...] = ()
    size: tuple[int, int] = (0, 0)

    def __iter__(self):  # images, truths, first_scored: as the clip was unpacked before it streamed
        return iter((self.images, self.truths, self.first_scored))

    @property
    def annotated(self) -> list[bool]:
        return [item is not None for item in self.truths.items]

    def object_truths(self) -> dict[int, ObjectTruths] | None:
        """``{id: that object's truths}`` with several objects, else None."""
        return {i: ObjectTruths(self.labels, i) for i in self.objects} if len(self.objects) > 1 else None


def load_clip(sequence: LabelledSequence, max_frames: int | None = None) -> Clip:
    """A sequence as a camera delivers it (:class:`Clip`). Every frame of its timeline is an image;
    frames without a mask have truth None; frames up to and including the reference frame (its first
    annotated one) are not scored. Only the reference frame is read here (and every frame's size from
    its header); the rest are read as the replay plays them.

    Raises:
        ClipProblem: its first mask marks nothing, or its frames change size.
    """
    from PIL import Image

    from dinomask.evaluate.datasets import load_truth_labels
    from dinomask.preprocess import load_image

    played = sequence.played[:max_frames] if max_frames else sequence.played
    sizes = set()
    for image, _ in played:
        with Image.open(image) as header:
            sizes.add((header.height, header.width))
    if len(sizes) > 1:
        raise ClipProblem(f"its frames change size ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))}); a camera's do not")
    size = next(iter(sizes)) if sizes else None
    reference = next((i for i, (_, mask) in enumerate(played) if mask is not None), None)
    if reference is None:
        raise ClipProblem("no annotated frame")
    labels = Frames([mask for _, mask in played], lambda path: load_truth_labels(path, size))
    first = labels[reference]
    if not first.any():
        raise ClipProblem(f"its first mask ({played[reference][1].name}) marks no object pixel, so there is nothing to teach")
    ids = tuple(int(i) for i in np.unique(first) if i)
    images = Frames([image for image, _ in played], load_image)
    return Clip(images, ObjectTruths(labels), labels, reference + 1, ids if len(ids) > 1 else (), size or (0, 0))


#: On the wall clock, a clip whose decoded frames and masks fit this is read before the replay starts:
#: a camera delivers decoded frames, and reading JPEGs in the loop's process, and the oracle's mask
#: PNGs in the key worker, charged the loop and the keys for work a real run does not do (davis-live
#: on 2 cores: keys on 76% of frames instead of 90%, live J 0.83 instead of 0.85). A longer clip is
#: read as it plays.
WALL_CLOCK_PRELOAD_BYTES = 512 * 2**20


def replay_clip(clip: Clip, segmenter: Segmenter, keyframes: KeyframeSettings, settings: LiveEvalSettings) -> dict:
    """One clip (:func:`load_clip`) through one schedule: its live metrics and curves, scored as
    the replay runs (:class:`~dinomask.evaluate.live_scores.LiveScorer`: no shown mask is kept)."""
    from dinomask.evaluate.live_scores import LiveScorer

    if segmenter.config.keyframes.policy == keyframes.policy:  # the segmenter's own settings (flow side, tolerances)
        keyframes = segmenter.config.keyframes
    make = key_maker(segmenter, clip.truths if settings.oracle else None, clip.labels, clip.objects)
    scorer = LiveScorer(clip.truths, settings.fps, settings.realtime, clip.first_scored, clip.annotated,
                        clip.object_truths())
    segmenter.reset()
    if settings.costs is not None:
        keyed = replay_simulated(clip.images, segmenter, make, keyframes, settings, scorer)
    else:
        stage = (AsyncStage(segmenter, make, settings.key_budget, settings.fps if settings.realtime else None)
                 if keyframes.policy == "async"
                 else SyncStage(segmenter, make, keyframes))
        if len(clip.images) * clip.size[0] * clip.size[1] * 4 <= WALL_CLOCK_PRELOAD_BYTES:
            clip.images.preload()  # decoded before the clock starts, as a camera's are; and the oracle's truths,
            clip.labels.preload()  # which no real key reads from disk
        keyed = replay_wall_clock(clip.images, stage, settings, scorer, len(segmenter.object_names))
    return scorer.finish(keyed, make.keys)


def replay_sequence(sequence: LabelledSequence, segmenter: Segmenter, keyframes: KeyframeSettings,
                    settings: LiveEvalSettings) -> dict:
    """One sequence through one schedule (see :func:`load_clip` and :func:`replay_clip`)."""
    return replay_clip(load_clip(sequence, settings.max_frames), segmenter, keyframes, settings)


def plot_sequence(result: dict, sequence: str, path: Path, run: dict | None = None) -> Path:
    """Live J and latency over the clip's frames for each schedule (one PNG): the one-frame-late
    ceiling beside live J, a camera frame's budget beside the latency; with ``run``, the model,
    data and whether its weights are random under the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ceiling_drawn = False
    for name, figures in result["schedules"].items():
        if sequence not in figures["sequences"]:
            continue
        curves = figures["sequences"][sequence]["curves"]
        if curves.get("late_by_one_j") and not ceiling_drawn:  # the same for every schedule: drawn once
            top.plot(*zip(*curves["late_by_one_j"]), color="0.6", linestyle=":",
                     label="one frame late (the ground truth of the frame before: the best live J reads)")
            ceiling_drawn = True
        if curves["live_j"]:
            live_j = figures["sequences"][sequence]["live_j"]
            top.plot(*zip(*curves["live_j"]), marker="." if len(curves["live_j"]) < 3 else None,
                     label=f"{name} (live J {'-' if live_j is None else format(live_j, '.3f')})")
        if curves["latency_ms"]:
            bottom.plot(*zip(*curves["latency_ms"]), marker=".", linestyle="-", label=name)
    fps = (run or {}).get("live", {}).get("fps")
    if fps:
        bottom.axhline(1000.0 / fps, color="0.4", linestyle="--", linewidth=1,
                       label=f"one camera frame ({1000.0 / fps:.0f} ms at {fps:g} FPS)")
    title = f"eval live: {sequence}"
    if run is not None:
        from dinomask.plots import plot_caption

        title += "\n" + plot_caption(run)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a clip too short to score has no curve: no empty legend
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "too short to measure", transform=ax.transAxes, ha="center", va="center", color="grey")
    low, high = top.get_xlim()
    if high - low < 1:  # a single frame: a window around it, not an identical low and high limit
        top.set_xlim(low - 1, high + 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
