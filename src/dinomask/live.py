"""``dinomask live``: a segmenter on a camera, stream or video, shown in a window or recorded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dinomask.composite import Background, composite
from dinomask.errors import DinomaskError
from dinomask.files import AtomicVideoWriter
from dinomask.segmenter import Segmenter
from dinomask.video import Frame, FrameSource, LiveStats, SourceSettings, StageMeter, parse_source, run_live

WINDOW = "dinomask"


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
        overwrite: allow replacing an existing ``output``.
    """

    source: str = "0"
    output: Path | None = None
    window: bool = True
    max_frames: int | None = None
    retry_seconds: float = 10.0
    background: str = "black"
    overwrite: bool = False


def check_window_support() -> None:
    """Raise a clear error when this OpenCV build cannot open windows (headless wheels)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise DinomaskError(
            "this OpenCV build has no window support (opencv-*-headless). Record instead with "
            "--output result.mp4 --no-window, or install opencv-contrib-python (with GUI)."
        ) from None


def _draw_fps(image: np.ndarray, meter: StageMeter, keyframes: str = "") -> np.ndarray:
    summary = meter.summary()
    text = f"{summary['fps']:.1f} FPS  backbone {summary.get('backbone_ms', 0.0):.0f} ms  {keyframes}".rstrip()
    out = np.ascontiguousarray(image[:, :, :3])
    cv2.putText(out, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(out, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def segment_frames(segmenter: Segmenter):
    """The live loop's model stage: segment a frame and record preprocess/backbone/postprocess times."""

    def process(frame: Frame, meter: StageMeter):
        result = segmenter.predict(frame.image)
        for stage, seconds in segmenter.last_timings.items():
            meter.add(stage, seconds)
        return result

    return process


def run_live_command(segmenter: Segmenter, options: LiveOptions) -> LiveStats:
    """Run the live loop with the options' source and outputs; returns its statistics."""
    background = Background.parse(options.background)
    if background.kind == "transparent":
        raise DinomaskError("live output cannot be transparent; use black, white, blur or a colour")
    if options.output is not None and options.output.exists() and not options.overwrite:
        raise DinomaskError(f"{options.output} exists; pass --overwrite to replace it")
    source = FrameSource(parse_source(options.source), SourceSettings(retry_seconds=options.retry_seconds))
    segmenter.reset()
    state: dict = {}

    process = segment_frames(segmenter)

    def output(frame: Frame, result, meter: StageMeter) -> bool:
        state["grid"] = result.grid
        shown = _draw_fps(composite(frame.image, result.mask, background), meter, _keyframe_text(segmenter))
        if options.output is not None:
            if "writer" not in state:
                state["writer"] = AtomicVideoWriter(options.output, source.fps, (shown.shape[1], shown.shape[0]))
            state["writer"].write(shown)
        if options.window:
            cv2.imshow(WINDOW, shown[:, :, ::-1])
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                return False
        return True

    try:
        stats = run_live(source, process, output, max_frames=options.max_frames)
    finally:
        if "writer" in state:
            state["writer"].close(keep=True)  # a recording cut short by a lost camera is still worth keeping
        if options.window:
            cv2.destroyAllWindows()
    counts = segmenter.keyframe_stats
    return dataclasses.replace(
        stats, grid=state.get("grid"), keyframes=segmenter.config.keyframes.describe(),
        keyframe_fraction=counts["keyframes"] / counts["frames"] if counts["frames"] else 1.0,
    )


def _keyframe_text(segmenter: Segmenter) -> str:
    counts = segmenter.keyframe_stats
    if not segmenter.config.keyframes.enabled or not counts["frames"]:
        return ""
    return f"keyframes {segmenter.config.keyframes.describe()} {counts['keyframes'] / counts['frames']:.0%}"
