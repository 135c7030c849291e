"""Frame sources (camera, stream URL, video file), the FPS/latency meter and the live loop.

The live loop runs three stages concurrently so that none waits for another:

    capture thread  -> [latest frame slot] -> inference (caller's thread) -> [latest result slot] -> output thread

Each slot holds one item: a newer item replaces an older one that was not taken yet
(counted as dropped), so no queue grows and the output always shows the newest frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from dinomask.errors import SourceError

log = logging.getLogger("dinomask")


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        image: ``H x W x 3`` uint8 RGB.
        index: position in the source (0, 1, ...).
        timestamp: seconds; the video position for files, capture time for cameras.
        captured_at: ``time.monotonic()`` when it was read (capture-to-output latency starts here).
        capture_time: when it was taken, in seconds since the epoch: a bag message's header stamp,
            a camera's or stream's clock at capture; None for a file's frames.
    """

    image: np.ndarray
    index: int
    timestamp: float
    captured_at: float = field(default_factory=time.monotonic)
    capture_time: float | None = None


#: Frame rates a source may be given: 0.1 (a frame every 10 s, a time-lapse) to 1,000.
MIN_FPS, MAX_FPS = 0.1, 1000.0


@dataclass(frozen=True)
class SourceSettings:
    """How a frame source delivers and behaves when it fails.

    Attributes:
        retry_seconds: how long to keep trying to reopen a camera or stream that
            stopped delivering frames before giving up.
        retry_interval: pause between reopen attempts.
        realtime: deliver a file or a folder of frames on its own clock, as a camera would:
            frame ``i`` is ready ``i / fps`` seconds after the first, and the live loop takes
            the newest, dropping what it was too busy to take. Off: every frame, as fast as
            the loop goes (cameras and streams are always real time).
        fps: the rate of a folder of frames, or a rate that replaces a file's own.
        topic: a ROS bag's image topic (see :class:`~dinomask.bags.BagCapture`).
    """

    retry_seconds: float = 10.0
    retry_interval: float = 0.5
    realtime: bool = False
    fps: float | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and not MIN_FPS <= self.fps <= MAX_FPS:  # also refuses NaN
            raise ValueError(f"fps must be in {MIN_FPS}..{MAX_FPS} (a frame every 10 s at the slowest), got {self.fps}")


class SequenceCapture:
    """A sequence of frames read like a ``cv2.VideoCapture`` (the interface :class:`FrameSource` uses).

    Args:
        frames: BGR uint8 arrays, or anything ``load`` turns into one.
        fps: the rate the frames were taken at.
        load: item -> BGR array, or None to skip an unreadable item (default: the item itself).
    """

    def __init__(self, frames: Sequence, fps: float, load: Callable[[object], np.ndarray | None] | None = None):
        self.frames, self.fps, self.position = frames, fps, 0
        self._load = load or (lambda frame: frame)

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        """True when there is at least one frame."""
        return len(self.frames) > 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame as BGR uint8, or ``(False, None)`` after the last."""
        while self.position < len(self.frames):
            image = self._load(self.frames[self.position])
            self.position += 1
            if image is not None:
                return True, image
        return False, None

    def get(self, prop: int) -> float:
        """The rate, frame count or position (ms) as OpenCV's properties give them."""
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(len(self.frames))
        if prop == cv2.CAP_PROP_POS_MSEC:
            return max(0, self.position - 1) * 1000.0 / self.fps
        return 0.0

    def release(self) -> None:
        """Nothing to free; there for OpenCV's interface."""


class FolderCapture(SequenceCapture):
    """A folder of frame images (sorted by name, ``IMAGE_SUFFIXES``) read like a ``cv2.VideoCapture``;
    an unreadable file is skipped with a warning.

    Args:
        folder: the folder.
        fps: the rate the frames were taken at.
    """

    def __init__(self, folder: str | Path, fps: float):
        from dinomask.preprocess import IMAGE_SUFFIXES

        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"the folder {folder} holds no frames: expected image files "
                              f"({', '.join(IMAGE_SUFFIXES)}), read in the order of their names")
        super().__init__(paths, fps, self._imread)
        self.paths = paths

    @staticmethod
    def _imread(path: Path) -> np.ndarray | None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("skipped %s: not a readable image", path)
        return image


def parse_source(source: str) -> int | str:
    """``"0"`` -> camera 0; anything else (file path, rtsp/http URL) stays a string."""
    return int(source) if source.isdigit() else source


def is_live(source: int | str) -> bool:
    return isinstance(source, int) or "://" in str(source)


