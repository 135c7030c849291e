"""Similarity maps -> decisions -> full-size masks: thresholds, upsampling, refinement, time.

A *score map* is ``h x w`` float32 on the patch grid; the mask is ``score > threshold``.
For a fixed, Otsu or relative threshold the score is the object similarity itself; in
the foreground-vs-background rule the score is ``sim_object - sim_background`` and the
threshold is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

UpsampleMode = Literal["nearest", "bilinear", "bicubic", "bilateral"]
UPSAMPLE_MODES: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "bilateral")
#: Modes that were removed, and why (named in the error a user gets for them).
REMOVED_UPSAMPLE_MODES = {
    "guided": "'guided' was removed in 0.2.0: with the ground truth as the patch classifier it scored below "
              "bilinear (J 0.932 against 0.954 on davis-mini; 0.829 against 0.860 on 20 DAVIS-2016 val clips). "
              "Use bicubic (the default)",
}

#: ``bilateral``: the joint bilateral filter runs at this fraction of the frame's size, with this
#: neighbourhood (px at that size) and these colour (0-255) and space (px) sigmas, on pixels
#: within ``BAND_CELLS`` of a patch of the bicubic mask's edge.
BILATERAL_SCALE = 0.5
BILATERAL_DIAMETER = 7
BILATERAL_SIGMA_COLOR = 25.0
BILATERAL_SIGMA_SPACE = 4.0
BAND_CELLS = 0.25


@dataclass(frozen=True)
class ThresholdRule:
    """A parsed threshold: ``0.5`` (fixed), ``otsu``, ``relative:0.8`` or ``fg-vs-bg``.

    Attributes:
        kind: ``fixed``, ``otsu``, ``relative`` or ``fg-vs-bg``.
        value: the fixed threshold, or the fraction of the best match for ``relative``.
    """

    kind: str
    value: float = 0.0

    @classmethod
    def parse(cls, text: "str | float | ThresholdRule") -> "ThresholdRule":
        if isinstance(text, ThresholdRule):
            return text
        if isinstance(text, (int, float)):
            return cls._fixed(float(text))
        text = str(text).strip().lower()
        if text in ("otsu", "fg-vs-bg"):
            return cls(text)
        if text.startswith("relative:"):
            fraction = _as_float(text.split(":", 1)[1], text)
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"relative threshold fraction must be in (0, 1], got {fraction}")
            return cls("relative", fraction)
        return cls._fixed(_as_float(text, text))

    @classmethod
    def _fixed(cls, value: float) -> "ThresholdRule":
        if not -1.0 < value < 1.0:
            raise ValueError(
                f"a fixed threshold is a cosine similarity strictly between -1 and 1 (at -1 or 1 every "
                f"patch passes or fails, so it would decide nothing), got {value}"
            )
        return cls("fixed", value)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.value:g}"
        if self.kind == "relative":
            return f"relative:{self.value:g}"
        return self.kind


def _as_float(text: str, whole: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"threshold must be a number in [-1, 1], 'otsu', 'relative:F' or 'fg-vs-bg'; got {whole!r}"
        ) from None


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of a set of similarities (any shape), via OpenCV on 256 bins.

    A constant map has no split; its value is returned, so nothing exceeds it.
    """
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        return high
    scaled = np.round((values - low) / (high - low) * 255).astype(np.uint8).reshape(-1, 1)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # cv2 keeps pixels > level; map the bin edge back to similarity units.
    return low + (level + 0.5) / 255.0 * (high - low)


def apply_threshold(similarity: np.ndarray, rule: ThresholdRule) -> float:
    """The threshold value the rule gives for this ``h x w`` similarity map."""
    if rule.kind == "fixed":
        return rule.value
    if rule.kind == "otsu":
        return otsu_threshold(similarity)
    if rule.kind == "relative":
        return rule.value * float(similarity.max())
    if rule.kind == "fg-vs-bg":
        return 0.0
    raise ValueError(f"unknown threshold kind {rule.kind!r}")


