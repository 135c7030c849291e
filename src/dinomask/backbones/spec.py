"""What a backbone is to the rest of dinomask: its spec and its named outputs (no torch at import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What travels with a set of weights and must match between reference and frame.

    Attributes:
        name: the source the user gave (short name, hub id or path).
        patch_size: side of one patch in pixels (14 for DINOv2, 16 for DINOv3).
        mean, std: per-channel RGB normalisation for inputs in [0, 1].
        feature_dim: C, the size of one patch / CLS feature.
        num_register_tokens: register tokens between CLS and the patches (0 or 4).
        family: ``dinov2`` or ``dinov3`` (how positions are encoded: interpolated table or RoPE).
        fingerprint: short hash of architecture and weights; two backbones with the
            same fingerprint produce the same features.
    """

    name: str
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    num_register_tokens: int
    fingerprint: str
    family: str = "dinov2"


@dataclass(frozen=True)
class BackboneFeatures:
    """Named outputs of one forward pass (float32 on the backbone's device).

    Attributes:
        cls: B x C, the final-layer-normed CLS token.
        patches: B x h x w x C, the final-layer-normed patch tokens on the patch grid.
    """

    cls: "torch.Tensor"
    patches: "torch.Tensor"
