"""The live loop's model stage that keeps up with a camera (``--keyframes async``).

The backbone runs in its own worker thread on the newest frame it is offered; every camera
frame the loop takes gets a flow step (:class:`~dinomask.keyframes.FlowCarrier`), and the
mask shown is the current carried score. When the worker's result for frame ``k`` lands at
frame ``n``, it is carried forward through the flows of frames ``k+1 .. n`` before it is
used, so a key is never shown ``n - k`` frames late and the loop never waits for it.

Measured with ``dinomask eval live`` (see ``docs/speed.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from dinomask.errors import DinomaskError, RunCancelled
from dinomask.keyframes import FlowCarrier
from dinomask.segmenter import SEARCH_TOKENS, SegmentationResult, Segmenter
from dinomask.video import Frame, LatestSlot, StageMeter

#: ``(image, frame index) -> maps`` in :meth:`Segmenter.carry_maps` order: what a keyframe gives.
KeyMaker = Callable[[np.ndarray, int], list]
_log = logging.getLogger("dinomask")


def segmenter_keys(segmenter: Segmenter) -> KeyMaker:
    """The segmenter's own keyframes: backbone, decision, and the maps flow carries."""

    def make(image: np.ndarray, index: int) -> list:
        return segmenter.carry_maps(segmenter.key(image))

    return make


#: The default key budget in camera frames: a key should land within one frame of the frame it
#: was made for (a later one is carried through more flows, which lose a moving object); the
#: controller's floor (:attr:`KeyRateController.MIN_TOKENS`: a 405-token whole frame) bounds how coarse keys
#: get to meet it. Measured with ``eval live --oracle --costs 262,22`` on davis-motion and davis-live
#: (docs/speed.md): live J 0.48 -> 0.51 and 0.80 -> 0.82 against 2 frames' budget.
KEY_BUDGET_FRAMES = 1.0


def default_key_budget_ms(fps: float) -> float:
    """The rate controller's default target for one key on a ``fps`` camera (:data:`KEY_BUDGET_FRAMES`)."""
    return KEY_BUDGET_FRAMES * 1000.0 / fps


class FlowSizer:
    """Sizes the loop's flow to the machine it runs on, as :class:`KeyRateController` sizes keys.

    Every camera frame pays a flow step. When the measured step (a running mean) passes
    :data:`SHARE` of a camera frame, the flow side shrinks by a fifth (never below
    :data:`MIN_SIDE`); when the step at the next size up would stay under 80% of that share, it
    grows back, never above the configured side. Only steps that ran flow are fed to it: the first
    frame at a new size runs none (its maps are resized), and counted it made the size just left
    look cheap enough to grow back to, so the loop swung between two sizes every ten frames or so,
    each swing a frame without motion and a key refused. The reason for the share: the loop's thread also
    composites, draws and hands each frame on, and on a 2-core machine the key worker takes the
    other core, so a flow step above 40% of a frame leaves it no room (at 160 px: 8.7 ms on the
    AVX-512 build machine, ``benchmarks/flow_cost.py``; 13.6 ms on an AVX2 laptop, as issue 33
    reports it, with 66-96 ms beside a busy core: 21%, 33% and far past a 24 FPS frame). A step
    costs about its area (side squared).

    Args:
        max_side: the configured flow side (px).
        fps: the camera's rate.
    """

    SHARE = 0.4
    MIN_SIDE = 96

    def __init__(self, max_side: int, fps: float):
        self.max_side, self.side = max_side, max_side
        self.budget_ms = self.SHARE * 1000.0 / fps
        self._mean_ms: float | None = None

    def update(self, spent_ms: float) -> int | None:
        """One flow step cost ``spent_ms``; returns the new side when it changed, else None."""
        self._mean_ms = spent_ms if self._mean_ms is None else 0.8 * self._mean_ms + 0.2 * spent_ms
        side = self.side
        if self._mean_ms > self.budget_ms and side > self.MIN_SIDE:
            side = max(self.MIN_SIDE, int(round(side * 0.8 / 8)) * 8)
        elif side < self.max_side:
            bigger = min(self.max_side, int(round(side * 1.25 / 8)) * 8)
            if self._mean_ms * (bigger / side) ** 2 < 0.8 * self.budget_ms:
                side = bigger
        if side == self.side:
            return None
        self.side, self._mean_ms = side, None  # measure the new size afresh
        return side