def upsample_score(score: np.ndarray, size: tuple[int, int], mode: UpsampleMode,
                   image: np.ndarray | None = None) -> np.ndarray:
    """Decision score on the grid (``h x w``, > 0 = object) -> ``H x W`` float32 at frame size.

    * ``nearest``: blocky nearest-neighbour upsampling, so ``> 0`` gives exactly the
      coarse mask's blocks (the method as written);
    * ``bilinear``: the soft score upsampled bilinearly before it is thresholded;
    * ``bicubic`` (the default): bicubically, which places the edge between two patches
      closer to where their scores say it is (with the ground truth as the patch classifier:
      J 0.962 against bilinear's 0.954 on davis-mini, for about a millisecond);
    * ``bilateral``: bicubic, then on the band around its edge a joint bilateral filter guided
      by the frame's colours (``image``, ``H x W x 3`` uint8), so the edge moves to the
      object's colour edge (J 0.966 there; at 854x480 on 2 cores about 7 ms, 23 ms when the
      band covers most of the frame).

    An edge-aware guided filter was removed: measured with the ground truth as the patch
    classifier it made masks worse than bilinear (see :data:`REMOVED_UPSAMPLE_MODES`).
    """
    height, width = size
    score = score.astype(np.float32)
    if mode == "nearest":
        return cv2.resize(score, (width, height), interpolation=cv2.INTER_NEAREST)
    if mode == "bilinear":
        return cv2.resize(score, (width, height), interpolation=cv2.INTER_LINEAR)
    if mode in ("bicubic", "bilateral"):
        soft = cv2.resize(score, (width, height), interpolation=cv2.INTER_CUBIC)
        if mode == "bicubic":
            return soft
        if image is None or image.shape[:2] != (height, width):
            raise ValueError(f"bilateral upsampling needs the {height} x {width} frame as its guide, got "
                             f"{None if image is None else image.shape}")
        return refine_edge_band(soft, image, cell=height / score.shape[0])
    if mode in REMOVED_UPSAMPLE_MODES:
        raise ValueError(REMOVED_UPSAMPLE_MODES[mode])
    raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}; got {mode!r}")


