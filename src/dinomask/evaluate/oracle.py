"""The oracle: the ground truth stands in for a perfect patch classifier.

The ground truth averaged onto a setting's own grid (the share of each patch that is the
object) minus 0.5 replaces the decision score; the setting's own upsampling, region of
interest and refiner then make the mask. What this mask loses is lost to the grid and the
refinement (the setting's ceiling); what the model loses beyond it, to the features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dinomask.postprocess import upsample_score
from dinomask.preprocess import patch_coverage
from dinomask.refine import prompts_from_score
from dinomask.segmenter import SegmenterConfig


@dataclass(frozen=True)
class OracleFrame:
    """Attributes:
        mask: ``H x W`` bool, the setting's ceiling mask for the frame.
        patches: patches of the grid the score was made on (the crop's with a region of interest).
    """

    mask: np.ndarray
    patches: int


def oracle_frame(image: np.ndarray, truth: np.ndarray, config: SegmenterConfig, patch: int,
                 box: tuple[int, int, int, int] | None = None, refiner=None,
                 grid: tuple[int, int] | None = None) -> OracleFrame:
    """The ceiling of ``config`` on one frame.

    Args:
        image: ``H x W x 3`` uint8 RGB (the refiner looks at it).
        truth: ``H x W`` bool ground truth.
        config: the setting (its grid, upsampling and refiner prompts).
        patch: the backbone's patch size in px.
        box: ``(y0, y1, x0, x1)`` crop the setting processed this frame in (region of
            interest), or None for the whole frame.
        refiner: a :class:`~dinomask.refine.SamRefiner` to prompt with the oracle's score, or None.
        grid: the patch grid ``(h, w)`` the setting really processed the crop (or frame) on, where
            it is not the configured budget's (a search key's coarse grid, a crop at the frame's
            scale: the key's :attr:`~dinomask.segmenter.KeyInfo.grids`); None: ``config``'s grid.
    """
    y0, y1, x0, x1 = box if box is not None else (0, truth.shape[0], 0, truth.shape[1])
    crop, crop_truth = image[y0:y1, x0:x1], truth[y0:y1, x0:x1]
    grid = tuple(grid) if grid is not None else config.geometry.grid(*crop_truth.shape, patch)
    score = patch_coverage(crop_truth, grid) - 0.5
    mask = np.zeros(truth.shape, bool)
    if refiner is not None:
        prompts = prompts_from_score(score, crop_truth.shape, config.refine)
        if prompts is not None:
            mask[y0:y1, x0:x1] = refiner.refine(np.ascontiguousarray(crop), [prompts])[0]
    else:
        mask[y0:y1, x0:x1] = upsample_score(score, crop_truth.shape, config.upsample, np.ascontiguousarray(crop)) > 0
    return OracleFrame(mask, grid[0] * grid[1])
