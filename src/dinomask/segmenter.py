"""Segmenter: set the reference once, then ``predict(frame)`` for every frame.

Per frame: preprocess -> backbone -> unit patch features (``h x w x C``) -> cosine
similarity to the object's prototypes (best match) -> decision score -> coarse mask on
the grid -> mask at the frame's size.

The method as written is the preset ``paper``: CLS prototype, fixed threshold 0.5,
nearest upsampling, 518 x 518 squashed input. ``dinomask`` (the default) keeps the
aspect ratio, uses k-means patch prototypes, an adaptive threshold, the reference's
own background where it has one, and bicubic upsampling of the soft score.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import cv2
import numpy as np

from dinomask.backbones import Backbone
from dinomask.errors import InvalidReferenceError
from dinomask.features import FrameFeatures, extract_features
from dinomask.keyframes import KeyframeSettings, ScorePropagator
from dinomask.postprocess import (
    UPSAMPLE_MODES,
    REMOVED_UPSAMPLE_MODES,
    TemporalSettings,
    TemporalSmoother,
    ThresholdRule,
    UpsampleMode,
    apply_threshold,
    otsu_threshold,
    owners,
    split_among,
    upsample_score,
)
from dinomask.preprocess import ColorOrder, FrameLike, InputGeometry, load_image
from dinomask.prototypes import best_match, kmeans_prototypes, l2_normalize
from dinomask.refine import RefineSettings, SamRefiner, prompts_from_score
from dinomask.reference import PROTOTYPE_MODES, PrototypeMode, Reference
from dinomask.roi import Box, RoiSettings, next_box, paste_grid

BackgroundSource = Literal["none", "reference", "frame", "both"]
#: The presence rule (see :func:`presence_floor`): the object's own level is the similarity that all but
#: this share (in %) of its reference patches reach, and the floor lies :data:`PRESENCE_SHARE` of the
#: way from unrelated content (cosine 0) up to it.
PRESENCE_PERCENTILE = 5.0
PRESENCE_SHARE = 0.5
PRESENCE_RULES: tuple[str, ...] = ("reference", "none")
BACKGROUND_SOURCES: tuple[str, ...] = ("none", "reference", "frame", "both")
METHODS: tuple[str, ...] = ("dinomask", "paper")


@dataclass(frozen=True)
class SegmenterConfig:
    """Every choice the segmenter makes, in one place. See :meth:`preset`.

    Attributes:
        method: name of the preset this came from (reported in results and evals).
        prototype: ``cls`` (method as written), ``patch-mean`` or ``kmeans``.
        k: number of k-means object prototypes.
        threshold: ``0.5`` or any fixed cosine, ``otsu``, ``relative:F`` (F times the
            best match in the frame), ``fg-vs-bg``, or ``auto`` (``fg-vs-bg`` when
            background prototypes are in use, else ``otsu``).
        background: where background prototypes come from: ``none``; ``reference``
            (the reference photo's real scene, when it was given with a mask);
            ``frame`` (confidently-background patches of the current frame); ``both``.
        background_k: k-means prototypes per background source.
        upsample: ``nearest`` (blocks), ``bilinear``, ``bicubic`` (the soft score; the default) or
            ``bilateral`` (bicubic, then edge-aware on the band around the edge): see
            :func:`~dinomask.postprocess.upsample_score`.
        geometry: how frames map onto the patch grid.
        temporal: score smoothing and prototype adaptation across frames (video and live).
        roi: region of interest on successive frames (video and live).
        keyframes: run the backbone on keyframes only and carry the score between them
            by optical flow (video and live; off by default, and in ``paper``).
        refine: a promptable refiner (SAM family) after the decision, prompted by the score;
            needs ``Segmenter(..., refiner=...)``. Off by default.
        presence: how a frame can say "no object here": ``reference`` (a patch must also reach a
            floor set by the object's own reference patches: see :func:`presence_floor`), ``none``
            (the threshold rule alone: Otsu and a relative threshold always find "an object"), or
            a fixed cosine.
    """

    method: str = "dinomask"
    prototype: PrototypeMode = "kmeans"
    k: int = 4
    threshold: str = "auto"
    background: BackgroundSource = "reference"
    background_k: int = 4
    upsample: UpsampleMode = "bicubic"
    geometry: InputGeometry = field(default_factory=InputGeometry)
    temporal: TemporalSettings = field(default_factory=TemporalSettings)
    roi: RoiSettings = field(default_factory=RoiSettings)
    keyframes: KeyframeSettings = field(default_factory=KeyframeSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    presence: str = "reference"

    def __post_init__(self) -> None:
        if str(self.presence) not in PRESENCE_RULES:
            try:
                value = float(self.presence)
            except ValueError:
                value = float("nan")
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"presence must be one of {', '.join(PRESENCE_RULES)} or a cosine in [-1, 1]; "
                                 f"got {self.presence!r}")
        if self.prototype not in PROTOTYPE_MODES:
            raise ValueError(f"prototype must be one of {', '.join(PROTOTYPE_MODES)}; got {self.prototype!r}")
        if self.background not in BACKGROUND_SOURCES:
            raise ValueError(f"background must be one of {', '.join(BACKGROUND_SOURCES)}; got {self.background!r}")
        if self.upsample in REMOVED_UPSAMPLE_MODES:
            raise ValueError(REMOVED_UPSAMPLE_MODES[self.upsample])
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}; got {self.upsample!r}")
        if self.k < 1 or self.background_k < 1:
            raise ValueError(f"k and background_k must be at least 1, got {self.k} and {self.background_k}")
        if str(self.threshold) != "auto":
            rule = ThresholdRule.parse(self.threshold)
            if rule.kind == "fg-vs-bg" and self.background == "none":
                raise ValueError("threshold 'fg-vs-bg' needs background prototypes; set background to reference, frame or both")

    @classmethod
    def preset(cls, method: str) -> "SegmenterConfig":
        """``paper``: the method as written. ``dinomask``: the improved default."""
        if method == "paper":
            return cls(
                method="paper", prototype="cls", threshold="0.5", background="none", upsample="nearest",
                geometry=InputGeometry(resolution=518, keep_aspect=False), presence="none",
            )
        if method == "dinomask":
            return cls()
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")

    def replace(self, **changes) -> "SegmenterConfig":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


#: The fewest patches a crop key is given (a 8 x 8 grid): below it an object has too few patches.
MIN_CROP_TOKENS = 64
#: On a camera's clock, a key with nothing to crop around (the mask is empty or smaller than the
#: region of interest's ``min_area``: the object was lost, left, or the scene was cut; not an object
#: too large to crop) searches the whole frame at this coarse budget, the rate controller's floor (a 15 x 27
#: grid, 32 px a patch at 854 x 480): finding the object again soon matters more than its edge, and
#: the crops that follow are finer. At the configured budget such a key cost 262 ms on the build
#: machine (six camera frames at 24 FPS) where crops cost a frame or less. After a scene cut every
#: other search key is instead a crop where the object was last seen (a cut back shows it there:
#: ``eval live --oracle --costs 262,22`` on cut scenarios, present live J 0.641 against 0.629 with
#: whole-frame searches only). Looking back where an object walked out of the view was tried too and
#: lost a little on the pan scenarios (re-acquire 10.3 frames against 10.0): not kept.
SEARCH_TOKENS = 405
#: With several objects on a camera's clock, one that is gone while another stays in view (the flow
#: lost a small, fast object; it left; it is hidden) is searched for in every key until it is found,
#: as a lone object is, at this many source pixels a patch: as finely as :data:`SEARCH_TOKENS` look
#: at an 854 x 480 frame (480 / 15 rows), whatever the frame's size (two views side by side at 405
#: tokens are 47 px a patch, more than a ball's width). On a frame larger than a lone object's search
#: (``SEARCH_TOKENS`` patches at this scale), the searches look in turn in a window that large around
#: where it was last seen (the others each in its own crop: 470-550 patches on two views side by
#: side, against 810 for the whole frame, which took 143 ms, 3.4 camera frames) and at the whole
#: frame. Two DAVIS clips side by side (``eval live --oracle --costs 262,22``, docs/speed.md): the
#: soccer ball beside parkour and beside the stroller 0.450 / 0.505 -> 0.482 / 0.529 live J (alone
#: 0.553), and on a machine twice as fast 0.547 / 0.570 -> 0.580 / 0.549 (alone 0.595), where every
#: other key searched the whole frame and the keys between cropped around all the objects.
SEARCH_SCALE_PX = 32


def _area(box: Box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def _at_scale(geometry: InputGeometry, size: tuple[int, int], scale: float) -> InputGeometry:
    """``geometry`` for a crop of ``size`` (H, W) at ``scale`` source pixels a patch (the whole frame's):
    as many patches as the scale gives it, at least :data:`MIN_CROP_TOKENS`, at most the budget."""
    tokens = math.ceil(size[0] / scale) * math.ceil(size[1] / scale)
    return dataclasses.replace(geometry, tokens=min(geometry.tokens, max(MIN_CROP_TOKENS, tokens)))


@dataclass(frozen=True)
class KeyInfo:
    """What one key cost and how fine it looked.

    Attributes:
        patches: patches the backbone processed (a crop's with a region of interest).
        scale_px: source pixels per patch side (the larger of the two axes): 480 px rows on a
            15-patch grid are 32 px a patch; a crop at the same grid is finer.
        grids: the patch grid ``(h, w)`` of each backbone pass, in order: one, or one per
            object's crop (``eval live --oracle`` puts the ground truth on the grids the key used).
    """

    patches: int
    scale_px: float
    grids: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, size: tuple[int, int], grid: tuple[int, int]) -> "KeyInfo":
        """From the processed image's ``(H, W)`` and its patch grid ``(h, w)``."""
        return cls(int(grid[0] * grid[1]), float(max(size[0] / grid[0], size[1] / grid[1])), ((int(grid[0]), int(grid[1])),))


@dataclass(frozen=True)
class SegmentationResult:
    """What :meth:`Segmenter.predict` returns for one frame.

    Attributes:
        similarity: ``h x w`` float32, best cosine of each patch to the object
            prototypes (max over objects when there are several).
        score: ``h x w`` float32 decision score; the object is where it is > 0.
        coarse_mask: ``h x w`` bool, ``score > 0``.
        mask: ``H x W`` bool at the frame's own size.
        labels: ``H x W`` uint8 label map: 0 background, ``i + 1`` for object ``i``.
        threshold: the similarity threshold applied, or ``None`` under ``fg-vs-bg``.
        rule: the threshold rule used (``0.5``, ``otsu``, ``relative:0.8``, ``fg-vs-bg``),
            with ``+bg`` when background prototypes also had to be beaten.
        object_names: labels of the objects, in label order.
        scene_cut: True when temporal smoothing was reset on this frame.
        roi: the crop ``(y0, y1, x0, x1)`` this frame was processed in, or None for the
            whole frame; ``similarity``, ``score`` and ``coarse_mask`` are then the crop's
            maps placed on the whole frame's grid.
        patches: patches the backbone processed for this frame (0 when carried by flow).
        keyframe: False when the backbone did not run on this frame and its maps were
            carried from the last keyframe by optical flow.
        refined: True when the refiner made ``mask`` and ``labels`` (prompted by ``score``).
        refine_skipped: why a segmenter with a refiner kept the unrefined mask on this frame
            (a frame the refiner cannot take, such as one a few pixels high), else None.
        crops: with several objects on a camera's clock, one crop ``(y0, y1, x0, x1)`` per object
            when each was processed in its own (object ``i`` is taken from crop ``i``; ``roi`` is
            then None), else empty.
    """

    similarity: np.ndarray
    score: np.ndarray
    coarse_mask: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    threshold: float | None
    rule: str
    object_names: tuple[str, ...] = ("object",)
    scene_cut: bool = False
    roi: tuple[int, int, int, int] | None = None
    patches: int = 0
    keyframe: bool = True
    refined: bool = False
    refine_skipped: str | None = None
    crops: tuple[tuple[int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        grid = self.similarity.shape
        if self.similarity.ndim != 2 or self.score.shape != grid or self.coarse_mask.shape != grid:
            raise ValueError(
                f"expected similarity, score and coarse_mask of one h x w shape, got "
                f"{self.similarity.shape}, {self.score.shape}, {self.coarse_mask.shape}"
            )
        if self.mask.ndim != 2 or self.labels.shape != self.mask.shape:
            raise ValueError(f"expected mask and labels of one H x W shape, got {self.mask.shape}, {self.labels.shape}")

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the patch grid."""
        return self.similarity.shape  # type: ignore[return-value]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frame."""
        return self.mask.shape  # type: ignore[return-value]


def presence_floor(reference: Reference, prototypes: np.ndarray, rule: str) -> float | None:
    """The similarity below which a patch is not the object, whatever the threshold rule says.

    ``reference``: halfway (:data:`PRESENCE_SHARE`) from cosine 0 up to the object's own level, the
    similarity to its prototypes that all but :data:`PRESENCE_PERCENTILE` % of its reference patches
    reach. The reason: Otsu (the rule for a photo painted black, white or transparent) splits every
    frame in two, and ``fg-vs-bg`` (a photo with a mask) only asks whether a patch is more like the
    object than like the reference's own background, so neither can say "no object in this frame".
    Self-supervised ViT features of unrelated content are near-orthogonal (cosine about 0), and the
    object's own patches set how alike the object is to itself; a patch no nearer the object than
    halfway between is not taken for it. A new view of the object scores below its own photo, which
    is why the floor is halfway and not at the object's level. ``none``: no floor. A number: that
    cosine. (How much of a real object this floor costs depends on the weights: measure it with
    ``dinomask eval masks --presence none`` beside the default.)
    """
    if rule == "none":
        return None
    if rule != "reference":
        return float(rule)
    own = best_match(reference.foreground[None], prototypes)[0]
    return PRESENCE_SHARE * max(0.0, float(np.percentile(own, PRESENCE_PERCENTILE)))


@dataclass
class _ObjectModel:
    name: str
    prototypes: np.ndarray
    background: np.ndarray
    original: np.ndarray | None = None  # the reference's own prototypes (the drift guard's anchor)
    floor: float | None = None  # the presence floor (see presence_floor)

    def __post_init__(self) -> None:
        if self.original is None:
            self.original = self.prototypes.copy()

    def adapt(self, confident: np.ndarray, rate: float, max_drift: float) -> int:
        """Move each prototype towards the mean of the confident patches nearest to it.

        Args:
            confident: ``N x C`` unit features of this frame's confident object patches.

        Returns:
            How many prototypes moved (updates past ``max_drift`` are refused).
        """
        nearest = np.argmax(confident @ self.prototypes.T, axis=1)
        moved = 0
        for index in range(len(self.prototypes)):
            members = confident[nearest == index]
            if len(members) == 0:
                continue
            target = l2_normalize(members.mean(axis=0, keepdims=True))[0]
            candidate = l2_normalize(((1 - rate) * self.prototypes[index] + rate * target)[None])[0]
            if 1.0 - float(candidate @ self.original[index]) <= max_drift:
                self.prototypes[index] = candidate
                moved += 1
        return moved


class Segmenter:
    """One-shot DINOv2 background removal.

    Example::

        backbone = load_backbone("dinov2_vits14_reg")
        reference = Reference.from_images(backbone, ["mug_on_black.png"])
        segmenter = Segmenter(backbone, reference)            # improved default
        paper = Segmenter(backbone, reference, method="paper")  # the method as written
        result = segmenter.predict(frame_rgb)                  # H x W x 3 uint8 RGB
        result.mask                                            # H x W bool

    Args:
        backbone: a loaded :class:`~dinomask.backbones.Backbone`.
        reference: one :class:`Reference`, or several (one per object, giving a label map).
        config: all settings; default is ``SegmenterConfig.preset(method)``.
        method: preset used when ``config`` is not given: ``dinomask`` or ``paper``.
        threshold: shortcut that overrides ``config.threshold`` (e.g. ``0.5``, ``"otsu"``).
        refiner: a loaded :class:`~dinomask.refine.SamRefiner`; the mask of every frame the
            backbone runs on is then the refiner's, prompted by the score (``config.refine``
            gives the prompts; it is switched to ``sam`` when it was ``none``).
    """

    def __init__(
        self,
        backbone: Backbone,
        reference: Reference | Sequence[Reference],
        config: SegmenterConfig | None = None,
        *,
        method: str = "dinomask",
        threshold: float | str | None = None,
        refiner: SamRefiner | None = None,
    ):
        config = config or SegmenterConfig.preset(method)
        if threshold is not None:
            config = config.replace(threshold=str(threshold))
        if refiner is not None and not config.refine.enabled:
            config = config.replace(refine=dataclasses.replace(config.refine, mode="sam"))
        if config.refine.enabled and refiner is None:
            raise ValueError(f"refine {config.refine.mode!r} needs a refiner: Segmenter(..., refiner=SamRefiner.load(path))")
        self.refiner = refiner
        self.backbone = backbone
        self.config = config
        self._smoother = TemporalSmoother(config.temporal)
        self._propagator = ScorePropagator(config.keyframes)
        #: frames segmented, and how many of them ran the backbone (the others were carried by flow)
        self.keyframe_stats = {"frames": 0, "keyframes": 0}
        self._objects: list[_ObjectModel] = []
        self.last_timings: dict[str, float] = {}
        #: milliseconds the refiner took on the last frame it ran on (0 without a refiner)
        self.last_refine_ms = 0.0
        self._roi_box: Box | None = None
        self._lost = True  # no object to crop around yet (a first key searches)
        self._last_box: Box | None = None  # the crop around the object when it was last seen
        self._labels: np.ndarray | None = None  # several objects: the last labels, for a crop each (_object_crops)
        self._look_back = False  # searches look where it was last seen too (after a scene cut)
        self._back_turn = False  # the next search key looks there
        self._missing = False  # several objects: one is gone while another is in view
        self._window_turn = False  # the next search for it looks around where it was last seen
        self._seen: dict[int, np.ndarray] = {}  # several objects: the labels each one was last seen in
        self._since_full = 0
        #: what the last key (:meth:`key`) cost: patches and source pixels per patch side
        self.last_key: KeyInfo | None = None
        #: frames, frames processed in a crop, patches processed, patches whole frames would have cost
        self.roi_stats = {"frames": 0, "roi_frames": 0, "patches": 0, "full_patches": 0}
        self.set_reference(reference)

    # ------------------------------------------------------------------ reference

    def set_reference(self, reference: Reference | Sequence[Reference]) -> None:
        """Compute prototypes once; later frames reuse them. Resets temporal state."""
        references = [reference] if isinstance(reference, Reference) else list(reference)
        if not references:
            raise InvalidReferenceError("expected at least one reference, got none")
        if len(references) > 255:
            raise InvalidReferenceError(f"at most 255 objects fit a uint8 label map, got {len(references)}")
        objects = []
        use_reference_bg = self.config.background in ("reference", "both")
        for reference in references:
            reference.check_backbone(self.backbone.spec, where=f"reference {reference.label!r}")
            background = (
                reference.background_prototypes(self.config.background_k)
                if use_reference_bg else np.zeros((0, reference.foreground.shape[1]), np.float32)
            )
            # taught clicks count whatever the settings: a positive is an object prototype, a
            # negative a background prototype
            prototypes = np.concatenate([reference.prototypes(self.config.prototype, self.config.k), reference.positives])
            background = np.concatenate([background, reference.negatives])
            floor = presence_floor(reference, prototypes, str(self.config.presence))
            objects.append(_ObjectModel(reference.label, prototypes, background, floor=floor))
        self._objects = objects
        self.references = tuple(references)
        self._smoother.reset()
        self._propagator.reset()  # scores carried by flow were made with the old reference

    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self._objects)

    def reset(self) -> None:
        """Forget temporal state, prototype adaptation and the region of interest (call between unrelated videos)."""
        self._smoother.reset()
        self._propagator.reset()
        self._roi_box = None
        self._lost = True
        self._last_box, self._look_back, self._back_turn = None, False, False
        self._labels = None
        self._missing = self._window_turn = False
        self._seen = {}
        self._since_full = 0
        for obj in self._objects:
            obj.prototypes = obj.original.copy()

    # ------------------------------------------------------------------ frames

    def predict(self, frame: FrameLike, *, color: ColorOrder = "rgb") -> SegmentationResult:
        """Segment one frame.

        Args:
            frame: path, PIL image, or uint8 array ``H x W x 3`` (``color`` says RGB or BGR).
        """
        return self.predict_batch([frame], color=color)[0]

    def predict_batch(self, frames: Sequence[FrameLike], *, color: ColorOrder = "rgb") -> list[SegmentationResult]:
        """Segment several frames; frames of one size share one backbone call.

        Temporal smoothing (if on) runs over them in the given order. Seconds spent per
        stage (``preprocess``, ``backbone``, ``postprocess``) are left in ``last_timings``.
        """
        timings: dict[str, float] = {}
        start = time.perf_counter()
        images = [load_image(frame, color=color) for frame in frames]
        timings["preprocess"] = time.perf_counter() - start
        if self.config.roi.enabled or self.config.keyframes.enabled:
            track = self._predict_keyframed if self.config.keyframes.enabled else self._roi_key
            results = [track(image, timings) for image in images]
            self.last_timings = timings
            return results
        features: list[FrameFeatures | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.shape[:2], []).append(index)
        for indices in by_size.values():
            for index, feats in zip(indices, extract_features(
                self.backbone, [images[i] for i in indices], self.config.geometry, timings
            )):
                features[index] = feats
        start = time.perf_counter()
        results = [self.decide(image, feats) for image, feats in zip(images, features)]
        timings["postprocess"] = time.perf_counter() - start
        self.last_timings = timings
        return results

    def _predict_keyframed(self, image: np.ndarray, timings: dict[str, float]) -> SegmentationResult:
        """One video frame: carried by optical flow from the last keyframe, or a new keyframe."""
        start = time.perf_counter()
        maps = self._propagator.step(image)
        timings["flow"] = timings.get("flow", 0.0) + time.perf_counter() - start
        self.keyframe_stats["frames"] += 1
        if maps is not None:
            start = time.perf_counter()
            result = self.carried_result(image, maps)
            self.follow(result.mask, result.labels)  # the next key's crop follows the carried mask
            timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - start
            return result
        result = self.key(image, timings)
        start = time.perf_counter()
        self._propagator.seed(image, self.carry_maps(result))  # grid-sized scores, frame-sized label shares
        self.keyframe_stats["keyframes"] += 1
        timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - start
        return result

    def key(self, image: np.ndarray, timings: dict[str, float] | None = None, *, follow: bool = True) -> SegmentationResult:
        """One keyframe: the backbone and the decision on ``image`` (``H x W x 3`` uint8 RGB),
        with the segmenter's temporal state; seconds per stage are added to ``timings``. With a
        region of interest, the key is made in the crop around the last mask (see :meth:`_roi_key`)
        and the next crop follows its mask, unless ``follow`` is False (the caller then calls
        :meth:`follow` with the mask it keeps: ``eval live --oracle`` keeps the ground truth's)."""
        timings = {} if timings is None else timings
        if self.config.roi.enabled:
            return self._roi_key(image, timings, follow)
        (features,) = extract_features(self.backbone, [image], self.config.geometry, timings)
        self.last_key = KeyInfo.of(image.shape[:2], features.patches.shape[:2])
        start = time.perf_counter()
        result = self.decide(image, features)
        timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - start
        return result

    def follow(self, mask: np.ndarray, labels: np.ndarray | None = None) -> None:
        """With a region of interest, the next key is made in the crop around ``mask`` (``H x W``
        bool): the last key's or a carried frame's. Without one, nothing happens. With several
        objects and their ``labels`` (``H x W`` uint8, ``i + 1`` for object ``i``), on a camera's
        clock each object gets a crop of its own when together they are less to see than the crop
        around all of them (see :meth:`_object_crops_key`)."""
        if not self.config.roi.enabled:
            return
        self._roi_box = next_box(mask, self.config.roi, 2 * self.backbone.spec.patch_size)
        self._lost = self._too_small(np.count_nonzero(mask), mask.size)  # gone, not merely too large to crop
        if not self._lost:
            self._last_box, self._look_back, self._back_turn = self._roi_box, False, False
        several = len(self._objects) > 1 and self.config.roi.crop_tokens == "scale"
        self._labels = labels if several and not self._lost else None  # its crops are found when a key needs them
        missing = False
        if self._labels is not None:
            for i in range(len(self._objects)):
                if self._too_small(np.count_nonzero(self._labels == i + 1), self._labels.size):
                    missing = True  # gone from the view, or too small to crop around
                else:
                    self._seen[i] = self._labels  # where a search for it looks first once it has gone
        if missing and not self._missing:
            self._window_turn = True  # one just went: search at once, around where it was first
        self._missing = missing

    def _too_small(self, pixels: int, size: int) -> bool:
        """Whether ``pixels`` of a ``size``-pixel frame are less than the region of interest's
        ``min_area``: what the loop counts as lost (it searches the whole frame), and on a camera's
        clock what it does not show (:meth:`carried_result`)."""
        return pixels < self.config.roi.min_area * size

    @property
    def key_follows_mask(self) -> bool:
        """Whether the next key's crop is around the mask of the frame before it (a region of
        interest around an object that is in view). The live loop then offers a frame to the key
        worker only once that frame's mask is made; any other key (the whole frame, a search, a look
        back where the object was last seen) needs nothing of the frame's mask, and is offered as
        soon as the frame arrives, a flow step sooner (:class:`~dinomask.async_keys.AsyncKeyStage`; on
        the cut scenarios a return is found in 3.3 frames, max 4, where it took 5.7 and 3.4, max 29 and 7:
        docs/speed.md)."""
        return (self.config.roi.enabled and not self._lost and self._since_full < self.config.roi.refresh
                and not self._missing)

    def _object_crops(self) -> tuple[Box, ...]:
        """A crop per object around the last labels followed, when together they are less to see than
        the crop around all of them (the whole frame when that is None); else empty."""
        labels = self._labels
        if labels is None:
            return ()
        min_side = 2 * self.backbone.spec.patch_size
        boxes = tuple(next_box(labels == i + 1, self.config.roi, min_side) for i in range(len(self._objects)))
        union = self._roi_box or (0, labels.shape[0], 0, labels.shape[1])
        return boxes if None not in boxes and sum(_area(b) for b in boxes) < _area(union) else ()

    def scene_cut(self) -> None:
        """The live loop found a scene cut (:class:`~dinomask.keyframes.FlowCarrier`): the object is
        lost, and the next key looks where it was last seen, then the whole frame, in turn (a cut
        back to the scene shows it there; a new scene costs one crop key in two)."""
        self._roi_box, self._lost = None, True
        self._look_back = self._back_turn = self._last_box is not None

    def carry_maps(self, result: SegmentationResult) -> list[np.ndarray]:
        """What flow carries from a keyframe: ``[score, similarity]`` on the grid, then with several
        objects each object's label share at the frame's size (see :meth:`carried_result`).

        A mask finer than the grid (refined, or made in a region of interest) is carried as
        itself: the score is then ``+1`` on the mask and ``-1`` off it, at the frame's size."""
        score = result.score
        if result.refined or result.roi is not None or result.crops:
            score = np.where(result.mask, 1.0, -1.0).astype(np.float32)
        maps = [score, result.similarity]
        if len(self._objects) > 1:
            maps += [(result.labels == i + 1).astype(np.float32) for i in range(len(self._objects))]
        return maps

    def carried_result(self, image: np.ndarray, maps: np.ndarray, keyframe: bool = False) -> SegmentationResult:
        """A result for ``image`` from maps carried by flow (:meth:`carry_maps`'s order, at any
        resolution): the mask is the carried score > 0, upsampled to the frame's size as the
        settings say (``nearest`` as ``bilinear``, ``bilateral`` as ``bicubic``).

        On a camera's clock (a region of interest at the frame's scale: ``live``, ``eval live``) a
        mask of less than the region of interest's ``min_area`` (0.2% of the frame) is shown empty:
        the loop counts the object as lost at that size and searches the whole frame for it, and what
        is left on screen is the sliver of an object that has left, carried by a key made while it was
        still in view. Oracle, ``--costs 262,22``: the pans' frames without the object showed a mask
        on 24.1% of them, now 3.7% (3x pans 26.7% -> 21.0%), live J 0.600 -> 0.607 (0.592 -> 0.605);
        cuts and the plain clips within 0.001 (docs/speed.md). Files (``auto`` keys) show every mask."""
        size = image.shape[:2]
        grid = self.config.geometry.grid(*size, self.backbone.spec.patch_size)
        on_grid = [cv2.resize(m, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) for m in maps[:2]]
        # carried maps are at the flow's resolution, not in patch blocks; the edge filter runs on keys only
        mode = {"nearest": "bilinear", "bilateral": "bicubic"}.get(self.config.upsample, self.config.upsample)
        mask = upsample_score(maps[0], size, mode) > 0
        if len(self._objects) > 1:
            shares = np.stack([upsample_score(m, size, "bilinear") for m in maps[2:]])
            # the mask's fringe that no share reaches goes to the nearest object (found on the carried maps)
            coarse = np.stack(maps[2:]) if len({m.shape for m in maps[2:]}) == 1 else None
            labels = split_among(mask, shares, coarse)
        else:
            labels = mask.astype(np.uint8)
        roi = self.config.roi
        shown = np.count_nonzero(mask)
        if roi.enabled and roi.crop_tokens == "scale" and shown and self._too_small(shown, mask.size):
            # on a camera's clock, less than min_area is what the loop counts as lost (it searches the
            # whole frame): the sliver of an object that has left is not shown
            mask = np.zeros_like(mask)
            labels = np.zeros_like(labels)
        return SegmentationResult(
            similarity=on_grid[1], score=on_grid[0], coarse_mask=on_grid[0] > 0, mask=mask, labels=labels,
            threshold=None, rule="carried by optical flow", object_names=self.object_names, patches=0,
            keyframe=keyframe,
        )

    def _roi_key(self, image: np.ndarray, timings: dict[str, float], follow: bool = True) -> SegmentationResult:
        """One backbone pass, in the last mask's region of interest when there is a trusted one
        (a whole frame at least every ``roi.refresh`` passes); the next crop follows this mask."""
        patch = self.backbone.spec.patch_size
        full_grid = self.config.geometry.grid(*image.shape[:2], patch)
        crops = self._object_crops() if self.key_follows_mask else ()
        if crops:
            return self._object_crops_key(image, crops, full_grid, timings, follow)
        box = self._roi_box if self._since_full < self.config.roi.refresh else None
        geometry = self.config.geometry
        search_missing = self._missing  # one of several is gone (SEARCH_SCALE_PX)
        if search_missing and not self._lost and self.config.roi.crop_tokens == "scale" and geometry.resolution is None:
            window_turn, self._window_turn = self._window_turn, not self._window_turn
            windowed = self._window_crops(image.shape[:2]) if window_turn else None
            if windowed is not None:  # around where it was last seen, the others each in its own crop
                scale = KeyInfo.of(image.shape[:2], full_grid).scale_px
                scales = tuple(SEARCH_SCALE_PX if gone else scale for _, gone in windowed)
                return self._object_crops_key(image, tuple(crop for crop, _ in windowed), full_grid, timings, follow, scales)
        if (self._lost or search_missing) and self.config.roi.crop_tokens == "scale" and geometry.resolution is None:
            # nothing to crop around: search the whole frame, coarsely (see SEARCH_TOKENS), and after a
            # scene cut in turn where the object was last seen, as a crop key would have looked
            box = None
            if self._lost:
                box = self._last_box if self._back_turn else None
                self._back_turn = self._look_back and not self._back_turn
            if box is None:
                tokens = SEARCH_TOKENS
                if search_missing:
                    tokens = math.ceil(image.shape[0] / SEARCH_SCALE_PX) * math.ceil(image.shape[1] / SEARCH_SCALE_PX)
                geometry = dataclasses.replace(geometry, tokens=min(geometry.tokens, tokens))
                full_grid = geometry.grid(*image.shape[:2], patch)
        crop = image if box is None else np.ascontiguousarray(image[box[0]:box[1], box[2]:box[3]])
        if box is not None and self.config.roi.crop_tokens == "scale" and geometry.resolution is None:
            # the crop at the whole frame's scale: fewer patches, a cheaper key (live on a camera's clock)
            geometry = _at_scale(geometry, crop.shape[:2], KeyInfo.of(image.shape[:2], full_grid).scale_px)
        (features,) = extract_features(self.backbone, [crop], geometry, timings)
        self.last_key = KeyInfo.of(crop.shape[:2], features.patches.shape[:2])
        start = time.perf_counter()
        result = self.decide(crop, features)
        if box is not None:
            mask = np.zeros(image.shape[:2], bool)
            mask[box[0]:box[1], box[2]:box[3]] = result.mask
            labels = np.zeros(image.shape[:2], np.uint8)
            labels[box[0]:box[1], box[2]:box[3]] = result.labels
            similarity = paste_grid(result.similarity, box, image.shape[:2], full_grid, -1.0)
            score = paste_grid(result.score, box, image.shape[:2], full_grid, -1.0)
            result = SegmentationResult(similarity, score, score > 0, mask, labels, result.threshold, result.rule,
                                        result.object_names, result.scene_cut, box, features.patches.shape[0] * features.patches.shape[1],
                                        refined=result.refined, refine_skipped=result.refine_skipped)
        else:
            result = dataclasses.replace(result, patches=full_grid[0] * full_grid[1])
        self._keyed(result, full_grid, box is not None, follow)
        timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - start
        return result

    def _window_crops(self, size: tuple[int, int]) -> list[tuple[Box, bool]] | None:
        """Several objects, one or more gone: for each object ``(box, gone)``, the crop around it when
        in view, or when gone the search window around where it was last seen; None when the frame is
        no larger than a window, a gone object was never seen or one in view is too large to crop
        around (the whole frame is searched instead). A window is what a lone object's search looks
        at, :data:`SEARCH_TOKENS` patches at :data:`SEARCH_SCALE_PX` (414,720 pixels: 480 x 864 on a
        frame 480 rows high, at most square on a taller one), centred on where the object was last
        seen, inside the frame."""
        height, width = size
        area = SEARCH_TOKENS * SEARCH_SCALE_PX ** 2
        if height * width <= area or self._labels is None or self._labels.shape != size:
            return None
        win_h = min(height, math.isqrt(area))
        win_w = min(width, area // win_h)
        crops: list[tuple[Box, bool]] = []
        for i in range(len(self._objects)):
            member = self._labels == i + 1
            if not self._too_small(np.count_nonzero(member), member.size):
                box = next_box(member, self.config.roi, 2 * self.backbone.spec.patch_size)
                if box is None:
                    return None
                crops.append((box, False))
                continue
            seen = self._seen.get(i)
            last = None if seen is None or seen.shape != size else seen == i + 1
            if last is None or not last.any():
                return None
            x, y, w, h = cv2.boundingRect(last.view(np.uint8))
            top = int(np.clip(y + h // 2 - win_h // 2, 0, height - win_h))
            left = int(np.clip(x + w // 2 - win_w // 2, 0, width - win_w))
            crops.append(((top, top + win_h, left, left + win_w), True))
        return crops

    def _object_crops_key(self, image: np.ndarray, boxes: tuple[Box, ...], full_grid: tuple[int, int],
                          timings: dict[str, float], follow: bool,
                          scales: tuple[float, ...] | None = None) -> SegmentationResult:
        """Several objects apart on a camera's clock: one key, a backbone pass on each object's own crop
        at the whole frame's scale, or at ``scales`` (one per crop; object ``i`` is taken from crop
        ``i``). The crop around all of them would hold the frame between them too: side by side it is
        the whole frame, and its patches coarser at the same cost (two DAVIS clips side by side: see
        docs/speed.md). A search for a gone one gives it a window (:meth:`_window_crops`)."""
        size = image.shape[:2]
        scale = KeyInfo.of(size, full_grid).scale_px
        labels = np.zeros(size, np.uint8)
        similarity = np.full(full_grid, -1.0, np.float32)
        score = np.full(full_grid, -1.0, np.float32)
        patches, decided, grids = 0, None, []
        for i, box in enumerate(boxes):
            crop = np.ascontiguousarray(image[box[0]:box[1], box[2]:box[3]])
            at = scale if scales is None else scales[i]
            (features,) = extract_features(self.backbone, [crop], _at_scale(self.config.geometry, crop.shape[:2], at), timings)
            start = time.perf_counter()
            decided = self.decide(crop, features)
            region = labels[box[0]:box[1], box[2]:box[3]]
            region[decided.labels == i + 1] = i + 1
            similarity = np.maximum(similarity, paste_grid(decided.similarity, box, size, full_grid, -1.0))
            score = np.maximum(score, paste_grid(decided.score, box, size, full_grid, -1.0))
            patches += features.patches.shape[0] * features.patches.shape[1]
            grids.append(tuple(int(n) for n in features.patches.shape[:2]))
            timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - start
        self.last_key = KeyInfo(patches, scale, tuple(grids))
        result = SegmentationResult(similarity, score, score > 0, labels > 0, labels, decided.threshold, decided.rule,
                                    decided.object_names, decided.scene_cut, None, patches, crops=boxes)
        self._keyed(result, full_grid, True, follow)
        return result

    def _keyed(self, result: SegmentationResult, full_grid: tuple[int, int], cropped: bool, follow: bool) -> None:
        """After a key with a region of interest: a whole frame restarts the count to the next one, the
        next crop follows this mask (or a search starts when the object is gone), the stats count it."""
        self._since_full = self._since_full + 1 if cropped else 0
        if follow:
            self.follow(result.mask, result.labels)
        self.roi_stats["frames"] += 1
        self.roi_stats["roi_frames"] += cropped
        self.roi_stats["patches"] += result.patches
        self.roi_stats["full_patches"] += full_grid[0] * full_grid[1]

    def similarity_maps(self, features: FrameFeatures) -> tuple[np.ndarray, np.ndarray | None]:
        """Object similarity ``n_objects x h x w`` and background similarity (same shape, or None)."""
        patches = features.patches
        similarity = np.stack([best_match(patches, o.prototypes) for o in self._objects])
        bg_sources = []
        if self.config.background in ("frame", "both"):
            frame_bg = self._frame_background(patches, similarity.max(axis=0))
            if frame_bg is not None:
                bg_sources.append(best_match(patches, frame_bg))
        background = []
        for obj in self._objects:
            maps = list(bg_sources)
            if len(obj.background):
                maps.append(best_match(patches, obj.background))
            background.append(np.max(np.stack(maps), axis=0) if maps else None)
        if all(b is None for b in background):
            return similarity, None
        filled = [b if b is not None else np.full(patches.shape[:2], -1.0, np.float32) for b in background]
        return similarity, np.stack(filled)

    def _frame_background(self, patches: np.ndarray, similarity: np.ndarray) -> np.ndarray | None:
        """k-means prototypes of the frame's confidently-background patches (below Otsu)."""
        low = similarity < otsu_threshold(similarity)
        if low.sum() < self.config.background_k:
            return None
        return kmeans_prototypes(patches[low], self.config.background_k, iterations=5)

    def decide(self, image: np.ndarray, features: FrameFeatures) -> SegmentationResult:
        """Features of one frame -> result (thresholds, smoothing, upsampling)."""
        similarity, background = self.similarity_maps(features)
        rule_text = str(self.config.threshold)
        if rule_text == "auto":
            rule_text = "fg-vs-bg" if background is not None else "otsu"
        rule = ThresholdRule.parse(rule_text)
        if rule.kind == "fg-vs-bg" and background is None:
            rule = ThresholdRule("otsu")  # no background to compare against: say so in the result
        scores = []
        threshold: float | None = None
        for index in range(len(self._objects)):
            sim = similarity[index]
            parts = []
            if rule.kind != "fg-vs-bg":
                threshold = apply_threshold(sim, rule)
                parts.append(sim - threshold)
            if background is not None:
                parts.append(sim - background[index])
            if self._objects[index].floor is not None:  # a frame can say "no object here"
                parts.append(sim - self._objects[index].floor)
            scores.append(np.min(np.stack(parts), axis=0))
        score_stack = np.stack(scores).astype(np.float32)
        descriptor = features.patches.reshape(-1, features.patches.shape[-1]).mean(axis=0)
        descriptor = descriptor / max(float(np.linalg.norm(descriptor)), 1e-12)
        score_stack, cut = self._smoother.update(score_stack, descriptor)
        temporal = self.config.temporal
        if temporal.adapt > 0:
            for obj, score in zip(self._objects, score_stack):
                interior = cv2.erode((score > 0).astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0)
                confident = features.patches[interior.astype(bool)]
                if len(confident) >= 2:
                    obj.adapt(confident, temporal.adapt, temporal.max_drift)

        best = score_stack.max(axis=0)
        size = image.shape[:2]
        refined = self.refiner is not None
        unfit = getattr(self.refiner, "unfit", None)  # a refiner may say which frames it cannot take
        skipped = unfit(*size) if refined and unfit is not None else None
        if skipped:  # a frame the refiner cannot take keeps the grid's mask, and the result says why
            refined = False
        if refined:  # each object is where its refined mask is
            masks = self._refine(image, score_stack)
            mask = masks.any(axis=0)
            if len(self._objects) == 1:
                labels = mask.astype(np.uint8)
            else:  # overlaps go to the higher score (the edge filter cannot change which is higher)
                mode = "bicubic" if self.config.upsample == "bilateral" else self.config.upsample
                full_stack = np.stack([upsample_score(s, size, mode) for s in score_stack])
                labels = np.where(mask, np.where(masks, full_stack, -np.inf).argmax(axis=0) + 1, 0).astype(np.uint8)
        elif len(self._objects) == 1:
            full = upsample_score(score_stack[0], size, self.config.upsample, image)
            mask = full > 0
            labels = mask.astype(np.uint8)
        else:
            full_stack = np.stack(
                [upsample_score(s, size, self.config.upsample, image) for s in score_stack]
            )
            labels, highest = owners(full_stack)  # the highest score's object
            mask = highest > 0
            labels[~mask] = 0
        rule_name = str(rule) + ("+bg" if background is not None and rule.kind != "fg-vs-bg" else "")
        return SegmentationResult(
            similarity=similarity.max(axis=0),
            score=best,
            coarse_mask=best > 0,
            mask=mask,
            labels=labels,
            threshold=None if rule.kind == "fg-vs-bg" else threshold,
            rule=rule_name,
            object_names=self.object_names,
            scene_cut=cut,
            patches=features.patches.shape[0] * features.patches.shape[1],
            refined=refined,
            refine_skipped=skipped,
        )

    def _refine(self, image: np.ndarray, score_stack: np.ndarray) -> np.ndarray:
        """``n_objects x H x W`` bool: the refiner's mask of each object, prompted by its grid score
        (an object with no patch above 0 gets an empty mask without a refiner call)."""
        size = image.shape[:2]
        start = time.perf_counter()
        prompts = [prompts_from_score(score, size, self.config.refine) for score in score_stack]
        found = [i for i, p in enumerate(prompts) if p is not None]
        out = np.zeros((len(score_stack), *size), bool)
        if found:
            out[found] = self.refiner.refine(image, [prompts[i] for i in found])
        self.last_refine_ms = 1000 * (time.perf_counter() - start)
        return out
