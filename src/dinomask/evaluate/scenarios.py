"""Come-and-go scenarios built from any DAVIS-layout set, written as DAVIS-layout sets, for
``dinomask eval live`` (``benchmarks/scenarios.py`` is the command line):

* ``cut``: ``k`` frames of another clip spliced into the middle of a clip (a scene cut away and
  back); the ground truth is empty there;
* ``pan``: a virtual camera zoomed in ``zoom`` times on the object, panning off it until it is
  gone, holding there, and panning back (``speed`` times as fast as over an eighth of the clip each
  way); the ground truth cropped the same way;
* ``tile``: two or more clips side by side, the ground truth a label map (1, 2, ... in the
  order given) saved as a DAVIS-2017 palette PNG;
* ``long``: a clip played forward and back until it has ``n`` frames;
* ``alone``: each clip of each ``tile`` pair on its own, as long as its pair (``NAME@LENGTH``):
  the yardstick for ``tile``, each object against the same frames without the other one.

Frames are written as JPEG (quality 95), masks as PNG (0/255, or a palette label map for
``tile``), named ``00000.jpg``/``00000.png`` on. Each builder returns the folder of the new
sequence. The source set is only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from dinomask.evaluate.datasets import LabelledSequence, load_dataset, load_truth_labels
from dinomask.preprocess import load_image

SCENARIOS = ("cut", "pan", "tile", "long", "alone")


def labelled_frames(sequence: LabelledSequence) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each frame with its ground-truth ids (a frame without a mask is skipped: a scenario's
    ground truth must be whole)."""
    for image, mask in sequence.played:
        if mask is None:
            continue
        frame = load_image(image)
        yield frame, load_truth_labels(mask, frame.shape[:2])


def _palette() -> list[int]:
    """DAVIS-2017's palette (the PASCAL VOC colour map): index i's colour by its bits."""
    colours = []
    for index in range(256):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours += [r, g, b]
    return colours


class SetWriter:
    """Writes one sequence of a DAVIS-layout set: ``JPEGImages/480p/NAME`` and ``Annotations/480p/NAME``."""

    def __init__(self, root: Path, name: str, labels: bool = False):
        self.images = Path(root) / "JPEGImages" / "480p" / name
        self.masks = Path(root) / "Annotations" / "480p" / name
        for folder in (self.images, self.masks):
            if folder.exists() and any(folder.iterdir()):
                raise FileExistsError(f"{folder} exists and is not empty; choose another output set")
            folder.mkdir(parents=True, exist_ok=True)
        self.labels, self.count = labels, 0

    def add(self, frame: np.ndarray, ids: np.ndarray) -> None:
        name = f"{self.count:05d}"
        Image.fromarray(frame).save(self.images / f"{name}.jpg", quality=95)
        if self.labels:
            mask = Image.fromarray(ids.astype(np.uint8), mode="P")
            mask.putpalette(_palette())
        else:
            mask = Image.fromarray(np.where(ids > 0, 255, 0).astype(np.uint8))
        mask.save(self.masks / f"{name}.png")
        self.count += 1


def _fit(frame: np.ndarray, size: tuple[int, int], interpolation=cv2.INTER_AREA) -> np.ndarray:
    return frame if frame.shape[:2] == size else cv2.resize(frame, (size[1], size[0]), interpolation=interpolation)


def cut(sequence: LabelledSequence, other: LabelledSequence, root: Path, k: int) -> Path:
    """``sequence`` with ``k`` frames of ``other`` (its first ``k``, resized to fit, played forward
    and back if it is shorter) spliced into its middle; the ground truth is empty there."""
    frames = list(labelled_frames(sequence))
    others = [frame for frame, _ in labelled_frames(other)]
    if k < 1 or not others or len(frames) < 2:
        raise ValueError(f"cut needs k >= 1 and two clips with frames; got k={k}, {len(frames)} and {len(others)}")
    cycle = others + others[-2:0:-1]
    writer = SetWriter(root, f"{sequence.name}-cut{k}-{other.name}")
    middle = len(frames) // 2
    for frame, ids in frames[:middle]:
        writer.add(frame, ids)
    size = frames[0][0].shape[:2]
    for index in range(k):
        writer.add(_fit(cycle[index % len(cycle)], size), np.zeros(size, np.uint8))
    for frame, ids in frames[middle:]:
        writer.add(frame, ids)
    return writer.images


