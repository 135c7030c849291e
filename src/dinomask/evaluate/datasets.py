"""Labelled datasets as users have them: DAVIS, ``images/`` + ``masks/``, and flat folders.

DAVIS::

    DIR/JPEGImages/480p/<sequence>/<frame>.jpg
    DIR/Annotations/480p/<sequence>/<frame>.png

Plain (a sub-folder per class or sequence, or files directly in ``images/``)::

    DIR/images/<class>/<name>.jpg
    DIR/masks/<class>/<name>.png                      (same relative name, any image suffix)

Flat (one sequence named after the folder)::

    DIR/<name>.jpg + DIR/<name>.png                   (the PNG beside each JPEG is its mask)
    DIR/<name>.jpg + DIR/masks/<name>.png

Ground-truth masks are read by the one rule every reader uses
(:data:`dinomask.preprocess.MASK_RULE`): a palette PNG (DAVIS's) by its index; a hard mask
(0/1, 0/255, a small label map) where non-zero; a soft or JPEG mask above half its range.
A frame whose mask is missing is reported by file name and
never scored; a mask whose size does not match its frame, and a mask that marks nothing in
a whole sequence, are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dinomask.errors import ImageReadError
from dinomask.preprocess import IMAGE_SUFFIXES, load_image, read_mask_file


@dataclass(frozen=True)
class LabelledFrame:
    """One frame and its ground-truth mask file."""

    image: Path
    mask: Path


@dataclass(frozen=True)
class LabelledSequence:
    """Frames of one sequence (or class), in order.

    Attributes:
        name: sequence or class name.
        frames: frames that have a mask, sorted by name.
        timeline: every frame of the sequence's folder in order, each with its mask file or None
            (``eval live`` plays them all, as a camera would, and scores the annotated ones);
            empty when the layout has no order (a class folder is the same as ``frames``).
    """

    name: str
    frames: tuple[LabelledFrame, ...]
    timeline: tuple[tuple[Path, Path | None], ...] = ()

    @property
    def played(self) -> tuple[tuple[Path, Path | None], ...]:
        """What a camera would deliver: the timeline, or the labelled frames where there is none."""
        return self.timeline or tuple((f.image, f.mask) for f in self.frames)


@dataclass
class Dataset:
    """Sequences plus the problems found while reading the layout.

    Attributes:
        root: the dataset folder.
        layout: ``davis`` or ``plain``.
        sequences: sequences with at least one labelled frame.
        problems: ``file: reason`` lines for frames that cannot be scored.
    """

    root: Path
    layout: str
    sequences: list[LabelledSequence]
    problems: list[str] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return sum(len(s.frames) for s in self.sequences)


def load_truth_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A ground-truth mask file -> ``H x W`` bool by :data:`~dinomask.preprocess.MASK_RULE`
    (the same reader as ``reference --mask``: :func:`~dinomask.preprocess.read_mask_file`).

    Raises:
        ImageReadError: unreadable, or not of ``size`` (``(height, width)``).
    """
    array = read_mask_file(path)
    if size is not None and tuple(array.shape) != tuple(size):
        raise ImageReadError(f"mask {path} is {array.shape[0]}x{array.shape[1]} (h x w), its frame "
                             f"{size[0]}x{size[1]}: it does not match")
    return array


