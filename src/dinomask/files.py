"""Inputs and outputs on disk: expand what the user named, plan output paths, write atomically.

Rules that keep users' data safe:

* an output never lands on an input (checked before any work starts);
* two inputs never map to one output (checked before any work starts);
* an existing output is skipped, not overwritten, unless ``overwrite`` is set;
* every file is written to a temporary name beside it and renamed into place, so a
  crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
from PIL import Image

from dinomask.atomic import remove_paths, stale_parts, temporary_file
from dinomask.errors import OutputError
from dinomask.preprocess import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
InputKind = Literal["image", "video"]


@dataclass(frozen=True)
class WorkItem:
    """One input and where its output goes.

    Attributes:
        source: the input file.
        kind: ``image`` or ``video``.
        output: the output file (image: ``.png``; video: ``.mp4``, or a folder of PNG
            frames when the output needs transparency).
    """

    source: Path
    kind: InputKind
    output: Path


def input_kind(path: Path) -> InputKind | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Files and folders -> ``(file, path relative to what the user named)`` pairs.

    Folders are walked recursively for image and video files, in sorted order.

    Returns:
        The files, and a list of problems (missing paths, unsupported files named directly).
    """
    found: list[tuple[Path, Path]] = []
    problems: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and input_kind(p) is not None)
            if not files:
                problems.append(f"{path}: folder holds no image or video files")
            found.extend((p, p.relative_to(path)) for p in files)
        elif path.is_file():
            if input_kind(path) is None:
                problems.append(
                    f"{path}: not an image or video file (expected one of "
                    f"{', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"
                )
            else:
                found.append((path, Path(path.name)))
        else:
            problems.append(f"{path}: no such file or folder")
    return found, problems


def plan_outputs(
    inputs: Sequence[str | Path], out_dir: str | Path, *, transparent: bool = False, suffix: str = ""
) -> tuple[list[WorkItem], list[str]]:
    """Map inputs to outputs under ``out_dir``, keeping folder structure.

    Image ``a/b.jpg`` -> ``OUT/a/b{suffix}.png``; video ``v.mp4`` -> ``OUT/v{suffix}.mp4``,
    or ``OUT/v{suffix}/`` (PNG frames) when ``transparent``.

    Raises:
        ValueError: an output would overwrite an input, or two inputs share an output.
    """
    out_dir = Path(out_dir)
    files, problems = expand_inputs(inputs)
    items: list[WorkItem] = []
    for source, relative in files:
        kind = input_kind(source)
        assert kind is not None
        stem = relative.with_suffix("")
        if kind == "image":
            output = out_dir / stem.parent / f"{stem.name}{suffix}.png"
        elif transparent:
            output = out_dir / stem.parent / f"{stem.name}{suffix}"
        else:
            output = out_dir / stem.parent / f"{stem.name}{suffix}.mp4"
        items.append(WorkItem(source, kind, output))
    items = _without_own_outputs(items, inputs, transparent)
    sources = {item.source.resolve() for item in items}
    seen: dict[Path, Path] = {}
    for item in items:
        target = item.output.resolve()
        if target in sources:
            raise ValueError(
                f"the output {item.output} would overwrite the input {item.source}; choose another -o folder"
            )
        if target in seen:
            raise ValueError(
                f"{seen[target]} and {item.source} would both be written to {item.output}; "
                "give them in separate folders or run them separately"
            )
        seen[target] = item.source
    frame_folders = {item.output.resolve(): item for item in items if item.kind == "video" and transparent}
    for item in items:
        target = item.output.resolve()
        inside = next((frame_folders[p] for p in target.parents if p in frame_folders), None)
        if inside is not None:
            raise ValueError(
                f"{inside.source} writes its frames into the folder {inside.output}, where the output of "
                f"{item.source} ({item.output}) would also land; give them in separate folders or run them separately"
            )
    return items, problems


