"""Images in any common form -> RGB uint8 arrays -> normalised tensors on the patch grid.

Conventions used throughout dinomask:

* an *image* is an ``H x W x 3`` ``uint8`` numpy array in **RGB** order;
* a *grid* is ``(h, w)``, the number of patches down and across;
* the network input is ``h * patch`` by ``w * patch`` pixels. The whole frame is
  resized to that size (never cropped), so patch ``(i, j)`` always covers the same
  fraction ``[i/h, (i+1)/h) x [j/w, (j+1)/w)`` of the original frame.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import cv2
import numpy as np
from PIL import Image, ImageOps

from dinomask.errors import ImageReadError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dinomask.backbones import BackboneSpec

ColorOrder = Literal["rgb", "bgr"]
#: Anything :func:`load_image` accepts: a path, a PIL image, or a numpy array.
FrameLike = Union[str, Path, Image.Image, np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


#: Tokens (patches) per frame the default preset spends, whatever the frame's shape: about
#: the method's own 37 x 37 = 1,369, spent on an aspect-kept grid (28 x 50 at 16:9).
DEFAULT_TOKENS = 1400
#: No frame is ever given more patches than this, whatever else is set: a 1 x 5000 px image
#: would otherwise ask for a 185,000 x 37 grid. 4,096 = 64 x 64 (896 x 896 px at 14 px).
MAX_TOKENS = 4096

_log = logging.getLogger("dinomask")


@dataclass(frozen=True)
class InputGeometry:
    """How a frame is mapped onto the patch grid, and how many patches it may cost.

    Attributes:
        resolution: pixels of the network input's short side (``keep_aspect``) or of
            both sides (square). 518 gives 37 patches of 14 px. ``None`` (the default)
            lets ``tokens`` decide the grid.
        keep_aspect: keep the frame's aspect ratio; ``False`` squashes to
            ``resolution x resolution`` as the method is written.
        tokens: the token budget used when ``resolution`` is None: the aspect-kept grid
            with at most this many patches, so a 16:9, 4:3 or 1:10 frame costs about the
            same (16:9 -> 28 x 50, 4:3 -> 32 x 43 for 1,400).
        max_tokens: a hard cap on patches per frame for every setting; a grid over it is
            scaled down (aspect kept) and a warning names the frame size.
    """

    resolution: int | None = None
    keep_aspect: bool = True
    tokens: int = DEFAULT_TOKENS
    max_tokens: int = MAX_TOKENS

    def __post_init__(self) -> None:
        if self.resolution is not None and self.resolution < 14:
            raise ValueError(f"resolution must be at least one patch (14 px), got {self.resolution}")
        if self.resolution is None and not self.keep_aspect:
            raise ValueError("a square (squashed) grid needs a resolution, e.g. 518")
        if not 1 <= self.tokens <= self.max_tokens:
            raise ValueError(f"tokens must be between 1 and max_tokens ({self.max_tokens}), got {self.tokens}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def describe(self) -> str:
        """A short text for logs and reports, e.g. ``tokens<=1400`` or ``518sq``."""
        if self.resolution is None:
            return f"tokens<={self.tokens}"
        return f"{self.resolution}{'' if self.keep_aspect else 'sq'}"

    def grid(self, height: int, width: int, patch: int) -> tuple[int, int]:
        """Patch grid ``(h, w)`` for a frame of ``height x width`` pixels; never more than
        ``max_tokens`` patches."""
        if height < 1 or width < 1:
            raise ValueError(f"expected a frame of at least 1 x 1 px, got {height} x {width}")
        if self.resolution is None:
            return budget_grid(height, width, self.tokens)
        side = max(1, round(self.resolution / patch))
        if not self.keep_aspect:
            grid = (side, side)
        elif height <= width:
            grid = (side, max(1, round(side * width / height)))
        else:
            grid = (max(1, round(side * height / width)), side)
        if grid[0] * grid[1] <= self.max_tokens:
            return grid
        capped = budget_grid(grid[0], grid[1], self.max_tokens)
        _warn_capped(height, width, grid, capped, self.max_tokens)
        return capped


def budget_grid(height: float, width: float, tokens: int) -> tuple[int, int]:
    """The grid ``(h, w)`` closest to the aspect ratio ``height : width`` with ``h * w <= tokens``."""
    ratio = width / height
    rows = max(1, round(math.sqrt(tokens / ratio)))
    cols = max(1, round(math.sqrt(tokens * ratio)))
    rows, cols = min(rows, tokens), min(cols, tokens)
    while rows * cols > tokens:
        if rows >= cols:
            rows -= 1
        else:
            cols -= 1
    return rows, cols


@functools.lru_cache(maxsize=64)
def _warn_capped(height: int, width: int, asked: tuple[int, int], given: tuple[int, int], cap: int) -> None:
    _log.warning(
        "a %dx%d px frame would need a %dx%d patch grid (%d patches), over the budget of %d per frame: "
        "it runs on %dx%d instead", height, width, *asked, asked[0] * asked[1], cap, *given,
    )


def _from_array(array: np.ndarray, color: ColorOrder, keep_alpha: bool) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageReadError(f"expected a uint8 image array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageReadError(
            f"expected an image array of shape H x W, H x W x 3 or H x W x 4, got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"expected a non-empty image, got shape {array.shape}")
    if color == "bgr":
        array = array[:, :, [2, 1, 0, 3][: array.shape[2]]]
    elif color != "rgb":
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if not keep_alpha:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _open_pil(path: Path, noun: str = "image") -> Image.Image:
    """Decode ``path`` (turned by its EXIF orientation), keeping the format PIL decoded in
    ``.format`` (``exif_transpose`` returns a copy without it): a mask's lossiness is decided by it.

    Raises:
        ImageReadError: missing, a folder, too large, or not decodable; naming the file and ``noun``.
    """
    article = "an" if noun[0] in "aeiou" else "a"
    if not path.exists():
        raise ImageReadError(f"no such {noun} file: {path}")
    if path.is_dir():
        raise ImageReadError(f"expected {article} {noun} file, got a directory: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            decoded = opened.format
            image = ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{noun} {path} is too large to decode safely ({exc})") from None
    except Exception as exc:  # PIL raises many types for damaged files (UnidentifiedImageError, OSError, struct.error, ...)
        raise ImageReadError(f"could not decode {path} as {article} {noun} ({exc.__class__.__name__}: {exc})") from None
    image.format = decoded
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> ``L``, scaled rather than clipped.

    PIL's own ``convert("RGB")`` clips such images at 255, so a 16-bit depth or industrial
    camera frame came out all white or black. ``I;16*`` modes are scaled by 255/65535.
    ``I`` and ``F`` carry no bit depth, so their range decides: values within [0, 255] are
    taken as 8-bit (``F`` within [0, 1] as fractions), within [0, 65535] as 16-bit, and
    anything else is scaled by its maximum.
    """
    values = np.asarray(image).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "F" and low >= 0 and high <= 1.0:
        top = 1.0
    elif low >= 0 and high <= 255:
        top = 255.0
    elif low >= 0 and high <= 65535:
        top = 65535.0
    else:
        top = max(high, 1e-12)
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def pil_to_array(image: Image.Image, keep_alpha: bool = False) -> np.ndarray:
    """A decoded PIL image -> ``H x W x 3`` uint8 RGB, or ``x 4`` RGBA when asked and it has alpha.

    Every PIL mode is accepted; high-bit-depth greyscale (``I;16``, ``I``, ``F``) is scaled to
    8 bits (see :func:`_to_8bit`), never clipped.
    """
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "La":  # premultiplied grey + alpha converts to nothing but LA
        image = image.convert("LA")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    mode = "RGBA" if keep_alpha and has_alpha else "RGB"
    return np.asarray(image.convert(mode)).copy()