class KeyRateController:
    """Moves a segmenter's token budget so that one key costs about ``budget_ms``.

    Each key's cost is fed to :meth:`update` (measured on the wall clock, or the simulated clock's
    model in ``eval live``). When the running mean passes the budget by a quarter, the token budget
    is lowered in proportion, and raised again when keys get cheap, never above the configured one
    nor below :data:`MIN_TOKENS`. A key's cost grows a little faster than its token count: the
    exponent :data:`COST_EXPONENT` was measured with ``benchmarks/backbone_speed.py``. A key carried
    over fewer frames is worth more than a finer grid: see ``docs/speed.md``.

    Args:
        segmenter: whose ``config.geometry.tokens`` is moved (a fixed ``resolution`` is left alone).
        budget_ms: the target, or None to keep the token budget fixed.
        lock: held while the segmenter's config changes (the key worker's).
    """

    #: The smallest token budget: a 15 x 27 grid at 854 x 480, 32 source pixels a patch (400 gives
    #: 15 x 26, 32.8 px).
    MIN_TOKENS = SEARCH_TOKENS
    #: Cost of a key ~ tokens ** COST_EXPONENT (ViT-S/14, 400 to 2,000 tokens, 2-core CPU).
    COST_EXPONENT = 1.1

    def __init__(self, segmenter: Segmenter, budget_ms: float | None, lock: threading.Lock | None = None):
        self.segmenter, self.budget_ms = segmenter, budget_ms
        self.max_tokens = segmenter.config.geometry.tokens
        self.lock = lock or threading.Lock()
        self._mean_ms: float | None = None

    def update(self, spent_ms: float) -> int | None:
        """One key cost ``spent_ms``; returns the new token budget when it changed, else None."""
        if self.budget_ms is None or self.segmenter.config.geometry.resolution is not None:
            return None
        self._mean_ms = spent_ms if self._mean_ms is None else 0.6 * self._mean_ms + 0.4 * spent_ms
        geometry = self.segmenter.config.geometry
        ratio = self.budget_ms / max(self._mean_ms, 1e-6)
        if 0.8 <= ratio <= 1.25:
            return None
        tokens = int(min(self.max_tokens, max(self.MIN_TOKENS, geometry.tokens * ratio ** (1 / self.COST_EXPONENT))))
        if abs(tokens - geometry.tokens) < 50:
            return None
        with self.lock:
            self.segmenter.config = self.segmenter.config.replace(geometry=replace(geometry, tokens=tokens))
        self._mean_ms = None  # measure the new budget afresh
        return tokens


