"""Reference: what the object looks like to DINOv2, built once from one or more photos.

A reference photo shows the object with its background painted black, white or
transparent, or it is an ordinary photo given with a mask. From each photo we keep:

* ``cls``: the CLS feature of the photo with its background painted black (the method
  as written compares this one global vector with every patch of a frame);
* ``foreground``: the patch tokens whose patch is at least ``min_coverage`` object;
* ``background``: patch tokens with no object pixel, only when the photo shows its
  real scene (a photo given with a mask); painted backgrounds say nothing about scenes.

Prototypes (:meth:`Reference.prototypes`) are derived from these on demand, so one
saved reference serves every prototype mode.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np

from dinomask._version import __version__
from dinomask.atomic import temporary_beside
from dinomask.backbones import Backbone, BackboneSpec
from dinomask.errors import InvalidReferenceError, ReferenceMismatchError
from dinomask.features import FrameFeatures, extract_features
from dinomask.preprocess import DEFAULT_TOKENS, FrameLike, InputGeometry, load_image, load_mask, patch_coverage
from dinomask.prototypes import kmeans_prototypes, l2_normalize, mean_prototype

_log = logging.getLogger("dinomask")

BackgroundKind = Literal["auto", "black", "white", "transparent"]
PrototypeMode = Literal["cls", "patch-mean", "kmeans"]
PROTOTYPE_MODES: tuple[str, ...] = ("cls", "patch-mean", "kmeans")
FORMAT_VERSION = 1
#: The most a reference file may inflate to (its feature arrays and metadata), checked from the
#: zip's directory and each array's header before anything is read. A reference holds a few
#: thousand feature rows (a few MB); teaching adds at most 512 clicked rows of each kind.
MAX_REFERENCE_BYTES = 256 * 2**20
#: The most its JSON metadata may take.
MAX_META_CHARS = 1_000_000
_FEATURE_ARRAYS = ("cls", "foreground", "background", "positives", "negatives")


def _unusable_features(array: np.ndarray) -> str | None:
    """Why an ``N x C`` feature array cannot be a reference's (NaN or infinite values, zero
    vectors where a backbone gives unit vectors), or None when it can."""
    if not np.isfinite(array).all():
        return "hold NaN or infinite values"
    if array.ndim == 2 and array.size:
        zero = int(np.count_nonzero(np.linalg.norm(array, axis=1) < 1e-3))
        if zero:
            return f"hold {zero} zero vector(s) of {len(array)} (a backbone's features are unit vectors)"
    return None


#: Below this share of background pixels, a reference photo is said to have none.
NO_BACKGROUND_SHARE = 0.01


def _warn_no_background(name: str, object_mask: np.ndarray, coverage: np.ndarray, kind: str | None) -> None:
    """Say so when a reference photo has (almost) no background: a painted background that was not
    found (``--background black`` on a photo with no black), or a mask that marks everything."""
    background = 1.0 - float(object_mask.mean())
    if kind is None and not (coverage == 0).any():
        _log.warning("reference %s: its mask leaves %.1f%% of the photo as background and no patch wholly "
                     "background, so the reference holds 0 scene-background patches (fg-vs-bg and --bg-source "
                     "reference have nothing to compare with); is the mask inverted or all object?",
                     name, 100 * background)
    elif kind is not None and background < NO_BACKGROUND_SHARE:
        _log.warning("reference %s: only %.1f%% of the photo is %s background, so nearly all of it is taken as the "
                     "object; is --background %s right (auto, black, white, transparent), or does it need --mask?",
                     name, 100 * background, kind, kind)


@dataclass(frozen=True)
class ReferenceSettings:
    """How foreground is found in a reference photo.

    Attributes:
        background: ``auto`` detects transparent (alpha), black or white from the
            photo's border; or state it. Ignored where a mask is given.
        tolerance: how far (0-255) a pixel may be from pure black/white and still be
            painted background (JPEG noise).
        min_coverage: a patch is foreground when at least this fraction of it is object.
        geometry: how the photo maps onto the patch grid.
    """

    background: BackgroundKind = "auto"
    tolerance: int = 16
    min_coverage: float = 0.5
    geometry: InputGeometry = field(default_factory=InputGeometry)

    def __post_init__(self) -> None:
        if self.background not in ("auto", "black", "white", "transparent"):
            raise ValueError(
                f"background must be auto, black, white or transparent, got {self.background!r}"
            )
        if not 0.0 < self.min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in (0, 1], got {self.min_coverage}")


def _border(array: np.ndarray) -> np.ndarray:
    return np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])


def detect_background(image: np.ndarray, tolerance: int = 16) -> str:
    """Which painted background an ``H x W x 3|4`` uint8 photo has: transparent, black or white.

    Raises:
        InvalidReferenceError: the border is not mostly one of them.
    """
    if image.shape[2] == 4 and (image[:, :, 3] < 128).any():
        return "transparent"
    border = _border(image[:, :, :3]).astype(np.int16)
    black = float(np.mean(border.max(axis=1) <= tolerance))
    white = float(np.mean(border.min(axis=1) >= 255 - tolerance))
    if black >= 0.8 and black >= white:
        return "black"
    if white >= 0.8:
        return "white"
    raise InvalidReferenceError(
        "could not tell the reference's background: expected a border that is mostly black, white "
        f"or transparent, got {black:.0%} black and {white:.0%} white border pixels. Paint the "
        "background, state it with --background, or give a mask with --mask."
    )


def foreground_from_painted(image: np.ndarray, background: str, tolerance: int = 16) -> np.ndarray:
    """``H x W`` bool object mask of a photo with a painted background.

    For black/white, background is the near-black/near-white region connected to the
    image border, so dark or bright pixels inside the object stay object.
    """
    if background == "transparent":
        if image.shape[2] != 4:
            raise InvalidReferenceError("background 'transparent' was stated, but the image has no alpha channel")
        return image[:, :, 3] >= 128
    rgb = image[:, :, :3].astype(np.int16)
    if background == "black":
        near = rgb.max(axis=2) <= tolerance
    elif background == "white":
        near = rgb.min(axis=2) >= 255 - tolerance
    else:
        raise ValueError(f"background must be transparent, black or white, got {background!r}")
    count, labels = cv2.connectedComponents(near.astype(np.uint8), connectivity=4)
    touching = np.unique(_border(labels))
    touching = touching[touching > 0]
    return ~np.isin(labels, touching)


@dataclass(frozen=True)
class Teaching:
    """What was taught to a reference after it was made (a report can say what was added).

    Attributes:
        views: ``(height, width)`` of each frame added as another view.
        positive_clicks, negative_clicks: clicks that said "object" / "background".
    """

    views: tuple[tuple[int, int], ...] = ()
    positive_clicks: int = 0
    negative_clicks: int = 0

    def describe(self) -> str:
        return (f"{len(self.views)} added view(s), {self.positive_clicks} object click(s), "
                f"{self.negative_clicks} background click(s)")


#: A clicked patch's neighbours join it when their feature is at least this close (cosine).
CLICK_NEIGHBOUR_COSINE = 0.8


@dataclass(frozen=True)
class Reference:
    """Features of one object, ready for a :class:`~dinomask.Segmenter`.

    A reference is immutable: teaching it (:meth:`add_points`, :meth:`add_view`) returns a new
    one, so undo is keeping the previous.

    Attributes:
        backbone: spec of the backbone that made it; a segmenter with another is refused.
        cls: ``n_images x C`` unit CLS vectors of the black-painted photos.
        foreground: ``N x C`` unit patch tokens of object patches (all photos pooled).
        background: ``M x C`` unit patch tokens of real-scene background patches (may be empty).
        label: the object's name (used in label maps and reports).
        sources: where each photo came from.
        settings: the :class:`ReferenceSettings` used.
        positives: ``P x C`` unit patch tokens clicked as object: each is an object prototype.
        negatives: ``Q x C`` unit patch tokens clicked as background: each is a background
            prototype, whatever the segmenter's background setting.
        teaching: counts of the views and clicks added.
    """

    backbone: BackboneSpec
    cls: np.ndarray
    foreground: np.ndarray
    background: np.ndarray
    label: str = "object"
    sources: tuple[str, ...] = ()
    settings: ReferenceSettings = field(default_factory=ReferenceSettings)
    positives: np.ndarray | None = None
    negatives: np.ndarray | None = None
    teaching: Teaching = field(default_factory=Teaching)

    def __post_init__(self) -> None:
        dim = self.backbone.feature_dim
        for name in ("positives", "negatives"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros((0, dim), np.float32))
        for name in _FEATURE_ARRAYS:
            array = getattr(self, name)
            if array.ndim != 2 or (array.size and array.shape[1] != dim):
                raise ValueError(f"expected {name} of shape n x {dim}, got {array.shape}")
        if len(self.foreground) == 0 or len(self.cls) == 0:
            raise InvalidReferenceError("a reference needs at least one object patch and one CLS vector")
        for name in _FEATURE_ARRAYS:
            why = _unusable_features(getattr(self, name))
            if why:
                raise InvalidReferenceError(
                    f"the {name} features of reference {self.label!r} {why}: the backbone {self.backbone.name!r} "
                    "does not give usable features (damaged weights?), or the file is damaged")

    # ------------------------------------------------------------------ building

    @classmethod
    def from_images(
        cls,
        backbone: Backbone,
        images: Sequence[FrameLike],
        masks: Sequence[FrameLike] | None = None,
        *,
        settings: ReferenceSettings | None = None,
        label: str = "object",
    ) -> "Reference":
        """Build a reference from photos with painted backgrounds, or photos plus masks.

        Args:
            backbone: the backbone every later frame will go through.
            images: paths, PIL images or RGB(A) uint8 arrays.
            masks: one mask per image (read by :data:`~dinomask.preprocess.MASK_RULE`), or ``None`` to find the
                object from the painted background.
            settings: see :class:`ReferenceSettings`.

        Raises:
            InvalidReferenceError: a photo has no object left, or an object smaller than
                one patch, or a background that cannot be told.
            ImageReadError: a photo or mask cannot be read.
        """
        settings = settings or ReferenceSettings()
        if not images:
            raise InvalidReferenceError("expected at least one reference image, got none")
        if masks is not None and len(masks) != len(images):
            raise InvalidReferenceError(f"expected one mask per image, got {len(masks)} masks for {len(images)} images")
        cls_rows, fg_rows, bg_rows, sources = [], [], [], []
        for index, source in enumerate(images):
            name = str(source) if isinstance(source, (str, Path)) else f"image[{index}]"
            image = load_image(source, keep_alpha=True)
            if masks is not None:
                object_mask = load_mask(masks[index], size=image.shape[:2])
                real_scene = True
            else:
                kind = settings.background
                if kind == "auto":
                    kind = detect_background(image, settings.tolerance)
                object_mask = foreground_from_painted(image, kind, settings.tolerance)
                real_scene = False
            rgb = image[:, :, :3]
            if not object_mask.any():
                raise InvalidReferenceError(
                    f"no object left in reference {name}: every pixel is background. "
                    "Expected the object on a black, white or transparent background (or a mask with "
                    "non-zero object pixels)."
                )
            painted = np.where(object_mask[:, :, None], rgb, 0).astype(np.uint8)
            grid = settings.geometry.grid(*rgb.shape[:2], backbone.spec.patch_size)
            coverage = patch_coverage(object_mask, grid)
            fg_cells = coverage >= settings.min_coverage
            if not fg_cells.any():
                raise InvalidReferenceError(
                    f"the object in reference {name} is smaller than one patch: it covers at most "
                    f"{coverage.max():.0%} of any patch ({grid[0]}x{grid[1]} grid of "
                    f"{backbone.spec.patch_size}px patches), {settings.min_coverage:.0%} needed. Use a closer "
                    "photo, crop it around the object, or raise the resolution."
                )
            _warn_no_background(name, object_mask, coverage, kind=None if real_scene else kind)
            (painted_features,) = extract_features(backbone, [painted], settings.geometry)
            cls_rows.append(painted_features.cls)
            fg_rows.append(painted_features.patches[fg_cells])
            if real_scene:
                (scene_features,) = extract_features(backbone, [rgb], settings.geometry)
                bg_rows.append(scene_features.patches[coverage == 0.0])
            sources.append(name)
        dim = backbone.spec.feature_dim
        return cls(
            backbone=backbone.spec,
            cls=l2_normalize(np.stack(cls_rows)),
            foreground=np.concatenate(fg_rows).astype(np.float32),
            background=np.concatenate(bg_rows).astype(np.float32) if bg_rows else np.zeros((0, dim), np.float32),
            label=label,
            sources=tuple(sources),
            settings=settings,
        )

    # ------------------------------------------------------------------ prototypes

    def prototypes(self, mode: PrototypeMode = "patch-mean", k: int = 4) -> np.ndarray:
        """Object prototypes, ``K x C`` unit vectors.

        * ``cls``: the mean CLS direction over photos (K = 1), the method as written;
        * ``patch-mean``: the mean direction of all object patch tokens (K = 1);
        * ``kmeans``: ``k`` spherical k-means centres of the object patch tokens.
        """
        if mode == "cls":
            return mean_prototype(self.cls)
        if mode == "patch-mean":
            return mean_prototype(self.foreground)
        if mode == "kmeans":
            return kmeans_prototypes(self.foreground, k)
        raise ValueError(f"prototype mode must be one of {', '.join(PROTOTYPE_MODES)}; got {mode!r}")

    def background_prototypes(self, k: int = 4) -> np.ndarray:
        """``K x C`` unit k-means centres of the reference's real-scene background (may be ``0 x C``)."""
        if len(self.background) == 0:
            return self.background
        return kmeans_prototypes(self.background, k)

    @property
    def feature_arrays(self) -> tuple[np.ndarray, ...]:
        """Every feature array this reference holds (what its memory is)."""
        return self.cls, self.foreground, self.background, self.positives, self.negatives

    # ------------------------------------------------------------------ teaching

    def add_points(self, features: FrameFeatures, points: Sequence[tuple[float, float]], *, positive: bool,
                   neighbour_cosine: float = CLICK_NEIGHBOUR_COSINE) -> "Reference":
        """Clicks on a frame: each point's patch feature (and its 8 neighbours that are at least
        ``neighbour_cosine`` alike) becomes an object prototype (``positive``) or a background
        prototype. The next frame segmented with the new reference already uses them.

        Args:
            features: the clicked frame's features (:func:`~dinomask.features.extract_features`).
            points: ``(x, y)`` as fractions of the frame's width and height, in [0, 1].

        Returns:
            A new reference; this one is unchanged (keep it to undo).
        """
        if not points:
            raise InvalidReferenceError("expected at least one point, got none")
        h, w = features.grid
        rows = []
        for x, y in points:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise InvalidReferenceError(f"a point is (x, y) as fractions of the frame in [0, 1], got ({x}, {y})")
            row, col = min(int(y * h), h - 1), min(int(x * w), w - 1)
            centre = features.patches[row, col]
            rows.append(centre)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if (dr or dc) and 0 <= r < h and 0 <= c < w and float(features.patches[r, c] @ centre) >= neighbour_cosine:
                        rows.append(features.patches[r, c])
        added = l2_normalize(np.stack(rows))
        teaching = Teaching(self.teaching.views, self.teaching.positive_clicks + (len(points) if positive else 0),
                            self.teaching.negative_clicks + (0 if positive else len(points)))
        if positive:
            return replace(self, positives=np.concatenate([self.positives, added]), teaching=teaching)
        return replace(self, negatives=np.concatenate([self.negatives, added]), teaching=teaching)

    def add_view(self, backbone: Backbone, image: FrameLike, mask: FrameLike) -> "Reference":
        """Another view of the object: a frame and its mask (after clicks, from the live result),
        pooled with this reference's views as :meth:`merge` does.

        Raises:
            InvalidReferenceError: the mask is empty or covers the whole frame (it would teach
                nothing, or teach that everything is the object).
        """
        frame = load_image(image)
        object_mask = load_mask(mask, size=frame.shape[:2])
        if not object_mask.any():
            raise InvalidReferenceError("this view's mask is empty: there is no object in it to add")
        if object_mask.all():
            raise InvalidReferenceError("this view's mask covers the whole frame: it would teach that everything "
                                        "is the object; correct it with clicks first")
        view = Reference.from_images(backbone, [frame], [object_mask], settings=self.settings, label=self.label)
        merged = Reference.merge([self, view], label=self.label)
        teaching = Teaching(self.teaching.views + (tuple(frame.shape[:2]),), self.teaching.positive_clicks,
                            self.teaching.negative_clicks)
        return replace(merged, teaching=teaching)

    def check_backbone(self, spec: BackboneSpec, where: str = "this reference") -> None:
        """Raise :class:`ReferenceMismatchError` unless ``spec`` produces the same features."""
        mine = self.backbone
        if mine.fingerprint != spec.fingerprint or mine.feature_dim != spec.feature_dim:
            raise ReferenceMismatchError(
                f"{where} was made with backbone {mine.name!r} (dim {mine.feature_dim}, fingerprint "
                f"{mine.fingerprint}), but the segmenter uses {spec.name!r} (dim {spec.feature_dim}, "
                f"fingerprint {spec.fingerprint}). Rebuild it with: dinomask reference ... --model {spec.name}"
            )

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the reference to a ``.npz`` file (atomically). Refuses to overwrite unless asked."""
        path = reference_file(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        fd, tmp = temporary_beside(path, ".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                self._write(handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def to_bytes(self) -> bytes:
        """The ``.npz`` that :meth:`save` writes, in memory (for a download)."""
        import io

        buffer = io.BytesIO()
        self._write(buffer)
        return buffer.getvalue()

    def _write(self, handle) -> None:
        meta = {
            "format": FORMAT_VERSION,
            "dinomask_version": __version__,
            "backbone": self.backbone.__dict__,
            "label": self.label,
            "sources": list(self.sources),
            "teaching": {"views": [list(v) for v in self.teaching.views],
                         "positive_clicks": self.teaching.positive_clicks,
                         "negative_clicks": self.teaching.negative_clicks},
            "settings": {
                "background": self.settings.background,
                "tolerance": self.settings.tolerance,
                "min_coverage": self.settings.min_coverage,
                "resolution": self.settings.geometry.resolution,
                "keep_aspect": self.settings.geometry.keep_aspect,
                "tokens": self.settings.geometry.tokens,
            },
        }
        np.savez_compressed(
            handle, meta=np.array(json.dumps(meta)), cls=self.cls,
            foreground=self.foreground, background=self.background,
            positives=self.positives, negatives=self.negatives,
        )

    @classmethod
    def load(cls, path: str | Path, backbone: BackboneSpec | None = None) -> "Reference":
        """Read a reference written by :meth:`save`; with ``backbone``, check it matches."""
        path = Path(path)
        try:
            exists = path.is_file()
        except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
            raise InvalidReferenceError(f"cannot read the reference {str(path)[:200]!r}: {exc}") from None
        if not exists:
            raise InvalidReferenceError(f"no reference file at {path}; make one with: dinomask reference IMAGE -o {path}")
        try:
            _check_members(path)
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k].astype(np.float32) for k in _FEATURE_ARRAYS[:3]}
                arrays |= {k: data[k].astype(np.float32) for k in _FEATURE_ARRAYS[3:] if k in data.files}
            reference = cls._from_meta(meta, arrays, path)
        except InvalidReferenceError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, EOFError, RecursionError,
                zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise InvalidReferenceError(
                f"{path} is not a dinomask reference file (expected an .npz written by "
                f"'dinomask reference'): {exc.__class__.__name__}: {exc}"
            ) from None
        if backbone is not None:
            reference.check_backbone(backbone, where=f"reference {path}")
        return reference

    @classmethod
    def _from_meta(cls, meta: dict, arrays: dict[str, np.ndarray], path: Path) -> "Reference":
        """Check the metadata and arrays read from ``path`` and build the reference."""
        if not isinstance(meta, dict):
            raise TypeError(f"its metadata is a JSON {type(meta).__name__}, expected an object")
        if meta.get("format") != FORMAT_VERSION:
            raise InvalidReferenceError(
                f"{path} has reference format {meta.get('format')!r}, this dinomask reads format {FORMAT_VERSION}"
            )
        for name, array in arrays.items():
            why = _unusable_features(array)
            if why:
                raise InvalidReferenceError(f"{path} is damaged: its {name} features {why}")
        spec_data = dict(meta["backbone"])
        spec_data["mean"] = tuple(float(v) for v in spec_data["mean"])
        spec_data["std"] = tuple(float(v) for v in spec_data["std"])
        spec = BackboneSpec(**spec_data)
        if not isinstance(spec.feature_dim, int) or isinstance(spec.feature_dim, bool) or spec.feature_dim < 1:
            raise TypeError(f"backbone.feature_dim must be a positive whole number, got {spec.feature_dim!r}")
        for name, array in arrays.items():
            if array.ndim != 2 or array.shape[1] != spec.feature_dim:
                raise ValueError(f"its {name} array is {array.shape}, expected N x {spec.feature_dim}")
        if not len(arrays["cls"]) or not len(arrays["foreground"]):
            raise ValueError("it holds no object features")
        s = meta["settings"]
        settings = ReferenceSettings(
            background=s["background"], tolerance=float(s["tolerance"]), min_coverage=float(s["min_coverage"]),
            geometry=InputGeometry(resolution=None if s["resolution"] is None else int(s["resolution"]),
                                   keep_aspect=bool(s["keep_aspect"]),
                                   tokens=int(s.get("tokens", DEFAULT_TOKENS))),
        )
        taught = meta.get("teaching", {})
        if not isinstance(taught, dict):
            raise TypeError(f"teaching must be a JSON object, got {type(taught).__name__}")
        teaching = Teaching(tuple(tuple(int(x) for x in v) for v in taught.get("views", ())),
                            int(taught.get("positive_clicks", 0)), int(taught.get("negative_clicks", 0)))
        sources = meta["sources"]
        if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
            raise TypeError("sources must be a list of file names")
        return cls(backbone=spec, label=str(meta["label"]), sources=tuple(sources), settings=settings,
                   teaching=teaching, **arrays)

    @staticmethod
    def merge(references: Sequence["Reference"], label: str | None = None) -> "Reference":
        """Pool several references of the same object (same backbone) into one."""
        if not references:
            raise InvalidReferenceError("expected at least one reference to merge, got none")
        first = references[0]
        for other in references[1:]:
            other.check_backbone(first.backbone, where=f"reference {other.label!r}")
        return Reference(
            backbone=first.backbone,
            cls=np.concatenate([r.cls for r in references]),
            foreground=np.concatenate([r.foreground for r in references]),
            background=np.concatenate([r.background for r in references]),
            label=label or first.label,
            sources=tuple(s for r in references for s in r.sources),
            settings=first.settings,
            positives=np.concatenate([r.positives for r in references]),
            negatives=np.concatenate([r.negatives for r in references]),
            teaching=Teaching(tuple(v for r in references for v in r.teaching.views),
                              sum(r.teaching.positive_clicks for r in references),
                              sum(r.teaching.negative_clicks for r in references)),
        )


def reference_file(path: str | Path) -> Path:
    """The file a reference named ``path`` is written to: ``.npz`` appended unless it is there
    (``taught`` -> ``taught.npz``, ``dog.v2`` -> ``dog.v2.npz``). Check for an existing file with
    this name, never with the name as given."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _check_members(path: Path) -> None:
    """Refuse a reference ``.npz`` before reading it when its members would inflate past
    :data:`MAX_REFERENCE_BYTES`, declare arrays larger than that in their headers, or hold
    anything but numbers and the metadata string (object arrays are never unpickled)."""
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        inflated = sum(m.file_size for m in members)
        if inflated > MAX_REFERENCE_BYTES or len(members) > 16:
            raise InvalidReferenceError(
                f"{path} holds {len(members)} members inflating to {inflated / 2**20:.0f} MiB; a reference "
                f"file holds at most {MAX_REFERENCE_BYTES / 2**20:.0f} MiB (refused before reading)"
            )
        for member in members:
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(handle, max_header_size=10_000)
            count = int(np.prod(shape, dtype=np.float64)) if shape else 1
            declared = count * dtype.itemsize
            if dtype.hasobject or dtype.kind not in "fiuU" or declared > MAX_REFERENCE_BYTES:
                raise InvalidReferenceError(
                    f"{path}: member {member.filename!r} declares a {dtype} array of shape {shape}; expected "
                    f"numeric features under {MAX_REFERENCE_BYTES / 2**20:.0f} MiB"
                )
            if dtype.kind == "U" and (shape != () or dtype.itemsize > 4 * MAX_META_CHARS):
                raise InvalidReferenceError(f"{path}: member {member.filename!r} is a {dtype} string array of "
                                            f"shape {shape}; expected one metadata string")