def _pan_offsets(count: int, travel: float, hold: int, speed: float = 1.0) -> list[float] | None:
    """The camera's offset per frame: on the object for a quarter of the clip, then off it over
    an eighth of the clip divided by ``speed`` (at least 4 frames), ``hold`` frames away, back over
    the same time, on it after for as long again at least; None when the clip is too short for that
    (a return at or near the clip's end could not be re-acquired by any loop, and would be scored as
    missed). A slower pan that does not fit after a quarter of the clip starts after an eighth."""
    if speed <= 0:
        raise ValueError(f"the pan's speed must be above 0, got {speed}")
    ramp = max(4, int(count / 8 / speed))
    start = count // 4
    if start + 3 * ramp + hold > count and speed < 1:
        start = max(4, count // 8)
    if start + 3 * ramp + hold > count:
        return None
    offsets = []
    for t in range(count):
        if t < start:
            offsets.append(0.0)
        elif t < start + ramp:
            offsets.append(travel * (t - start + 1) / ramp)
        elif t < start + ramp + hold:
            offsets.append(travel)
        elif t < start + 2 * ramp + hold:
            offsets.append(travel * (1 - (t - start - ramp - hold + 1) / ramp))
        else:
            offsets.append(0.0)
    return offsets


def pan(sequence: LabelledSequence, root: Path, zoom: float = 2.0, hold: int = 12,
        speed: float = 1.0) -> Path | None:
    """A virtual camera zoomed ``zoom`` times, centred on the object of the clip's first frame,
    panning sideways (towards the side with more room) until the object has left the view, holding
    ``hold`` frames, and panning back; frames and ground truth cropped alike and scaled back up to
    the clip's size. Returns None when the object cannot leave the zoomed view within the frame, or
    the clip is too short to pan off, hold and come back in time to be seen again (:func:`_pan_offsets`)."""
    frames = list(labelled_frames(sequence))
    if not frames:
        return None
    height, width = frames[0][0].shape[:2]
    crop_h, crop_w = int(round(height / zoom)), int(round(width / zoom))
    ys, xs = np.nonzero(frames[0][1])
    if xs.size == 0:
        return None
    centre_y = float(np.clip(ys.mean(), crop_h / 2, height - crop_h / 2))
    centre_x = float(np.clip(xs.mean(), crop_w / 2, width - crop_w / 2))
    right, left = width - crop_w / 2 - centre_x, centre_x - crop_w / 2
    direction = 1.0 if right >= left else -1.0
    room = max(right, left)
    # as far as the object's widest extent in the clip needs to leave the view, if the frame allows it
    columns = np.nonzero(np.any([ids.any(axis=0) for _, ids in frames], axis=0))[0]
    needed = (columns[-1] - centre_x if direction > 0 else centre_x - columns[0]) + crop_w / 2 + 1
    travel = float(min(room, needed))
    offsets = _pan_offsets(len(frames), direction * travel, hold, speed)
    if offsets is None:
        return None
    far = [k for k, o in enumerate(offsets) if abs(o) == travel]
    if not far or all(_crop(frames[k][1], centre_y, centre_x + offsets[k], crop_h, crop_w).any() for k in far):
        return None
    writer = SetWriter(root, f"{sequence.name}-pan{zoom:g}x" + ("" if speed == 1 else f"-speed{speed:g}"))
    for (frame, ids), offset in zip(frames, offsets):
        view = _crop(frame, centre_y, centre_x + offset, crop_h, crop_w)
        truth = _crop(ids, centre_y, centre_x + offset, crop_h, crop_w)
        writer.add(_fit(view, (height, width), cv2.INTER_LINEAR), _fit(truth, (height, width), cv2.INTER_NEAREST))
    return writer.images


def _crop(array: np.ndarray, centre_y: float, centre_x: float, crop_h: int, crop_w: int) -> np.ndarray:
    top = int(round(centre_y - crop_h / 2))
    left = int(round(np.clip(centre_x - crop_w / 2, 0, array.shape[1] - crop_w)))
    return np.ascontiguousarray(array[top:top + crop_h, left:left + crop_w])


def tile(sequences: list[LabelledSequence], root: Path) -> Path:
    """Two or more clips side by side at their own scale (resized to the first one's height), as
    long as the shortest; the ground truth a label map: object ``i`` is clip ``i`` (1, 2, ...)."""
    if len(sequences) < 2:
        raise ValueError(f"tile needs two or more clips, got {len(sequences)}")
    streams = [list(labelled_frames(s)) for s in sequences]
    length = min(len(s) for s in streams)
    height = streams[0][0][0].shape[0]
    writer = SetWriter(root, "+".join(s.name for s in sequences), labels=True)
    for index in range(length):
        images, labels = [], []
        for number, stream in enumerate(streams, start=1):
            frame, ids = stream[index]
            width = int(round(frame.shape[1] * height / frame.shape[0]))
            images.append(_fit(frame, (height, width)))
            labels.append(_fit(np.where(ids > 0, number, 0).astype(np.uint8), (height, width), cv2.INTER_NEAREST))
        writer.add(np.concatenate(images, axis=1), np.concatenate(labels, axis=1))
    return writer.images


def alone(sequence: LabelledSequence, root: Path, length: int) -> Path:
    """The clip's first ``length`` frames on their own, named ``NAME@LENGTH`` (what ``tile`` shows
    of it beside a clip of ``length`` frames)."""
    writer = SetWriter(root, f"{sequence.name}@{length}")
    for index, (frame, ids) in enumerate(labelled_frames(sequence)):
        if index == length:
            break
        writer.add(frame, ids)
    return writer.images


def long(sequence: LabelledSequence, root: Path, n: int) -> Path:
    """The clip played forward and back (without repeating its turning frames) until ``n`` frames."""
    frames = list(labelled_frames(sequence))
    if n < 1 or len(frames) < 2:
        raise ValueError(f"long needs n >= 1 and a clip of two frames or more; got n={n}, {len(frames)} frames")
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    writer = SetWriter(root, f"{sequence.name}-long{n}")
    for index in range(n):
        frame, ids = frames[order[index % len(order)]]
        writer.add(frame, ids)
    return writer.images


def build(kind: str, sources: list[str | Path], out: str | Path, *, k: int = 24, zoom: float = 2.0, hold: int = 12,
          n: int = 10_000, pairs: int | None = None, speed: float = 1.0) -> list[Path]:
    """A scenario set at ``out`` from every clip of the DAVIS-layout ``sources``: ``cut`` each clip
    with the next one (in name order, wrapping), ``pan`` each clip (those whose object cannot
    leave the view are left out), ``tile`` each clip beside the next one (``pairs`` of them, or
    all), ``long`` each clip to ``n`` frames, ``alone`` each clip of each of those pairs as long
    as its pair (once per length). Returns the sequence folders written."""
    if kind not in SCENARIOS:
        raise ValueError(f"expected one of {', '.join(SCENARIOS)}, got {kind!r}")
    clips = sorted((s for source in sources for s in load_dataset(source).sequences), key=lambda s: s.name)
    if not clips:
        raise ValueError("no clip with ground truth in " + ", ".join(map(str, sources)))
    out = Path(out)
    written: list[Path] = []
    alone_written: set[tuple[str, int]] = set()  # ``alone``: each clip once per pair length
    for index, clip in enumerate(clips):
        following = clips[(index + 1) % len(clips)]
        if kind == "cut":
            written.append(cut(clip, following, out, k))
        elif kind == "pan":
            path = pan(clip, out, zoom, hold, speed)
            if path is not None:
                written.append(path)
        elif kind in ("tile", "alone"):
            if pairs is not None and index >= pairs:
                break
            if following is clip:
                continue
            if kind == "tile":
                written.append(tile([clip, following], out))
                continue
            length = min(len(clip.frames), len(following.frames))
            for member in (clip, following):
                if (member.name, length) not in alone_written:
                    alone_written.add((member.name, length))
                    written.append(alone(member, out, length))
        else:
            written.append(long(clip, out, n))
    return written
