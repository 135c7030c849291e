"""Labelled datasets: the DAVIS layout and a plain ``images/`` + ``masks/`` layout.

DAVIS::

    DIR/JPEGImages/480p/<sequence>/<frame>.jpg
    DIR/Annotations/480p/<sequence>/<frame>.png      (0 = background, non-zero = object)

Plain (a sub-folder per class or sequence, or files directly in ``images/``)::

    DIR/images/<class>/<name>.jpg
    DIR/masks/<class>/<name>.png                      (same relative name, any image suffix)

A frame whose mask is missing is reported by file name and never scored; a mask whose
size does not match its frame is reported when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dinomask.preprocess import IMAGE_SUFFIXES, load_image, load_mask


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
    """

    name: str
    frames: tuple[LabelledFrame, ...]


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


def load_pair(frame: LabelledFrame) -> tuple[np.ndarray, np.ndarray]:
    """A frame and its mask: ``H x W x 3`` uint8 RGB and ``H x W`` bool of the same size.

    Raises:
        ImageReadError: either file is unreadable, or their sizes differ.
    """
    image = load_image(frame.image)
    return image, load_mask(frame.mask, size=image.shape[:2])


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _find_mask(folder: Path, stem: str) -> Path | None:
    for suffix in (".png", ".PNG", ".bmp", ".jpg", ".tif"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _pair(name: str, image_dir: Path, mask_dir: Path, problems: list[str]) -> LabelledSequence | None:
    frames = []
    for image in _images(image_dir):
        mask = _find_mask(mask_dir, image.stem) if mask_dir.is_dir() else None
        if mask is None:
            problems.append(f"{image}: no mask named {image.stem}.png in {mask_dir}; not scored")
            continue
        frames.append(LabelledFrame(image, mask))
    if not frames:
        problems.append(f"{image_dir}: no frame with a mask; sequence {name!r} skipped")
        return None
    return LabelledSequence(name, tuple(frames))


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
    else:
        raise FileNotFoundError(
            f"{root} is not a dataset: expected JPEGImages/<res>/<seq>/ + Annotations/<res>/<seq>/ "
            "(DAVIS) or images/ + masks/ (plain)"
        )
    return Dataset(root, layout, sequences, problems)
