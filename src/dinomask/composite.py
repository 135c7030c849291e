"""Pure functions: frame + mask -> output image. No I/O, no model.

Images are ``H x W x 3`` uint8 RGB; outputs are RGB, or RGBA for ``transparent``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NAMED_BACKGROUNDS = ("black", "white", "transparent", "blur")

#: Distinct colours for label maps (object 1, 2, ...), RGB.
LABEL_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)


@dataclass(frozen=True)
class Background:
    """What replaces the background: ``black``, ``white``, ``transparent``, ``blur`` or an RGB colour.

    Parse user text with :meth:`parse`: a name, ``#rrggbb`` or ``r,g,b``.
    """

    kind: str
    colour: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def parse(cls, text: "str | Background") -> "Background":
        if isinstance(text, Background):
            return text
        value = text.strip().lower()
        if value == "black":
            return cls("colour", (0, 0, 0))
        if value == "white":
            return cls("colour", (255, 255, 255))
        if value in ("transparent", "blur"):
            return cls(value)
        try:
            if value.startswith("#") and len(value) == 7:
                rgb = tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
            else:
                rgb = tuple(int(part) for part in value.split(","))
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"background must be black, white, transparent, blur, #rrggbb or r,g,b; got {text!r}"
            ) from None
        return cls("colour", rgb)  # type: ignore[arg-type]


def _check(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image size {image.shape[:2]}")


def composite(image: np.ndarray, mask: np.ndarray, background: "str | Background" = "black") -> np.ndarray:
    """Keep the object, replace the rest.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        mask: ``H x W`` bool (True = keep).
        background: see :class:`Background`.

    Returns:
        ``H x W x 3`` uint8 RGB, or ``H x W x 4`` RGBA for ``transparent``.
    """
    _check(image, mask)
    background = Background.parse(background)
    keep = mask[:, :, None]
    if background.kind == "transparent":
        alpha = np.where(mask, 255, 0).astype(np.uint8)[:, :, None]
        return np.concatenate([image, alpha], axis=2)
    if background.kind == "blur":
        sigma = max(3.0, max(image.shape[:2]) / 60.0)
        fill = cv2.GaussianBlur(image, (0, 0), sigma)
    else:
        fill = np.empty_like(image)
        fill[:] = background.colour
    return np.where(keep, image, fill).astype(np.uint8)


def mask_image(mask: np.ndarray) -> np.ndarray:
    """``H x W`` bool -> ``H x W`` uint8 (255 object, 0 background), for saving as PNG."""
    return np.where(mask, 255, 0).astype(np.uint8)


def mask_values(labels: np.ndarray, objects: int) -> np.ndarray:
    """The mask every writer writes, decided by how many objects there are, never by what one frame
    holds: one object -> 0/255; several -> the label map itself (0 background, 1, 2, ... the objects
    in ``--ref`` order), so a frame that shows only object 1 still reads 1, not 255.

    Args:
        labels: ``H x W`` integer labels (0 background, ``i`` object ``i``).
        objects: the number of references (objects) segmented, at least 1.
    """
    if objects < 1:
        raise ValueError(f"expected at least one object, got {objects}")
    if objects == 1:
        return mask_image(labels > 0)
    if objects > 255:
        raise ValueError(f"a uint8 label map holds at most 255 objects, got {objects}")
    return np.asarray(labels).astype(np.uint8)


#: The one colour map of the similarity wherever it is drawn (``--output-kind heatmap``, the web
#: page, eval's plots, Rerun): matplotlib's ``inferno`` (dark = unlike the reference, bright =
#: like it; perceptually uniform and readable in grey), over the fixed cosine range
#: :data:`SIMILARITY_RANGE`, so pictures compare across frames and tools.
SIMILARITY_COLORMAP = "inferno"
SIMILARITY_RANGE = (-1.0, 1.0)


def similarity_colours(similarity: np.ndarray) -> np.ndarray:
    """``h x w`` cosine similarity -> ``h x w x 3`` RGB uint8 in :data:`SIMILARITY_COLORMAP` over
    :data:`SIMILARITY_RANGE` (values outside it are clipped)."""
    low, high = SIMILARITY_RANGE
    scaled = np.clip((np.asarray(similarity, np.float32) - low) / (high - low), 0.0, 1.0)
    grey = np.round(np.nan_to_num(scaled) * 255).astype(np.uint8)
    return np.ascontiguousarray(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)[:, :, ::-1])


def heatmap(image: np.ndarray, similarity: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Similarity (``h x w``, cosine in [-1, 1]) over the frame in :data:`SIMILARITY_COLORMAP`,
    RGB uint8; the scale is fixed (:data:`SIMILARITY_RANGE`) so heatmaps compare across frames."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got {image.shape}")
    resized = cv2.resize(np.asarray(similarity, np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 1.0 - alpha, similarity_colours(resized), alpha, 0.0)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint each object (label ``i`` > 0) in its own colour; background stays as it is."""
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels shape {labels.shape} does not match image size {image.shape[:2]}")
    colours = LABEL_COLOURS[(labels.astype(np.int64) - 1) % len(LABEL_COLOURS)]
    tinted = (image * (1.0 - alpha) + colours * alpha).astype(np.uint8)
    return np.where(labels[:, :, None] > 0, tinted, image)


OUTPUT_KINDS = ("composite", "mask", "heatmap", "overlay")


def render(
    image: np.ndarray, mask: np.ndarray, similarity: np.ndarray, labels: np.ndarray,
    kind: str = "composite", background: "str | Background" = "black", objects: int = 1,
) -> np.ndarray:
    """One output image for a frame and its segmentation.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        mask: ``H x W`` bool; similarity: ``h x w``; labels: ``H x W`` uint8.
        objects: how many objects were segmented (``mask``: one -> 0/255, several -> the label map).
        kind: ``composite`` (background replaced), ``mask`` (0/255, or a label map for several objects),
            ``heatmap`` (similarity over the frame), ``overlay`` (objects tinted by label).
    """
    if kind == "composite":
        return composite(image, mask, background)
    if kind == "mask":
        return mask_image(mask) if objects == 1 else mask_values(labels, objects)
    if kind == "heatmap":
        return heatmap(image, similarity)
    if kind == "overlay":
        return label_overlay(image, labels)
    raise ValueError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}; got {kind!r}")