class AsyncKeyStage:
    """``process(frame, meter) -> SegmentationResult`` for :func:`~dinomask.video.run_live`, with
    the backbone in a worker thread. Call :meth:`close` when the loop ends.

    Args:
        segmenter: gives the keys (unless ``key_maker``) and turns carried maps into results.
        key_maker: replaces the segmenter's keys (``eval live --oracle`` uses the ground truth).
        history: frames of flow kept to carry a late key forward (older keys are dropped).
        key_budget_ms: the rate controller's target for one key (:class:`KeyRateController`),
            or None for a fixed token budget. A key's cost is measured as it runs (beside the
            flow thread, on this machine).

    Attributes:
        lock: held while a key is computed; hold it to change the segmenter's reference.
        stats: frames, keys started, keys landed, keys dropped (too old to carry forward), keys
            that failed (retried on the next frame; :data:`MAX_KEY_FAILURES` in a row end the run).
    """

    def __init__(self, segmenter: Segmenter, key_maker: KeyMaker | None = None, history: int = 32,
                 key_budget_ms: float | None = None, fps: float | None = None):
        self.segmenter = segmenter
        self.carrier = FlowCarrier.for_settings(segmenter.config.keyframes, history)
        #: sizes the flow to this machine on a camera's clock (``fps``); None: the configured side
        self.flow_sizer = FlowSizer(self.carrier.flow_side, fps) if fps else None
        self.lock = threading.Lock()
        self.controller = KeyRateController(segmenter, key_budget_ms, self.lock)
        self.key_maker = key_maker or segmenter_keys(segmenter)
        self.stats = {"frames": 0, "keys_started": 0, "keys_landed": 0, "keys_dropped": 0, "keys_cancelled": 0,
                      "key_failures": 0, "tokens": segmenter.config.geometry.tokens, "flow_side": self.carrier.flow_side}
        self._keying: int | None = None  # the frame the worker's key is for, while it runs
        self._keying_lock = threading.Lock()  # held to change _keying, and by cancel_stale_key
        self._failures_in_row = 0
        self._error: tuple[int, BaseException] | None = None
        #: frames the backbone ran on (the last 1,000)
        self.keyed: set[int] = set()
        self._offered, self._landed = LatestSlot(), LatestSlot()
        self._stop = threading.Event()
        self._key_ms: list[float] = []
        self._worker = threading.Thread(target=self._work, name="dinomask-keys", daemon=True)
        self._worker.start()

    def _make(self, image: np.ndarray, index: int) -> list:
        with self.lock:
            return self.key_maker(image, index)

    #: Keys failing in a row before the run ends with the last one's error (a passing failure,
    #: such as one odd frame, is retried on the next frame the worker takes).
    MAX_KEY_FAILURES = 3

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._offered.take(timeout=0.2)
            if item is None:
                continue
            index, image = item
            self.stats["keys_started"] += 1
            if len(self.keyed) > 1000:
                self.keyed.clear()
            self.keyed.add(index)
            started = time.perf_counter()
            with self._keying_lock:
                self._keying = index
            try:
                maps = self._make(image, index)
            except RunCancelled:  # its frame was before a scene cut (see cancel_stale_key)
                self.stats["keys_cancelled"] += 1
                continue
            except Exception as exc:  # handed to the loop, which ends the run when keys keep failing
                self.stats["key_failures"] += 1
                self._failures_in_row += 1
                self._error = (index, exc)
                _log.warning("key on frame %d failed (%d in a row): %s: %s", index, self._failures_in_row,
                             exc.__class__.__name__, exc)
                continue
            finally:
                with self._keying_lock:
                    self._keying = None
            self._failures_in_row = 0
            spent = (time.perf_counter() - started) * 1e3
            self._key_ms.append(spent)
            self._landed.put((index, maps))
            self._control(spent)

    def _control(self, spent_ms: float) -> None:
        tokens = self.controller.update(spent_ms)
        if tokens is not None:
            self.stats["tokens"] = tokens

    def _check_worker(self) -> None:
        """End the run when keys keep failing, or when the worker is gone: the loop would otherwise
        carry the last key by flow for ever, and exit 0."""
        if self._failures_in_row >= self.MAX_KEY_FAILURES and self._error is not None:
            index, exc = self._error
            raise DinomaskError(f"{self._failures_in_row} keys in a row failed in the key worker (the last on frame "
                                f"{index}): {exc.__class__.__name__}: {exc}") from exc
        if not self._worker.is_alive() and not self._stop.is_set():
            raise DinomaskError("the key worker stopped; the run cannot go on without keys")

    def __call__(self, frame: Frame, meter: StageMeter | None = None) -> SegmentationResult:
        self._check_worker()
        started = time.perf_counter()
        early = self.carrier.maps is not None and not self.segmenter.key_follows_mask
        if early:  # a key that needs nothing of this frame's mask starts beside its flow step
            self._offered.put((frame.index, frame.image))
        maps = self.carrier.step(frame.index, frame.image)  # after a scene cut: maps that show nothing
        if self.carrier.cut_at == frame.index:
            self.segmenter.scene_cut()
            self.cancel_stale_key(frame.index)
        if self.flow_sizer is not None and self.carrier.passes:  # a step that ran no flow says nothing of its cost
            side = self.flow_sizer.update((time.perf_counter() - started) * 1e3)
            if side is not None:
                self.carrier.resize(side)
                self.stats["flow_side"] = side
        keyframe, keyed_here = False, False
        landed = self._landed.take(timeout=0)
        if landed is not None:
            if self.carrier.land(*landed):
                self.stats["keys_landed"] += 1
                keyframe = landed[0] == frame.index
            else:
                self.stats["keys_dropped"] += 1
            maps = self.carrier.maps
        if maps is None:  # the first frame (or after a reset): one key in this thread, then never again
            self.keyed.add(frame.index)
            first = time.perf_counter()
            self.carrier.land(frame.index, self._make(frame.image, frame.index))
            self._control((time.perf_counter() - first) * 1e3)  # the controller starts from this machine's cost
            self.stats["keys_started"] += 1
            self.stats["keys_landed"] += 1
            maps, keyframe, keyed_here = self.carrier.maps, True, True
        result = self.segmenter.carried_result(frame.image, maps, keyframe=keyframe)
        self.segmenter.follow(result.mask, result.labels)  # with a region of interest, the next key's crop is around this frame's mask
        if not (early or keyed_here):  # a crop key: offered once the mask it crops around is made
            self._offered.put((frame.index, frame.image))  # the worker takes the newest when it is free
        self.stats["frames"] += 1
        if meter is not None:
            meter.add("flow", time.perf_counter() - started)
            while self._key_ms:
                meter.add("key", self._key_ms.pop() / 1e3)
        return result

    def cancel_stale_key(self, cut_at: int) -> bool:
        """A scene cut at frame ``cut_at``: a key still running for an earlier frame could only be
        refused when it lands (:meth:`FlowCarrier.land`), and the worker would take the new scene's
        first frame after it, so it is stopped where the backbone can stop a run (ONNX Runtime; a
        torch forward runs to its end). A return to a scene is then found one key sooner (``eval
        live --oracle`` on cut scenarios: see docs/speed.md). Returns whether a run was stopped.

        The worker's frame is read and the run stopped under one lock, which the worker also needs to
        start its next key: the run stopped is the old scene's, never the cut frame's that follows it."""
        cancel = getattr(self.segmenter.backbone, "cancel", None)
        with self._keying_lock:  # the worker cannot move on to the new scene's key while this looks
            keying = self._keying
            if keying is None or keying >= cut_at or cancel is None:
                return False
            return bool(cancel())

    def close(self) -> None:
        """Stop the worker (after the key it is computing)."""
        self._stop.set()
        self._offered.close()
        self._worker.join(timeout=30)