def refine_edge_band(soft: np.ndarray, image: np.ndarray, cell: float) -> np.ndarray:
    """``soft`` (``H x W`` float32 score) with the pixels near its ``> 0`` edge replaced by a joint
    bilateral filter of it guided by ``image`` (``H x W x 3`` uint8), run at half size on the
    band's bounding box only (OpenCV's ``ximgproc.jointBilateralFilter``).

    Args:
        cell: a patch's size in frame pixels (the band is a quarter of it wide on each side).
    """
    radius = max(1, int(round(BAND_CELLS * cell)))
    inside = (soft > 0).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    band = cv2.dilate(inside, kernel).astype(bool) & ~cv2.erode(inside, kernel).astype(bool)
    if not band.any():
        return soft
    ys, xs = np.nonzero(band)
    margin = int(np.ceil(BILATERAL_DIAMETER / BILATERAL_SCALE))
    y0, y1 = max(0, ys.min() - margin), min(soft.shape[0], ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(soft.shape[1], xs.max() + 1 + margin)
    box_h, box_w = y1 - y0, x1 - x0
    small = (max(1, int(box_w * BILATERAL_SCALE)), max(1, int(box_h * BILATERAL_SCALE)))
    guide = cv2.resize(image[y0:y1, x0:x1], small, interpolation=cv2.INTER_AREA).astype(np.float32)
    values = cv2.resize(soft[y0:y1, x0:x1], small, interpolation=cv2.INTER_AREA)
    filtered = cv2.ximgproc.jointBilateralFilter(guide, values, BILATERAL_DIAMETER, BILATERAL_SIGMA_COLOR,
                                                 BILATERAL_SIGMA_SPACE)
    out = soft.copy()
    region = out[y0:y1, x0:x1]
    region[band[y0:y1, x0:x1]] = cv2.resize(filtered, (box_w, box_h), interpolation=cv2.INTER_LINEAR)[band[y0:y1, x0:x1]]
    return out


def owners(shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's object with the largest share (``1..K``, uint8; ties to the first) and that
    share, from ``K x H x W`` shares. One elementwise pass an object: numpy's ``argmax`` over the
    first axis, with ``np.where`` on its int64 result, took 11 ms for two objects at 1708 x 480 on
    the build machine, this about 1."""
    best = np.array(shares[0], np.float32)
    owner = np.ones(best.shape, np.uint8)
    for k in range(1, len(shares)):
        better = shares[k] > best
        np.copyto(owner, np.uint8(k + 1), where=better)
        np.maximum(best, shares[k], out=best)
    return owner, best


def nearest_object(shares: np.ndarray) -> np.ndarray:
    """For every pixel, the object whose nearest claimed pixel is closest.

    Args:
        shares: ``K x H x W`` float, each object's share of each pixel (> 0 where it claims it;
            where several do, the largest share wins).

    Returns:
        ``H x W`` uint8, ``1..K`` (``0`` everywhere when no object claims a pixel): a Voronoi map of
        the claimed pixels (OpenCV's distance transform, L2 with a 3 x 3 mask).
    """
    owner, best = owners(shares)
    owner[best <= 0] = 0
    if not owner.any():
        return owner
    unclaimed = (owner == 0).astype(np.uint8)  # the transform measures to the nearest 0: the claimed pixels
    _, nearest = cv2.distanceTransformWithLabels(unclaimed, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    # DIST_LABEL_PIXEL numbers the zero pixels 1, 2, ... in row-major order, as np.nonzero lists them
    lut = np.concatenate([[0], owner[owner > 0]]).astype(np.uint8)
    return lut[nearest]


def split_among(mask: np.ndarray, shares: np.ndarray, coarse: np.ndarray | None = None) -> np.ndarray:
    """Labels for a mask made apart from the objects' shares (several objects).

    A pixel of ``mask`` goes to the object with the largest share there. A pixel that no object
    claims (the fringe of a mask coarser or smoother than the shares: a grid's score upsampled, an
    oracle's mask on a key's grid) goes to the nearest object that claims one, not to object 1.

    Args:
        mask: ``H x W`` bool.
        shares: ``K x H x W`` float, > 0 where object ``k`` claims a pixel.
        coarse: the same shares at a lower resolution (``K x h x w``), where the nearest object is
            found more cheaply (at 1708 x 480, 15 ms on the build machine; at a 160-row map, 1 ms);
            None: at ``H x W``.

    Returns:
        ``H x W`` uint8, ``k + 1`` for object ``k``, 0 off the mask.
    """
    labels, best = owners(shares)
    claimed = best > 0
    orphans = mask & ~claimed
    labels[~(mask & claimed)] = 0
    if orphans.any():
        nearest = nearest_object(shares if coarse is None else coarse)
        if nearest.shape != mask.shape:
            nearest = cv2.resize(nearest, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_NEAREST)
        np.copyto(labels, nearest, where=orphans)
    return labels


@dataclass(frozen=True)
class TemporalSettings:
    """What a video's past contributes to the current frame.

    Attributes:
        alpha: weight of the past score map (exponential moving average), in [0, 1);
            0 turns smoothing off.
        scene_cut: reset the smoothing when the cosine between this frame's and the last
            frame's mean patch feature drops below this (a cut, or the camera moved away).
        adapt: rate at which object prototypes follow the object's confident patches
            (0 = never), for slow changes of light and view. Confident patches are the
            interior of the object mask (object patches whose 8 neighbours are object too).
        max_drift: guard against drift: an update that would take a prototype further
            than this cosine distance from the reference's own prototype is refused.
    """

    alpha: float = 0.0
    scene_cut: float = 0.8
    adapt: float = 0.0
    max_drift: float = 0.15

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"temporal alpha must be in [0, 1), got {self.alpha}")
        if not 0.0 <= self.adapt < 1.0:
            raise ValueError(f"adapt rate must be in [0, 1), got {self.adapt}")
        if not 0.0 < self.max_drift <= 2.0:
            raise ValueError(f"max_drift is a cosine distance in (0, 2], got {self.max_drift}")


class TemporalSmoother:
    """Smooths successive score maps; resets on a scene change or a new grid size."""

    def __init__(self, settings: TemporalSettings):
        self.settings = settings
        self._state: np.ndarray | None = None
        self._descriptor: np.ndarray | None = None
        self.resets = 0

    def reset(self) -> None:
        self._state = None
        self._descriptor = None

    def update(self, score: np.ndarray, descriptor: np.ndarray) -> tuple[np.ndarray, bool]:
        """Feed one ``... x h x w`` score map and a unit global descriptor of the frame.

        Returns:
            The smoothed map and whether this frame started a new scene.
        """
        if self.settings.alpha == 0.0:
            return score, False
        cut = (
            self._state is None
            or self._state.shape != score.shape
            or float(np.dot(descriptor, self._descriptor)) < self.settings.scene_cut
        )
        if cut:
            if self._state is not None:
                self.resets += 1
            self._state = score.astype(np.float32).copy()
        else:
            a = self.settings.alpha
            self._state = a * self._state + (1.0 - a) * score
        self._descriptor = descriptor
        return self._state.copy(), cut
