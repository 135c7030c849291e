"""Frames -> normalised DINOv2 features on the patch grid (preprocess + backbone, once)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dinomask.backbones import Backbone
from dinomask.preprocess import InputGeometry, to_pixel_values


@dataclass(frozen=True)
class FrameFeatures:
    """Features of one frame, L2-normalised, float32 numpy.

    Attributes:
        cls: ``C``, the CLS token.
        patches: ``h x w x C``, one unit vector per patch.
        image_size: ``(H, W)`` of the frame they came from.
    """

    cls: np.ndarray
    patches: np.ndarray
    image_size: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        return self.patches.shape[0], self.patches.shape[1]


def extract_features(
    backbone: Backbone, images: list[np.ndarray], geometry: InputGeometry,
    timings: dict[str, float] | None = None,
) -> list[FrameFeatures]:
    """Run the backbone on RGB uint8 images that share one size.

    Args:
        images: ``H x W x 3`` uint8 RGB arrays, all the same ``H x W``.
        geometry: how to map them onto the patch grid.
        timings: if given, seconds spent are added under ``preprocess`` and ``backbone``.

    Returns:
        One :class:`FrameFeatures` per image, in order.
    """
    if not images:
        return []
    size = images[0].shape[:2]
    if any(image.shape[:2] != size for image in images):
        raise ValueError(
            "expected images of one size in a batch, got " + ", ".join(str(i.shape[:2]) for i in images)
        )
    grid = geometry.grid(size[0], size[1], backbone.spec.patch_size)
    start = time.perf_counter()
    pixels = to_pixel_values(images, backbone.spec, grid)
    middle = time.perf_counter()
    output = backbone(pixels)
    cls = output.cls / output.cls.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    patches = output.patches / output.patches.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cls_np = cls.cpu().numpy().astype(np.float32)
    patches_np = patches.cpu().numpy().astype(np.float32)
    if timings is not None:
        timings["preprocess"] = timings.get("preprocess", 0.0) + middle - start
        timings["backbone"] = timings.get("backbone", 0.0) + time.perf_counter() - middle
    return [FrameFeatures(cls_np[i], patches_np[i], (int(size[0]), int(size[1]))) for i in range(len(images))]
