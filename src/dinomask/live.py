"""``dinomask live``: a segmenter on a camera, stream or video, shown in a window or recorded,
and taught while it runs (keys in the window, or lines on stdin without one)::

    a  add this frame, with its current mask, as another view of the object
    +  threshold up (a fixed cosine, from the current frame's)     -  threshold down
    u  undo the last view        r  reset to the original reference
    s  save the taught reference (--save-ref; also written on exit)        q  quit
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from dinomask.composite import Background, composite
from dinomask.errors import DinomaskError, InvalidReferenceError
from dinomask.files import AtomicVideoWriter
from dinomask.reference import reference_file
from dinomask.segmenter import Segmenter
from dinomask.teach import COMMANDS, THRESHOLD_STEP, Teacher
from dinomask.video import Frame, FrameSource, LiveStats, SourceSettings, StageMeter, parse_source, run_live

WINDOW = "dinomask"
_log = logging.getLogger("dinomask")


@dataclass(frozen=True)
class LiveOptions:
    """Settings of one live run.

    Attributes:
        source: camera index as text (``"0"``), stream URL or video path.
        output: record the result to this ``.mp4`` instead of (or besides) a window.
        window: show an OpenCV window (q or Esc quits).
        max_frames: stop after this many processed frames.
        retry_seconds: how long to retry a camera or stream that disconnects.
        background: what replaces the background.
        overwrite: allow replacing an existing ``output`` or ``save_ref``.
        save_ref: write the taught reference here on ``s`` and on exit.
        realtime: deliver a file or folder on its own clock, as a camera would (see
            :class:`~dinomask.video.SourceSettings`); cameras and streams always are.
        fps: the rate of a folder of frames, or one that replaces a file's own.
        topic: a ROS bag source's image topic.
        rerun: log every shown frame to Rerun: ``spawn``, ``FILE.rrd`` or ``HOST:PORT``
            (:class:`~dinomask.rerun_view.RerunView`).
        rerun_images: ``jpeg`` or ``raw``: how frames are logged to Rerun.
        key_budget_ms: ``--keyframes async``: the target cost of one key for the rate
            controller (:class:`~dinomask.async_keys.AsyncKeyStage`); None: one camera frame;
            0: a fixed token budget.
        stats_every: print one JSON line of statistics to stdout every this many seconds
            (frames shown, FPS, capture-to-output latency p50/p95, keyframe share):
            a log to watch a run that lasts a shift; the last, partial interval is printed
            when the run ends; 0 for one line at the end only; None for none.
    """

    source: str = "0"
    output: Path | None = None
    window: bool = True
    max_frames: int | None = None
    retry_seconds: float = 10.0
    background: str = "black"
    overwrite: bool = False
    save_ref: Path | None = None
    realtime: bool = False
    fps: float | None = None
    key_budget_ms: float | None = None
    topic: str | None = None
    rerun: str | None = None
    rerun_images: str = "jpeg"
    stats_every: float | None = None


def check_window_support() -> None:
    """Raise a clear error when this OpenCV build cannot open windows (headless wheels)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise DinomaskError(
            "this OpenCV build has no window support (opencv-*-headless). Record instead with "
            "--output result.mp4 --no-window, or install opencv-contrib-python (with GUI)."
        ) from None


KEYS_HELP = "a add view  +/- threshold  u undo  r reset  s save  q quit"