def load_image(frame: FrameLike, *, color: ColorOrder = "rgb", keep_alpha: bool = False) -> np.ndarray:
    """Any accepted frame -> ``H x W x 3`` (or ``x 4`` with ``keep_alpha``) uint8 RGB(A).

    Args:
        frame: a path, a PIL image, or a uint8 numpy array (``H x W``, ``H x W x 3``
            or ``H x W x 4``).
        color: channel order of a numpy array: ``rgb``, or ``bgr`` as OpenCV gives.
            Paths and PIL images are always read as RGB.
        keep_alpha: keep a 4th alpha channel when the input has one.

    Raises:
        ImageReadError: the input is missing, corrupt or not an image.
    """
    if isinstance(frame, (str, Path)):
        return pil_to_array(_open_pil(Path(frame)), keep_alpha)
    if isinstance(frame, Image.Image):
        return pil_to_array(frame, keep_alpha)
    if isinstance(frame, np.ndarray):
        return _from_array(frame, color, keep_alpha)
    raise ImageReadError(
        f"expected a path, a PIL image or a numpy array, got {type(frame).__name__}"
    )


#: The one rule by which every reader (``reference --mask``, the server's uploads, taught views
#: and ``eval``'s ground truth) turns a mask image into object and background.
MASK_RULE = (
    "a mask image with transparency is the object where its alpha is above half its range; otherwise "
    "its brightest channel (a palette image: its index) decides. A hard mask, one of at most 64 distinct "
    "values (0/1, 0/255, a label map 0/5/20, a palette), is the object where it is non-zero, except a "
    "void value: the format's top value (255, 65535) beside smaller labels below half the range (VOC's "
    "255 ring around label 1) is left out. A soft mask (more values: antialiased, matted) or any JPEG "
    "is the object above half the range its values use (> 127 for 8-bit values, in any container; "
    "> 32767 for 16-bit ones; > 0.5 for floats within [0, 1]). Whether a file is lossy is decided by "
    "the format decoded, never by its name"
)
#: A mask with at most this many distinct values is a hard mask (object where non-zero): label
#: maps of up to 63 classes (VOC's 21 with void, Cityscapes' 34) stay hard, while an antialiased
#: or matted edge spreads over more values than that.
HARD_MASK_MAX_VALUES = 64
#: Below this share of non-zero pixels kept, reading a mask says what the rule discarded.
DISCARD_WARNING = 0.5


