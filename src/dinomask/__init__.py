"""dinomask: one-shot, training-free background removal for live camera frames with DINOv2.

Public API::

    from dinomask import load_backbone, Reference, Segmenter, remove_background

    backbone = load_backbone("dinov2_vits14_reg")            # or a local dir / .pth / .safetensors
    reference = Reference.from_images(backbone, ["object_on_black.png"])
    segmenter = Segmenter(backbone, reference)                # method="paper" for the method as written
    result = segmenter.predict(frame)                          # H x W x 3 uint8 RGB
    clean = remove_background(frame, result, background="black")

Importing this package loads no model and does no work.
"""

from dinomask._version import __version__
from dinomask.backbones import BACKBONES, Backbone, BackboneSpec, load_backbone
from dinomask.composite import Background, composite
from dinomask.errors import (
    DinomaskError,
    ImageReadError,
    InvalidReferenceError,
    ModelNotFoundError,
    ReferenceMismatchError,
    SourceError,
)
from dinomask.preprocess import InputGeometry, load_image
from dinomask.reference import Reference, ReferenceSettings
from dinomask.refine import RefineSettings, SamRefiner
from dinomask.segmenter import SegmentationResult, Segmenter, SegmenterConfig


def remove_background(frame, result: SegmentationResult, background: "str | Background" = "black"):
    """Apply a result's mask to its frame: ``H x W x 3`` RGB (or RGBA for ``transparent``)."""
    return composite(load_image(frame), result.mask, background)


__all__ = [
    "BACKBONES", "Backbone", "BackboneSpec", "Background", "DinomaskError", "ImageReadError",
    "InputGeometry", "InvalidReferenceError", "ModelNotFoundError", "Reference",
    "ReferenceMismatchError", "ReferenceSettings", "RefineSettings", "SamRefiner", "SegmentationResult", "Segmenter",
    "SegmenterConfig", "SourceError", "__version__", "composite", "load_backbone",
    "remove_background",
]