def _draw_fps(image: np.ndarray, meter: StageMeter, keyframes: str = "", taught: str = "") -> np.ndarray:
    summary = meter.summary()
    text = f"{summary['fps']:.1f} FPS  backbone {summary.get('backbone_ms', 0.0):.0f} ms  {keyframes}".rstrip()
    out = np.ascontiguousarray(image[:, :, :3])
    for row, line in enumerate(filter(None, (text, taught))):
        y = 28 + 26 * row
        cv2.putText(out, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 if row else 0.8, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 if row else 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return out


class LiveTeaching:
    """The live commands (:data:`~dinomask.teach.COMMANDS`) applied to a segmenter between frames.

    Commands arrive on a queue from any thread (window keys, stdin lines); the model stage
    calls :meth:`apply` after each frame, with that frame and its result, so ``a`` adds
    exactly the frame the user saw. With several references, the first is taught.
    """

    def __init__(self, segmenter: Segmenter, save_ref: Path | None = None, say=None):
        self.segmenter = segmenter
        self.others = list(segmenter.references[1:])
        self.teacher = Teacher(segmenter.backbone, segmenter.references[0],
                               on_change=lambda reference: segmenter.set_reference([reference, *self.others]))
        self.original_threshold = segmenter.config.threshold
        self.save_ref = save_ref
        self.commands: queue.Queue[str] = queue.Queue()
        self.say = say or (lambda text: print(f"live: {text}", file=sys.stderr, flush=True))
        self.quit = threading.Event()

    def feed(self, lines: Iterable[str]) -> threading.Thread:
        """Read commands from ``lines`` (e.g. ``sys.stdin``) on a daemon thread."""
        def read() -> None:
            try:
                for line in lines:
                    if line.strip():
                        self.commands.put(line.strip()[0])
            except (OSError, ValueError):  # stdin closed or unreadable (a test runner's)
                return

        thread = threading.Thread(target=read, name="dinomask-commands", daemon=True)
        thread.start()
        return thread

    def status(self) -> str:
        taught = self.teacher.current.teaching
        return f"views +{len(taught.views)}  thr {self.segmenter.config.threshold}  |  {KEYS_HELP}"

    @property
    def pending(self) -> bool:
        """True when a command waits: only then must the loop hold the key worker's lock."""
        return not self.commands.empty()

    def apply(self, image: np.ndarray, result) -> None:
        """Run every waiting command against this frame and its result."""
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._run(command, image, result)
            except InvalidReferenceError as exc:
                self.say(f"{COMMANDS.get(command, command)} refused: {exc}")

    def _run(self, command: str, image: np.ndarray, result) -> None:
        if command == "a":
            self.teacher.add_view(image, result.mask)
            self.say(f"added a view of {image.shape[1]}x{image.shape[0]}: {self.teacher.current.teaching.describe()}")
        elif command in "+-":
            base = result.threshold if result.threshold is not None else 0.5
            value = float(np.clip(base + (THRESHOLD_STEP if command == "+" else -THRESHOLD_STEP), -0.95, 0.95))
            self.segmenter.config = self.segmenter.config.replace(threshold=f"{value:.2f}")
            self.say(f"threshold {value:.2f}")
        elif command == "u":
            self.teacher.undo()
            self.say(f"undone: {self.teacher.current.teaching.describe()}")
        elif command == "r":
            self.teacher.reset()
            self.segmenter.config = self.segmenter.config.replace(threshold=self.original_threshold)
            self.say("reset to the original reference and threshold")
        elif command == "s":
            self.save()
        elif command == "q":
            self.quit.set()
        else:
            self.say(f"unknown command {command!r}; keys: {KEYS_HELP}")

    def save(self) -> Path | None:
        if self.save_ref is None:
            self.say("nothing saved: start live with --save-ref taught.npz to keep what it was taught")
            return None
        path = self.teacher.current.save(self.save_ref, overwrite=True)
        self.say(f"saved {path}: {self.teacher.current.teaching.describe()}")
        return path


def segment_frames(segmenter: Segmenter):
    """The live loop's model stage: segment a frame and record preprocess/backbone/postprocess times."""

    def process(frame: Frame, meter: StageMeter):
        result = segmenter.predict(frame.image)
        for stage, seconds in segmenter.last_timings.items():
            meter.add(stage, seconds)
        return result

    return process


def run_live_command(segmenter: Segmenter, options: LiveOptions, commands: Iterable[str] | None = None) -> LiveStats:
    """Run the live loop with the options' source and outputs; returns its statistics.

    Args:
        commands: live commands to read (one per line); default: the window's keys, or
            ``sys.stdin`` when there is no window.
    """
    background = Background.parse(options.background)
    if background.kind == "transparent":
        raise DinomaskError("live output cannot be transparent; use black, white, blur or a colour")
    save_ref = None if options.save_ref is None else reference_file(options.save_ref)
    for path in (options.output, save_ref):
        if path is not None and path.exists() and not options.overwrite:
            raise DinomaskError(f"{path} exists; pass --overwrite to replace it")
    source = FrameSource(parse_source(options.source), SourceSettings(
        retry_seconds=options.retry_seconds, realtime=options.realtime, fps=options.fps, topic=options.topic))
    segmenter.reset()
    teaching = LiveTeaching(segmenter, save_ref)
    if commands is not None:
        teaching.feed(commands)
    elif not options.window:
        teaching.feed(sys.stdin)
    state: dict = {}
    stop = threading.Event()
    stage = None
    if segmenter.config.keyframes.policy == "async" and source.realtime:  # the camera does not wait
        from dinomask.async_keys import AsyncKeyStage, default_key_budget_ms

        budget = options.key_budget_ms if options.key_budget_ms is not None else default_key_budget_ms(source.fps)
        stage = AsyncKeyStage(segmenter, key_budget_ms=budget or None, fps=source.fps)
    segment = stage if stage is not None else segment_frames(segmenter)

    def process(frame: Frame, meter: StageMeter):
        result = segment(frame, meter)
        if result.refine_skipped and not state.get("said_unrefined"):
            state["said_unrefined"] = True  # once a run: the unrefined mask is shown from here on such frames
            _log.warning("frame %d: %s; its unrefined mask is shown", frame.index, result.refine_skipped)
        if stage is not None:
            if teaching.pending:  # a key in the worker must not see the reference change under it; taking
                with stage.lock:  # its lock on every frame made the loop wait for every key (6 FPS, keys on 100%)
                    teaching.apply(frame.image, result)
        else:
            teaching.apply(frame.image, result)  # after the frame: "a" adds what the user saw
        if teaching.quit.is_set():
            stop.set()
        return result

    def key_counts() -> dict:
        if stage is not None:
            return {"frames": stage.stats["frames"], "keyframes": stage.stats["keys_started"],
                    "key_tokens": segmenter.config.geometry.tokens, "key_failures": stage.stats["key_failures"],
                    "keys_cancelled": stage.stats["keys_cancelled"], "flow_side": stage.stats["flow_side"]}
        return segmenter.keyframe_stats

    report = (IntervalReport(options.stats_every, key_counts, source.fps if source.realtime else None)
              if options.stats_every is not None else None)
    view = None
    if options.rerun is not None:
        from dinomask.rerun_view import RerunView

        view = RerunView(options.rerun, segmenter.object_names, name=f"live {options.source}", images=options.rerun_images,
                         random_weights=getattr(segmenter.backbone, "random_weights", None))

    def output(frame: Frame, result, meter: StageMeter) -> bool:
        state["grid"] = result.grid
        if view is not None:
            view.log(frame.index, frame.image, result, frame.capture_time, meter.fps,
                     (time.monotonic() - frame.captured_at) * 1e3)
        if report is not None:
            report.add(frame)
        shown = _draw_fps(composite(frame.image, result.mask, background), meter, _keyframe_text(segmenter),
                          teaching.status())
        if options.output is not None:
            if "writer" not in state:
                state["writer"] = AtomicVideoWriter(options.output, source.fps, (shown.shape[1], shown.shape[0]))
            size = state["writer"].size
            if (shown.shape[1], shown.shape[0]) != size:  # a source whose frames change size: one recording, scaled
                shown = cv2.resize(shown, size, interpolation=cv2.INTER_AREA)
            state["writer"].write(shown)
        if options.window:
            cv2.imshow(WINDOW, shown[:, :, ::-1])
            key = cv2.waitKey(1) & 0xFF
            if key == 27:
                return False
            if chr(key) in COMMANDS:
                teaching.commands.put(chr(key))
        return True

    if options.window:
        cv2.setWindowTitle(WINDOW, f"dinomask  |  {KEYS_HELP}")
    try:
        stats = run_live(source, process, output, max_frames=options.max_frames, stop=stop)
    finally:
        if view is not None:
            view.close()
        if report is not None:
            report.finish()
        if stage is not None:
            stage.close()
        if "writer" in state:
            state["writer"].close(keep=True)  # a recording cut short by a lost camera is still worth keeping
        if options.window:
            cv2.destroyAllWindows()
        if save_ref is not None:
            teaching.save()
    skipped = getattr(source.capture, "skipped", 0)  # a bag's messages that did not decode
    if stats.frames_processed == 0 and skipped:
        raise DinomaskError(f"bag {options.source}: none of its {skipped} messages on topic {source.capture.reader.topic} "
                            "could be decoded (each is named above); nothing was shown")
    counts = key_counts()
    return dataclasses.replace(
        stats, grid=state.get("grid"), keyframes=segmenter.config.keyframes.describe(),
        keyframe_fraction=counts["keyframes"] / counts["frames"] if counts["frames"] else 1.0,
    )


class IntervalReport:
    """Statistics of a live run, one JSON line to stdout every ``seconds``: frames shown and FPS
    in the interval, capture-to-output latency p50/p95 (ms), the share of frames the backbone
    ran on so far, and with ``async`` the keys' token budget."""

    #: An interval whose shown FPS is below this share of the camera's rate is one the loop was behind in.
    BEHIND = 0.9

    def __init__(self, seconds: float, key_counts, camera_fps: float | None = None):
        self.seconds, self.key_counts, self.camera_fps = seconds, key_counts, camera_fps
        self.said_behind = False
        self.started = self.last = time.monotonic()
        self.latencies: list[float] = []
        self.shown = 0
        self.printed = 0

    def add(self, frame: Frame) -> None:
        now = time.monotonic()
        self.latencies.append((now - frame.captured_at) * 1e3)
        self.shown += 1
        if self.seconds > 0 and now - self.last >= self.seconds:
            self.flush(now)

    def finish(self) -> None:
        """The last, partial interval (a run shorter than ``seconds`` prints this line alone),
        marked ``"final": true``; nothing when no frame was shown since the last line."""
        if self.shown or not self.printed:
            self.flush(time.monotonic(), final=True)

    def flush(self, now: float, final: bool = False) -> None:
        counts = self.key_counts()
        latencies = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        line = {"t": round(now - self.started, 2), "shown": self.shown, "fps": round(self.shown / max(now - self.last, 1e-9), 2),
                "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1),
                "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1),
                "keyframe_share": round(counts["keyframes"] / counts["frames"], 3) if counts["frames"] else 1.0}
        if "key_tokens" in counts:  # async: the token budget the rate controller chose
            line["key_tokens"] = counts["key_tokens"]
        if "key_failures" in counts:
            line["key_failures"] = counts["key_failures"]
        if "keys_cancelled" in counts:  # async: keys stopped because the scene was cut under them
            line["keys_cancelled"] = counts["keys_cancelled"]
        if "flow_side" in counts:  # async: the flow side the loop sized to this machine
            line["flow_side"] = counts["flow_side"]
        if self.camera_fps and now - self.last >= 1.0:  # the loop is behind the camera: said, never queued
            line["behind"] = line["fps"] < self.BEHIND * self.camera_fps
            if line["behind"] and not self.said_behind:
                self.said_behind = True
                _log.warning("the loop is behind the camera (%.1f of %.1f FPS): the newest frame is shown and the "
                             "others are dropped, nothing queues; fewer --tokens or a lower --fps would keep up",
                             line["fps"], self.camera_fps)
        if final:
            line["final"] = True
        print(json.dumps(line), flush=True)
        self.printed += 1
        self.latencies, self.shown, self.last = [], 0, now


def _keyframe_text(segmenter: Segmenter) -> str:
    counts = segmenter.keyframe_stats
    if not segmenter.config.keyframes.enabled or not counts["frames"]:
        return ""
    return f"keyframes {segmenter.config.keyframes.describe()} {counts['keyframes'] / counts['frames']:.0%}"