def _top_of_range(values: np.ndarray, full_range: float) -> float:
    """The range a mask's values use: 8-bit values in a 16-bit or 32-bit container are 8-bit."""
    high = float(values.max(initial=0))
    if values.dtype.kind == "f":
        return 1.0 if high <= 1.0 else (255.0 if high <= 255 else max(full_range, high))
    if high <= 255:
        return 255.0
    return full_range if high <= full_range else high


def mask_from_values(values: np.ndarray, full_range: float, lossy: bool = False, name: str = "mask") -> np.ndarray:
    """One mask channel (``H x W``, any numeric dtype) -> ``H x W`` bool by :data:`MASK_RULE`.

    Args:
        full_range: the format's largest value (255 for 8 bits, 65535 for 16, 1.0 for floats).
        lossy: the values came from a lossy format (JPEG): always above half the range, since
            compression noise would make a hard mask's background non-zero.
        name: the file, named in the warning when the rule discards most non-zero pixels.
    """
    if values.size == 0:
        return np.zeros(values.shape, bool)
    nonzero = values != 0
    if values.dtype == np.uint8:
        distinct = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    else:
        distinct = np.unique(values)
    top = _top_of_range(values, full_range)
    why = ""
    if not lossy and len(distinct) <= HARD_MASK_MAX_VALUES:
        mask = nonzero
        labels = distinct[distinct != 0]
        if len(labels) >= 2 and labels.max() in (255, 65535) and (labels[labels != labels.max()] < labels.max() / 2).all():
            mask = nonzero & (values != labels.max())
            why = f"{int(labels.max())} taken as void beside labels {', '.join(str(int(v)) for v in labels[:-1][:6])}"
    else:
        mask = values > top / 2
        why = f"soft values above half of 0..{top:g}" + (" (a JPEG is always read as soft)" if lossy else "")
    found = int(np.count_nonzero(nonzero))
    if why and found and np.count_nonzero(mask) < DISCARD_WARNING * found:
        _log.warning("%s: the mask rule keeps %.0f%% of its non-zero pixels (%s)", name,
                     100.0 * np.count_nonzero(mask) / found, why)
    return mask


def mask_from_image(image: Image.Image, name: str = "mask") -> np.ndarray:
    """A decoded mask image, any PIL mode -> ``H x W`` bool by :data:`MASK_RULE`.

    Whether it is lossy comes from the format PIL decoded (``image.format``), not from a name.
    """
    lossy = image.format in ("JPEG", "MPO")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA").getchannel("A"))
        if (alpha < 255).any():
            return mask_from_values(alpha, 255.0, lossy, name)
    if image.mode == "P":  # indices, not intensities: hard whatever their number
        values = np.asarray(image)
        return mask_from_values(values, 255.0, False, name) if len(np.unique(values)) <= HARD_MASK_MAX_VALUES else values != 0
    if image.mode.startswith("I;16"):
        return mask_from_values(np.asarray(image), 65535.0, lossy, name)
    if image.mode in ("I", "F"):
        return mask_from_values(np.asarray(image), 1.0 if image.mode == "F" else 65535.0, lossy, name)
    return mask_from_values(np.asarray(image.convert("RGB")).max(axis=2), 255.0, lossy, name)


