"""Batch background removal of images, folders and videos, with a progress bar and a report.

Video frames keep their order; a video written as PNG frames (transparent background)
also gets ``timestamps.json`` (frame index, file, timestamp in seconds) and ``.complete``.

One failed input never stops the batch: it is recorded with its reason and the batch
goes on. Outputs are written atomically and existing outputs are skipped unless
``overwrite`` is set, so a rerun after a crash continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from dinomask.atomic import remove_paths, replace_folder, temporary_folder
from dinomask.composite import Background, render
from dinomask.errors import DinomaskError
from dinomask.files import AtomicVideoWriter, WorkItem, remove_stale_parts, write_image_atomic
from dinomask.preprocess import load_image
from dinomask.segmenter import Segmenter
from dinomask.video import Frame, FrameSource

_log = logging.getLogger("dinomask")


@dataclass(frozen=True)
class OutputOptions:
    """What each output file holds.

    Attributes:
        kind: ``composite``, ``mask``, ``heatmap`` or ``overlay``.
        background: for ``composite``: black, white, transparent, blur or a colour.
        overwrite: replace outputs that already exist (default: skip them).
        video_codec: ``auto`` or a key of :data:`~dinomask.files.VIDEO_CODECS`, for video outputs.
    """

    kind: str = "composite"
    background: Background = field(default_factory=lambda: Background.parse("black"))
    overwrite: bool = False
    video_codec: str = "auto"

    @property
    def transparent(self) -> bool:
        return self.kind == "composite" and self.background.kind == "transparent"


@dataclass
class BatchReport:
    """Counts, failures by file, and timing of one batch run.

    ``ignored`` holds the inputs the user named that are no image or video this tool reads
    (an animated GIF, a text file, a missing path), each with its reason.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    #: Ctrl-C or SIGTERM stopped the batch: the exception, re-raised by the caller after the summary
    interrupted: BaseException | None = None
    planned: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.ignored and self.interrupted is None

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{len(self.written)} written, {len(self.skipped)} skipped (output exists), "
            f"{len(self.ignored)} ignored (not an input this tool reads), {len(self.failed)} failed; "
            f"{self.frames} {'frame' if self.frames == 1 else 'frames'} in {self.seconds:.1f} s ({rate:.2f} frames/s)"
        ]
        if self.interrupted is not None:
            done = len(self.written) + len(self.skipped) + len(self.failed)
            lines.append(f"  INTERRUPTED after {done} of {self.planned} inputs: the rest were not processed; "
                         "run the same command again to continue (finished outputs are skipped)")
        lines += [f"  IGNORED {problem}" for problem in self.ignored]
        lines += [f"  FAILED {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)


def output_complete(item: WorkItem) -> bool:
    """True when the item's output exists and was finished (files appear only when complete)."""
    if item.output.is_dir():
        return (item.output / ".complete").is_file()
    return item.output.is_file()


def _say_unrefined(item: WorkItem, result, said: set) -> None:
    """One warning per file whose frame the refiner could not take (its unrefined mask is written)."""
    if result.refine_skipped and item.source not in said:
        said.add(item.source)
        _log.warning("%s: %s; its unrefined mask is written", item.source, result.refine_skipped)


def provenance(segmenter: Segmenter) -> dict[str, str]:
    """What a written image says of itself (a PNG text chunk): the model, and RANDOM WEIGHTS where
    they are, so an image shown on its own never passes for a result."""
    from dinomask._version import __version__

    random = getattr(segmenter.backbone, "random_weights", None)
    text = f"dinomask {__version__}, model {segmenter.backbone.spec.name}"
    return {"dinomask": text + (f"; RANDOM WEIGHTS ({random}): this mask means nothing" if random else "")}


def _process_image(segmenter: Segmenter, item: WorkItem, options: OutputOptions, view=None) -> int:
    image = load_image(item.source)
    segmenter.reset()  # separate images are not a video: no smoothing across them
    result = segmenter.predict(image)
    _say_unrefined(item, result, set())
    if view is not None:
        view.log(view.frames, image, result)
    output = render(image, result.mask, result.similarity, result.labels, options.kind, options.background,
                    len(segmenter.object_names))
    write_image_atomic(item.output, output, provenance(segmenter))
    return 1


def _rendered_frames(segmenter: Segmenter, source: FrameSource, item: WorkItem, options: OutputOptions,
                     progress: tqdm | None, view=None) -> Iterator[tuple[Frame, np.ndarray]]:
    """Each frame of a video in order, with its rendered output."""
    said: set = set()
    for count, frame in enumerate(source, start=1):
        result = segmenter.predict(frame.image)
        _say_unrefined(item, result, said)
        if view is not None:
            view.log(view.frames, frame.image, result)
        yield frame, render(frame.image, result.mask, result.similarity, result.labels, options.kind, options.background,
                            len(segmenter.object_names))
        if progress is not None:
            progress.set_postfix_str(f"{item.source.name} frame {count}")


def _check_complete(item: WorkItem, source: FrameSource, frames: int) -> None:
    """A video that ends before its container's frame count is a failure, not a short success."""
    expected = source.frame_count
    if expected > 0 and frames < expected - 1:  # containers may count one frame more than they decode
        raise DinomaskError(
            f"{item.source}: read {frames} of the {expected} frames its container declares; the file is "
            "truncated or corrupt, so its output was not kept"
        )


def _process_video(segmenter: Segmenter, item: WorkItem, options: OutputOptions, progress: tqdm | None = None,
                   view=None) -> int:
    source = FrameSource(str(item.source))
    segmenter.reset()
    frames = _rendered_frames(segmenter, source, item, options, progress, view)
    if options.transparent:  # written in a folder beside, then swapped in whole: no old frame survives a rerun
        folder = temporary_folder(item.output)
        try:
            stamps = []
            for frame, output in frames:
                write_image_atomic(folder / f"{frame.index:06d}.png", output, provenance(segmenter))
                stamps.append({"frame": frame.index, "file": f"{frame.index:06d}.png", "timestamp_s": round(frame.timestamp, 6)})
            _check_complete(item, source, len(stamps))
            if not stamps:
                raise DinomaskError(f"{item.source}: the video holds no readable frames")
            (folder / "timestamps.json").write_text(json.dumps({"fps": source.fps, "frames": stamps}, indent=1))
            (folder / ".complete").write_text(f"{len(stamps)} frames\n")
            replace_folder(folder, item.output)
        except BaseException:
            remove_paths([folder])
            raise
        return len(stamps)
    writer: AtomicVideoWriter | None = None
    try:
        for _, output in frames:
            if output.ndim == 2:
                output = output[:, :, None].repeat(3, axis=2)
            if writer is None:
                writer = AtomicVideoWriter(item.output, source.fps, (output.shape[1], output.shape[0]), options.video_codec)
            writer.write(output)
        _check_complete(item, source, writer.frames if writer is not None else 0)
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    if writer is None:
        raise DinomaskError(f"{item.source}: the video holds no readable frames")
    writer.close(keep=True)
    return writer.frames


def process_item(segmenter: Segmenter, item: WorkItem, options: OutputOptions, progress: tqdm | None = None,
                 view=None) -> int:
    """Write one item's output; returns frames processed. Raises on unreadable input.

    Temporary files left by an interrupted earlier write of this output are removed first. With
    ``view`` (a :class:`~dinomask.rerun_view.RerunView`), every frame is logged to it too.
    """
    remove_stale_parts(item.output)
    if item.kind == "image":
        return _process_image(segmenter, item, options, view)
    return _process_video(segmenter, item, options, progress, view)


def remove_batch(
    segmenter: Segmenter, items: Sequence[WorkItem], options: OutputOptions, *, show_progress: bool = True, view=None
) -> BatchReport:
    """Run every work item; never stop on one failure.

    Returns:
        A :class:`BatchReport`; ``report.ok`` is False when any input failed. Ctrl-C (or SIGTERM
        handled as it) ends the batch after the output being written is cleaned up, and is kept in
        ``report.interrupted`` for the caller to re-raise after its summary.
    """
    report = BatchReport(planned=len(items))
    started = time.perf_counter()
    try:
        with tqdm(items, desc="removing background", unit="file", disable=not show_progress) as progress:
            for item in progress:
                if output_complete(item) and not options.overwrite:
                    report.skipped.append(item.output)
                    continue
                try:
                    report.frames += process_item(segmenter, item, options, progress, view)
                    report.written.append(item.output)
                except (DinomaskError, OSError, ValueError, cv2.error) as exc:  # OpenCV's own errors fail one file too
                    report.failed[str(item.source)] = str(exc).strip() or exc.__class__.__name__
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the caller prints what was done, then stops
        report.interrupted = exc
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class BagReport(BatchReport):
    """A bag run's counts: messages of the topic written, failed (named), skipped (another type on
    the topic), and the output bag, whole or marked partial."""

    source: str = ""
    topic: str = ""
    output: str = ""
    total: int = 0
    foreign: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        skipped = sum(self.foreign.values())
        where = f"to {self.output}" if self.written else "(no bag written)"
        lines = [f"bag {self.source}, topic {self.topic}: {self.frames} of {self.total} "
                 f"{'message' if self.total == 1 else 'messages'} written {where}, {len(self.failed)} failed"
                 + (f", {skipped} skipped (not an image type: "
                    + ", ".join(f"{n} {t}" for t, n in self.foreign.items()) + ")" if skipped else "")
                 + f"; {self.seconds:.1f} s ({rate:.2f} messages/s)"]
        if self.interrupted is not None:
            lines.append(f"  INTERRUPTED after {self.frames} of {self.total} messages: "
                         + (f"{self.output} holds them, marked partial; run the same command again to redo it "
                            "(a partial bag is replaced without --overwrite)" if self.written else "nothing was kept"))
        lines += [f"  FAILED {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)


def remove_bag(segmenter: Segmenter, source: Path, output: Path, options: OutputOptions, *, topic: str | None = None,
               extras: Sequence[str] = (), show_progress: bool = True, view=None) -> BagReport:
    """One ROS bag's image topic in, a ROS 2 bag (MCAP) of masks out (see :mod:`dinomask.bags`).

    A message that cannot be decoded is skipped and named in ``report.failed``; a message of
    another type on the topic is skipped and counted in ``report.foreign``; a bag that cannot be
    read on (truncated, corrupt) ends the read there, named, with the frames before it written.
    Ctrl-C or SIGTERM finalises the frames written, marked partial (``report.interrupted`` is set).

    Raises:
        SourceError: the bag cannot be opened, or the topic is missing or must be chosen.
        OutputError: ``output`` may not be written (see :func:`dinomask.bags.check_output`).
    """
    from dinomask.bags import BagReader, BagWriter

    report = BagReport(planned=1, source=str(source), output=str(output))
    started = time.perf_counter()
    with BagReader(source, topic) as reader:
        report.topic, report.total, report.foreign = reader.topic, reader.count, dict(reader.foreign)
        writer = BagWriter(output, reader.topic, extras, overwrite=options.overwrite, source=source,
                           objects=len(segmenter.object_names), provenance=provenance(segmenter)["dinomask"])
        if writer.note:  # the command line says it before the model loads
            _log.info("%s", writer.note)
        keep = True
        try:
            segmenter.reset()
            with tqdm(total=reader.count, desc=f"removing background ({reader.topic})", unit="msg",
                      disable=not show_progress) as progress:
                for item in reader:
                    progress.update(1)
                    if isinstance(item, Exception):  # "bag B, topic T, message N: why"
                        where, _, why = str(item).partition(": ")
                        report.failed[where] = why
                        continue
                    result = segmenter.predict(item.image)
                    removed = (render(item.image, result.mask, result.similarity, result.labels, "composite",
                                      options.background) if "removed" in writer.topics else None)
                    writer.write(item, result.labels, removed, result.similarity)
                    if view is not None:
                        view.log(item.index, item.image, result, item.stamp_s)
                    report.frames += 1
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the frames written are kept, finalised
            report.interrupted = exc
        except DinomaskError as exc:  # the bag cannot be read on: what came before is kept
            report.failed[str(source)] = str(exc)
        except BaseException:
            keep = False
            raise
        finally:
            path = writer.close(keep=keep, complete=report.interrupted is None, total=reader.count)
    if path is not None:
        report.written.append(path)
    elif not report.failed and report.interrupted is None:
        report.failed[str(source)] = f"no message of topic {reader.topic} could be processed; no bag written"
    report.seconds = time.perf_counter() - started
    return report