def load_truth_labels(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A ground-truth mask file -> ``H x W`` uint8 object ids (0 background): the object pixels by
    :data:`~dinomask.preprocess.MASK_RULE`, each carrying its palette index (DAVIS-2017's PNGs) or,
    in a lossless grey label map of small values (1, 2, ... below 255), its value. Anything else
    (0/255, 0/1, a JPEG or soft mask) is one object, id 1.

    Raises:
        ImageReadError: unreadable, not of ``size``, or ids above 255.
    """
    from dinomask.preprocess import _open_pil, mask_from_image

    image = _open_pil(Path(path), "mask")
    mask = mask_from_image(image, str(path))
    if size is not None and tuple(mask.shape) != tuple(size):
        raise ImageReadError(f"mask {path} is {mask.shape[0]}x{mask.shape[1]} (h x w), its frame "
                             f"{size[0]}x{size[1]}: it does not match")
    from dinomask.preprocess import HARD_MASK_MAX_VALUES

    one = mask.astype(np.uint8)
    if image.format in ("JPEG", "MPO") or image.mode not in ("P", "L"):
        return one
    values = np.asarray(image)
    ids = np.unique(values[mask])
    if len(ids) <= 1 or len(ids) > HARD_MASK_MAX_VALUES or (image.mode == "L" and ids.max() >= 255):
        return one
    return np.where(mask, values, 0).astype(np.uint8)


def load_pair(frame: LabelledFrame) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its mask: ``H x W x 3`` uint8 RGB and ``H x W`` bool of the same size.

    Raises:
        ImageReadError: either file is unreadable, or their sizes differ.
    """
    image = load_image(frame.image)
    return image, load_truth_mask(frame.mask, size=image.shape[:2])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _find_mask(folder: Path, stem: str) -> Path | None:
    for suffix in (".png", ".PNG", ".bmp", ".jpg", ".tif"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _pair(name: str, image_dir: Path, mask_dir: Path, problems: list[str]) -> LabelledSequence | None:
    frames, timeline = [], []
    for image in _images(image_dir):
        mask = _find_mask(mask_dir, image.stem) if mask_dir.is_dir() else None
        timeline.append((image, mask))
        if mask is None:
            problems.append(f"{image}: no mask named {image.stem}.png in {mask_dir}; not scored")
            continue
        frames.append(LabelledFrame(image, mask))
    if not frames:
        problems.append(f"{image_dir}: no frame with a mask; sequence {name!r} skipped")
        return None
    return LabelledSequence(name, tuple(frames), tuple(timeline))


def load_dataset(root: str | Path, resolution: str = "480p") -> Dataset:
    """Read a DAVIS or plain dataset folder.

    Raises:
        FileNotFoundError: the folder has neither layout.
    """
    root = Path(root)
    problems: list[str] = []
    sequences: list[LabelledSequence] = []
    davis_images = root / "JPEGImages"
    if davis_images.is_dir():
        levels = [resolution] if (davis_images / resolution).is_dir() else sorted(p.name for p in davis_images.iterdir() if p.is_dir())
        if not levels:
            raise FileNotFoundError(f"{davis_images} holds no resolution folder (expected e.g. 480p)")
        level = levels[0]
        for seq_dir in sorted(p for p in (davis_images / level).iterdir() if p.is_dir()):
            sequence = _pair(seq_dir.name, seq_dir, root / "Annotations" / level / seq_dir.name, problems)
            if sequence:
                sequences.append(sequence)
        layout = "davis"
    elif (root / "images").is_dir():
        images, masks = root / "images", root / "masks"
        if not masks.is_dir():
            problems.append(f"{masks}: folder missing; no frame can be scored")
        sub = sorted(p for p in images.iterdir() if p.is_dir())
        for folder in sub:
            sequence = _pair(folder.name, folder, masks / folder.name, problems)
            if sequence:
                sequences.append(sequence)
        if _images(images):
            sequence = _pair(root.name, images, masks, problems)
            if sequence:
                sequences.append(sequence)
        layout = "plain"
    elif root.is_dir() and (sequence := _flat(root, problems)) is not None:
        sequences.append(sequence)
        layout = "flat"
    else:
        raise FileNotFoundError(
            f"{root} is not a dataset: expected JPEGImages/<res>/<seq>/ + Annotations/<res>/<seq>/ "
            "(DAVIS), images/ + masks/ (plain), or NAME.jpg with NAME.png beside it or in masks/ (flat)"
        )
    _report_empty_masks(sequences, problems)
    return Dataset(root, layout, sequences, problems)


def _flat(root: Path, problems: list[str]) -> LabelledSequence | None:
    """``NAME.jpg`` with its mask ``NAME.png`` beside it, or in ``masks/``; None when the folder
    holds no such pair."""
    photos = [p for p in _images(root) if p.suffix.lower() in (".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")]
    if not photos:
        return None
    masks = root / "masks"
    frames = []
    for photo in photos:
        mask = _find_mask(masks, photo.stem) if masks.is_dir() else None
        mask = mask or next((root / f"{photo.stem}{s}" for s in (".png", ".PNG") if (root / f"{photo.stem}{s}").is_file()), None)
        if mask is None:
            problems.append(f"{photo}: no mask {photo.stem}.png beside it or in {masks}; not scored")
            continue
        frames.append(LabelledFrame(photo, mask))
    return LabelledSequence(root.name, tuple(frames)) if frames else None


def _report_empty_masks(sequences: list[LabelledSequence], problems: list[str]) -> None:
    """A sequence whose first masks all mark nothing is most likely read wrong: say so by name."""
    for sequence in sequences:
        sample = sequence.frames[:3]
        try:
            if not any(load_truth_mask(frame.mask).any() for frame in sample):
                problems.append(f"{sequence.name}: the masks {', '.join(f.mask.name for f in sample)} mark no object "
                                "pixel (see dinomask.preprocess.MASK_RULE); check the mask files")
        except ImageReadError:
            pass  # reported by name when the frame is scored