class FrameSource:
    """Frames from a camera index, a stream URL, a video file or a folder of frames, as RGB.

    A camera or stream that stops delivering is reopened for ``retry_seconds``; a file
    simply ends. With ``settings.realtime`` a file or folder is delivered on its own clock
    (see :class:`SourceSettings`). Iterating yields :class:`Frame` objects.

    Args:
        source: camera index, URL or path.
        settings: retry behaviour.
        open_capture: factory for the OpenCV capture (tests replace it).
    """

    def __init__(
        self,
        source: int | str,
        settings: SourceSettings = SourceSettings(),
        open_capture: Callable[[int | str], "cv2.VideoCapture"] | None = None,
    ):
        self.source = source
        self.settings = settings
        self._open = open_capture or self._open_bounded
        self._capture = self._open_or_raise()
        self.fps = settings.fps or float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.reconnects = 0

    def _open_bounded(self, source: int | str) -> "cv2.VideoCapture":
        """Open with OpenCV's own open and read timeouts set to ``retry_seconds`` (at least 1 s):
        its defaults (30 s each) would hold a dead stream far past what the user allowed."""
        from dinomask.bags import BagCapture, is_bag

        if isinstance(source, str) and is_bag(source):  # played on its own clock: its messages' log times
            return BagCapture(source, self.settings.topic)
        if self.settings.topic is not None:
            raise SourceError(f"--topic is for a ROS bag source; {source!r} is not a bag (a ROS 2 folder with "
                              "metadata.yaml, an .mcap or a ROS 1 .bag)")
        if isinstance(source, str) and Path(source).is_dir():
            return FolderCapture(source, self.settings.fps or 24.0)
        if not (isinstance(source, str) and "://" in source):
            return cv2.VideoCapture(source)
        ms = int(max(1.0, self.settings.retry_seconds) * 1000)
        return cv2.VideoCapture(source, cv2.CAP_ANY,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])

    def _open_or_raise(self):
        capture = self._open(self.source)
        if not capture.isOpened():
            what = f"camera {self.source}" if isinstance(self.source, int) else repr(self.source)
            raise SourceError(
                f"could not open {what}: expected a camera index, a stream URL or a readable video file"
            )
        return capture

    @property
    def capture(self):
        """The capture being read (an OpenCV capture, a folder's, or a bag's)."""
        return self._capture

    def _reconnect(self) -> bool:
        deadline = time.monotonic() + self.settings.retry_seconds
        log.warning("source %s stopped delivering frames; retrying for %.0f s", self.source, self.settings.retry_seconds)
        while time.monotonic() < deadline:
            self._capture.release()
            time.sleep(self.settings.retry_interval)
            capture = self._open(self.source)
            if capture.isOpened():
                ok, _ = capture.read()
                if ok:
                    self._capture = capture
                    self.reconnects += 1
                    log.warning("source %s is back", self.source)
                    return True
            capture.release()
        return False

    @property
    def realtime(self) -> bool:
        """Frames come on a clock (a camera, a stream, or a file or folder with ``realtime``):
        the live loop takes the newest and drops the rest, never queues."""
        return is_live(self.source) or self.settings.realtime

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        start = time.monotonic()
        live = is_live(self.source)
        paced = self.settings.realtime and not live
        try:
            while True:
                ok, bgr = self._capture.read()
                if not ok or bgr is None:
                    if not live:
                        return
                    if not self._reconnect():
                        raise SourceError(
                            f"source {self.source} disconnected and did not come back within "
                            f"{self.settings.retry_seconds:.0f} s; stopped after {index} frames"
                        )
                    continue
                if live:
                    stamp = time.monotonic() - start
                elif paced:  # the camera clock: frame i is ready i / fps after the first (a bag: at its log time)
                    own = getattr(self._capture, "position_s", None)
                    stamp = own if own is not None and self.settings.fps is None else index / self.fps
                    time.sleep(max(0.0, start + stamp - time.monotonic()))
                else:
                    stamp = float(self._capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0 or index / self.fps
                frame = np.ascontiguousarray(bgr[:, :, ::-1])
                last = getattr(self._capture, "last", None)  # a bag's message: its header stamp
                wall = last.stamp_s if last is not None else (time.time() if live else None)
                yield Frame(frame, index, stamp, captured_at=start + stamp if paced else time.monotonic(), capture_time=wall)
                index += 1
        finally:
            self._capture.release()


class LatestSlot:
    """A one-item mailbox: ``put`` replaces what was not taken yet (counted in ``dropped``)."""

    def __init__(self) -> None:
        self._item = None
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_empty(self, stop: threading.Event) -> None:
        """Block until the item was taken (or the slot closed, or ``stop`` is set)."""
        with self._cond:
            while self._item is not None and not self._closed and not stop.is_set():
                self._cond.wait(0.05)

    def take(self, timeout: float | None = None):
        """The newest item, or ``None`` once closed and empty (or on timeout)."""
        with self._cond:
            while self._item is None and not self._closed:
                if not self._cond.wait(timeout):
                    return None
            item, self._item = self._item, None
            self._cond.notify_all()
            return item


class StageMeter:
    """Rolling per-stage latencies (ms) and throughput over the last ``window`` frames.

    Thread-safe: the capture, model and output threads all write to it while the
    output thread reads it for the on-screen read-out.
    """

    def __init__(self, window: int = 120):
        self.window = window
        self.stages: dict[str, deque] = {}
        self._frame_times: deque = deque(maxlen=window + 1)
        self._lock = threading.Lock()
        self.frames = 0

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.stages.setdefault(stage, deque(maxlen=self.window)).append(seconds * 1000.0)

    def tick(self) -> None:
        with self._lock:
            self.frames += 1
            self._frame_times.append(time.perf_counter())

    @property
    def fps(self) -> float:
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def summary(self) -> dict[str, float]:
        """Mean ms per stage, plus ``fps``."""
        with self._lock:
            copies = {name: list(values) for name, values in self.stages.items()}
        out = {f"{name}_ms": float(np.mean(values)) for name, values in copies.items() if values}
        out["fps"] = self.fps
        return out


@dataclass(frozen=True)
class LiveStats:
    """What a finished live run reports."""

    frames_captured: int
    frames_processed: int
    frames_dropped: int
    frames_output: int
    seconds: float
    fps: float
    stage_ms: dict[str, float]
    reconnects: int
    #: filled in by ``dinomask live``: the patch grid it ran, its keyframe policy, and the
    #: fraction of processed frames on which the backbone ran
    grid: tuple[int, int] | None = None
    keyframes: str = "off"
    keyframe_fraction: float = 1.0


def run_live(
    source: FrameSource,
    process: Callable[[Frame, StageMeter], object],
    output: Callable[[Frame, object, StageMeter], bool],
    *,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
) -> LiveStats:
    """Run capture, processing and output concurrently until the source ends or ``stop``.

    Args:
        source: where frames come from (runs in its own thread).
        process: (frame, meter) -> result; runs in this thread (the model's). It may
            add its own sub-stages to the meter.
        output: (frame, result, meter) -> keep going?; runs in its own thread. Return
            False to stop (e.g. the user pressed q).
        max_frames: stop after this many processed frames.
        stop: set it from elsewhere to stop.

    A camera or stream is read as fast as it delivers and the newest frame wins; so is a file
    or folder delivered in real time (``SourceSettings.realtime``). Otherwise a video file
    is read one frame ahead of processing (no frame dropped, no decoding wasted on frames
    that would be dropped), so a file runs as fast as the model.

    Raises:
        SourceError: the source was lost for good (after its retries).
    """
    stop = stop or threading.Event()
    backpressure = not source.realtime
    frames_in, results_out = LatestSlot(), LatestSlot()
    meter = StageMeter()
    errors: list[BaseException] = []
    counts = {"captured": 0, "output": 0}

    def capture() -> None:
        try:
            last = time.perf_counter()
            for frame in source:
                now = time.perf_counter()
                meter.add("capture", now - last)
                counts["captured"] += 1
                if backpressure:
                    frames_in.wait_empty(stop)
                    if stop.is_set():  # the loop ended (max frames, q): this frame was never due, not dropped
                        break
                frames_in.put(frame)
                last = time.perf_counter()
                if stop.is_set():
                    break
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
        finally:
            frames_in.close()

    def emit() -> None:
        try:
            while True:
                item = results_out.take()
                if item is None:
                    return
                frame, result = item
                start = time.perf_counter()
                keep_going = output(frame, result, meter)
                meter.add("output", time.perf_counter() - start)
                counts["output"] += 1
                if not keep_going:
                    stop.set()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    capture_thread = threading.Thread(target=capture, name="dinomask-capture", daemon=True)
    output_thread = threading.Thread(target=emit, name="dinomask-output", daemon=True)
    started = time.perf_counter()
    capture_thread.start()
    output_thread.start()
    processed = 0
    try:
        while not stop.is_set():
            frame = frames_in.take(timeout=0.5)
            if frame is None:
                if not capture_thread.is_alive():
                    break
                continue
            result = process(frame, meter)
            results_out.put((frame, result))
            meter.tick()
            processed += 1
            if max_frames is not None and processed >= max_frames:
                break
    finally:
        stop.set()
        results_out.close()
        output_thread.join()
        capture_thread.join(timeout=5.0)
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    summary = meter.summary()
    return LiveStats(
        frames_captured=counts["captured"],
        frames_processed=processed,
        frames_dropped=frames_in.dropped + results_out.dropped,
        frames_output=counts["output"],
        seconds=elapsed,
        fps=processed / elapsed if elapsed > 0 else 0.0,
        stage_ms={k: v for k, v in summary.items() if k.endswith("_ms")},
        reconnects=source.reconnects,
    )