def check_writable(folder: str | Path, what: str = "outputs") -> Path:
    """Create ``folder`` if needed and make (and delete) a file in it, so that a read-only or
    missing place is found before any frame is computed, not after.

    Raises:
        OutputError: naming the folder and the system's reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {what} in {folder}: {exc.strerror or exc}; choose another place") from None
    return folder


def _without_own_outputs(items: list[WorkItem], inputs: Sequence[str | Path], transparent: bool) -> list[WorkItem]:
    """Drop files found by walking a folder that this plan itself writes: with ``-o`` inside an
    input folder, a rerun finds the first run's outputs (``a.png`` beside ``a.jpg``, the frames
    folder of a video) and must not take them for inputs. Files the user named stay inputs."""
    named = {Path(raw).resolve() for raw in inputs if Path(raw).is_file()}
    produced = {item.output.resolve() for item in items if item.output.resolve() != item.source.resolve()}
    frame_folders = {item.output.resolve() for item in items if item.kind == "video"} if transparent else set()

    def ours(item: WorkItem) -> bool:
        source = item.source.resolve()
        return source not in named and (source in produced or not frame_folders.isdisjoint(source.parents))

    return [item for item in items if not ours(item)]


def remove_stale_parts(output: Path) -> int:
    """Delete temporary files and folders that an interrupted write of ``output`` left behind.

    Only this output's own temporary names are touched (matched exactly by the tag of its
    name, see :mod:`dinomask.atomic`), never another output's; for a frames folder, also
    ``.*.part.*`` inside it. Returns how many went.
    """
    output = Path(output)
    stale = stale_parts(output)
    if output.is_dir():
        stale += list(output.glob(".*.part.*"))
    remove_paths(stale)
    return len(stale)


def write_image_atomic(path: Path, image: np.ndarray, text: dict[str, str] | None = None) -> Path:
    """Write an RGB(A) or grey uint8 image (format from the suffix) via a temp file + rename.
    ``text``: PNG text chunks (``dinomask``: what made it, and whether the weights were random)."""
    tmp = temporary_file(path)
    try:
        fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
        options = {}
        if text and fmt == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            for key, value in text.items():
                info.add_text(key, value)
            options["pnginfo"] = info
        Image.fromarray(image).save(tmp, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


#: Video codecs by the name ``--video-codec`` takes: ``(OpenCV fourcc, name, plays in a browser)``.
VIDEO_CODECS = {"h264": ("avc1", "H.264", True), "vp9": ("vp09", "VP9", True), "mp4v": ("mp4v", "MPEG-4 Part 2", False)}
#: ``auto``: H.264 where the installed OpenCV has an encoder (the pip wheels do not), else MPEG-4
#: Part 2, which every wheel writes and VLC and ffmpeg play, browsers do not. VP9 plays in every
#: current browser but only on request: OpenCV's libvpx costs 67 ms a 854x480 frame (p95 274 ms,
#: 4.6 s to close 48 frames) against 2.7 ms for MPEG-4 Part 2 on the 2-core build machine, which
#: would double the time of ``remove`` on a video and cannot keep up with a camera.
AUTO_CODECS = ("h264", "mp4v")
_codec_cache: dict[tuple[str, str], tuple[str, str, bool] | None] = {}
_codec_said: list[bool] = []


def _writes(fourcc: str, suffix: str) -> bool:
    """Whether this OpenCV writes ``fourcc`` into a ``suffix`` file: two frames to a temporary
    file, FFmpeg's complaints about a missing encoder kept off the user's terminal."""
    with tempfile.TemporaryDirectory(prefix="dinomask-codec-") as tmp:
        probe = Path(tmp) / f"probe{suffix}"
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*fourcc), 24.0, (64, 48))
                opened = writer.isOpened()
                if opened:
                    for _ in range(2):
                        writer.write(np.zeros((48, 64, 3), np.uint8))
                writer.release()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return opened and probe.is_file() and probe.stat().st_size > 0


def video_codec(suffix: str = ".mp4", choice: str = "auto") -> tuple[str, str, bool]:
    """``(fourcc, name, plays in a browser)`` for ``choice`` (``auto`` or a key of
    :data:`VIDEO_CODECS`), found once a process (OpenCV says whether it can write a codec only
    by trying).

    Raises:
        OutputError: the codec asked for is not one this OpenCV can write.
    """
    if choice != "auto" and choice not in VIDEO_CODECS:
        raise ValueError(f"video codec must be auto or one of {', '.join(VIDEO_CODECS)}, got {choice!r}")
    for name in (AUTO_CODECS if choice == "auto" else (choice,)):
        key = (suffix, name)
        if key not in _codec_cache:
            fourcc = VIDEO_CODECS[name][0]
            _codec_cache[key] = VIDEO_CODECS[name] if _writes(fourcc, suffix) else None
        if _codec_cache[key] is not None:
            return _codec_cache[key]
    raise OutputError(f"this OpenCV cannot write {VIDEO_CODECS[choice][1] if choice != 'auto' else 'any video codec'} "
                      f"into a {suffix} file; use --video-codec auto")


class AtomicVideoWriter:
    """An OpenCV video writer that only appears under its final name once closed cleanly, in the
    first codec of :data:`VIDEO_CODECS` this OpenCV writes (``codec`` names it).

    Args:
        path: final ``.mp4`` path.
        fps: frames per second to record.
        size: ``(width, height)`` of every frame.
        codec: ``auto`` or a key of :data:`VIDEO_CODECS` (see :func:`video_codec`).
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int], codec: str = "auto"):
        self.path = Path(path)
        fourcc, self.codec, self.plays_in_browsers = video_codec(self.path.suffix.lower() or ".mp4", codec)
        self._tmp = temporary_file(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise OSError(f"OpenCV could not open a {self.codec} video writer for {self.path}")
        if not self.plays_in_browsers and not _codec_said:
            _codec_said.append(True)
            logging.getLogger("dinomask").warning(
                "%s is written as %s (this OpenCV has no H.264 encoder): VLC and ffmpeg play it, browsers do not; "
                "--video-codec vp9 plays in browsers but encodes about 25x slower, or convert afterwards with "
                "'ffmpeg -i IN.mp4 -c:v libx264 OUT.mp4'", self.path.name, self.codec)
        self.size = size
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append one ``H x W x 3`` uint8 RGB frame of the writer's size."""
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            raise ValueError(f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the video's {self.size}")
        self._writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file; with ``keep=False`` (an error happened) delete it instead."""
        self._writer.release()
        if keep and self.frames:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicVideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)