def read_mask_file(path: Path) -> np.ndarray:
    """A mask file -> ``H x W`` bool by :data:`MASK_RULE`: the one reader of mask files (``reference
    --mask`` and ``eval``'s ground truth), turned by its EXIF orientation as its photo is.

    Raises:
        ImageReadError: missing, a folder, or not decodable; naming the file.
    """
    return mask_from_image(_open_pil(Path(path), "mask"), str(path))


def load_mask(mask: FrameLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask image or array -> ``H x W`` bool (True = object), by :data:`MASK_RULE`.

    Args:
        mask: a path, a PIL image, a bool array, or a numeric array (``H x W``, or
            ``H x W x 3|4`` uint8 read as pixels).
        size: ``(height, width)`` the mask must have; a mismatch is an error, not a resize.

    Raises:
        ImageReadError: unreadable, not 2-D, or not of ``size``; the message names the file.
    """
    name = f"mask {mask}" if isinstance(mask, (str, Path)) else "mask"
    if isinstance(mask, np.ndarray) and mask.dtype == bool:
        array = mask
    elif isinstance(mask, np.ndarray):
        array = mask_from_pixels(mask) if mask.ndim == 3 else mask_from_values(
            mask, 1.0 if mask.dtype.kind == "f" else float(np.iinfo(mask.dtype).max) if mask.dtype.kind in "iu" else 1.0)
    elif isinstance(mask, (str, Path)):
        array = read_mask_file(Path(mask))
    elif isinstance(mask, Image.Image):
        array = mask_from_image(mask)
    else:
        raise ImageReadError(f"expected a mask path, PIL image or numpy array, got {type(mask).__name__}")
    if array.ndim != 2:
        raise ImageReadError(f"expected a 2-D {name}, got shape {array.shape}")
    if size is not None and tuple(array.shape) != tuple(size):
        raise ImageReadError(
            f"{name} size {array.shape[0]}x{array.shape[1]} (h x w) does not match the image "
            f"size {size[0]}x{size[1]}"
        )
    return array


def mask_from_pixels(image: np.ndarray) -> np.ndarray:
    """``H x W x 3|4`` (or ``H x W``) uint8 mask pixels -> ``H x W`` bool by :data:`MASK_RULE`."""
    if image.ndim == 2:
        return mask_from_values(image, 255.0)
    if image.shape[2] == 4 and (image[:, :, 3] < 255).any():
        return mask_from_values(image[:, :, 3], 255.0)
    return mask_from_values(image[:, :, :3].max(axis=2), 255.0)


def resize_to_grid(image: np.ndarray, grid: tuple[int, int], patch: int) -> np.ndarray:
    """Resize an ``H x W x 3`` uint8 image to ``grid[0]*patch x grid[1]*patch``."""
    target_h, target_w = grid[0] * patch, grid[1] * patch
    if image.shape[:2] == (target_h, target_w):
        return image
    shrinking = target_h * target_w < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (target_w, target_h), interpolation=interpolation)


def to_pixel_values(images: list[np.ndarray], spec: "BackboneSpec", grid: tuple[int, int]) -> "torch.Tensor":
    """RGB uint8 images -> ``B x 3 x (h*patch) x (w*patch)`` float32 tensor, normalised.

    Every image is resized (not cropped) to the same grid. Scaling to [0, 1] and the
    mean/std normalisation are folded into one multiply-add per channel.
    """
    import torch

    height, width = grid[0] * spec.patch_size, grid[1] * spec.patch_size
    std = np.asarray(spec.std, np.float32)
    scale = 1.0 / (255.0 * std)
    offset = -np.asarray(spec.mean, np.float32) / std
    batch = np.empty((len(images), 3, height, width), np.float32)
    for index, image in enumerate(images):
        resized = resize_to_grid(image[:, :, :3], grid, spec.patch_size)
        for channel in range(3):
            np.multiply(resized[:, :, channel], scale[channel], out=batch[index, channel], casting="unsafe")
            batch[index, channel] += offset[channel]
    return torch.from_numpy(batch)


def patch_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each patch covered by ``mask`` (``H x W`` bool) -> ``h x w`` float32 in [0, 1].

    Uses area interpolation, so each value is the mean of the mask over the patch's
    share of the frame.
    """
    return cv2.resize(mask.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
