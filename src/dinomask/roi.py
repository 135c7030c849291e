"""Region of interest for video: after a confident mask, look only around the object.

The crop around the last mask (plus a margin) is mapped onto the patch grid like a whole
frame (short side = the resolution), so the object gets more patches than it would in
the full frame while the grid usually has fewer patches in all. When the mask is lost,
too small or too large, or every ``refresh`` frames, the next frame is processed whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class RoiSettings:
    """Attributes:
        enabled: use regions of interest on successive frames (video and live).
        margin: the crop extends the last mask's box by this fraction of its size on each side.
        min_area, max_area: a mask covering a fraction of the frame outside this range is
            not trusted for a crop (the next frame is processed whole).
        refresh: process a whole frame at least every this many frames, to find the object
            again if it has moved away or a second view appears.
        crop_tokens: ``budget``: the crop gets the whole token budget, so the object gets more
            patches (finer masks, for files); ``scale``: the crop keeps the whole frame's scale, so
            it gets fewer patches and the key costs less (sooner keys, for a camera's clock).
    """

    enabled: bool = False
    margin: float = 0.3
    min_area: float = 0.002
    max_area: float = 0.4
    refresh: int = 15
    crop_tokens: str = "budget"

    def __post_init__(self) -> None:
        if self.margin < 0 or not 0 <= self.min_area < self.max_area <= 1 or self.refresh < 1:
            raise ValueError(f"invalid region-of-interest settings: {self}")
        if self.crop_tokens not in ("budget", "scale"):
            raise ValueError(f"crop_tokens must be budget or scale, got {self.crop_tokens!r}")


Box = tuple[int, int, int, int]  # y0, y1, x0, x1 in frame pixels


def next_box(mask: np.ndarray, settings: RoiSettings, min_side: int) -> Box | None:
    """The crop for the next frame from this frame's mask, or None to process it whole."""
    area = float(mask.mean())
    if not settings.min_area <= area <= settings.max_area:
        return None
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pad_y = int((y1 - y0) * settings.margin) + min_side // 2
    pad_x = int((x1 - x0) * settings.margin) + min_side // 2
    y0, y1 = max(0, y0 - pad_y), min(height, y1 + pad_y)
    x0, x1 = max(0, x0 - pad_x), min(width, x1 + pad_x)
    if (y1 - y0) * (x1 - x0) > 0.8 * height * width:
        return None  # hardly smaller than the frame: no gain
    return int(y0), int(y1), int(x0), int(x1)


def paste_grid(values: np.ndarray, box: Box, frame_size: tuple[int, int], grid: tuple[int, int], fill: float) -> np.ndarray:
    """A crop's ``h' x w'`` map placed into the full frame's ``h x w`` grid (``fill`` outside the crop)."""
    height, width = frame_size
    out = np.full(grid, fill, np.float32)
    y0, y1, x0, x1 = box
    gy0, gy1 = int(np.floor(y0 / height * grid[0])), int(np.ceil(y1 / height * grid[0]))
    gx0, gx1 = int(np.floor(x0 / width * grid[1])), int(np.ceil(x1 / width * grid[1]))
    out[gy0:gy1, gx0:gx1] = cv2.resize(values.astype(np.float32), (gx1 - gx0, gy1 - gy0), interpolation=cv2.INTER_AREA)
    return out
