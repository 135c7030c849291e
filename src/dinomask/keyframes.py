"""Keyframes for video and live: the backbone runs on keyframes, and between them the soft
decision score is carried from frame to frame by dense optical flow (OpenCV DIS).

A carried frame costs two small flow fields (about 11 ms at 240 x 320 px on 2 cores) instead of
a backbone pass (hundreds of ms on a CPU). The mask of a carried frame is decided from
the carried score with the same rule as the keyframe (the score already is "similarity
minus threshold", or "object minus background"), so ``score > 0`` is the object.

Policies (``--keyframes``):

* ``off``: every frame is a keyframe (exactly the per-frame output);
* ``every:K``: a keyframe every K frames;
* ``auto``: a keyframe at least every ``interval`` frames, and sooner when the flow cannot
  be trusted: too many of the object's pixels fail the forward-backward check, or the
  warped previous frame no longer looks like this one (a scene cut, fast motion, a flash);
* ``async`` (live): the backbone runs in its own worker on the newest frame while flow
  follows every camera frame; each key is carried forward to the current frame when it
  lands (:class:`FlowCarrier`). The loop never waits for the backbone. Where there is no
  camera clock (``remove`` on a file) it behaves as ``auto``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

KEYFRAME_POLICIES = ("off", "every", "auto", "async")
#: Short side (px) of ``async``'s flow. Every camera frame pays for it, growing with its area
#: (``benchmarks/flow_cost.py``, 854 x 480: 5.1 ms at 120, 8.7 at 160, 10.9 at 180, 18.9 at 240);
#: a finer flow follows limbs better (``eval live --oracle``, simulated clock with that cost:
#: davis-motion live J 0.494 at 120, 0.513 at 160, 0.521 at 200). 160 keeps a frame's work (26 ms
#: in the issue's cost model) within a 30 FPS camera's 33 ms with room to spare; 200 would not.
ASYNC_FLOW_SIDE = 160


@dataclass(frozen=True)
class KeyframeSettings:
    """When the backbone runs, and how scores are carried between its runs.

    Attributes:
        policy: ``off``, ``every`` or ``auto`` (see the module docstring).
        interval: ``every``: K; ``auto``: the longest run of frames between keyframes.
        flow_side: short side in px at which flow is computed and scores are carried.
        fb_tolerance: forward-backward error (px at ``flow_side``) above which a pixel's
            flow is not trusted.
        max_inconsistent: ``auto``: fraction of the carried object's pixels with untrusted
            flow that makes the frame a keyframe.
        max_photometric: ``auto``: mean absolute grey difference (0-1) between this frame
            and the flow-warped previous one that makes the frame a keyframe.
    """

    policy: str = "off"
    interval: int = 4
    flow_side: int = 240
    fb_tolerance: float = 1.0
    max_inconsistent: float = 0.2
    max_photometric: float = 0.08

    def __post_init__(self) -> None:
        if self.policy not in KEYFRAME_POLICIES:
            raise ValueError(f"keyframe policy must be one of {', '.join(KEYFRAME_POLICIES)}; got {self.policy!r}")
        if self.interval < 1:
            raise ValueError(f"keyframe interval must be at least 1, got {self.interval}")
        if self.flow_side < 16:
            raise ValueError(f"flow_side must be at least 16 px, got {self.flow_side}")

    @classmethod
    def parse(cls, text: str) -> "KeyframeSettings":
        """``off``, ``auto``, ``auto:K`` or ``every:K``."""
        name, _, number = str(text).strip().partition(":")
        if name not in KEYFRAME_POLICIES or (name in ("off", "async") and number):
            raise ValueError(f"expected off, auto, auto:K, every:K or async, got {text!r}")
        if name == "async":
            return cls(policy=name, flow_side=ASYNC_FLOW_SIDE)
        if not number:
            return cls(policy=name)
        try:
            interval = int(number)
        except ValueError:
            raise ValueError(f"expected a whole number of frames after {name}:, got {number!r}") from None
        return cls(policy=name, interval=interval)

    @property
    def enabled(self) -> bool:
        """The backbone does not run on every frame."""
        return self.policy == "async" or (self.policy != "off" and self.interval > 1)

    def describe(self) -> str:
        """``off``, ``async``, or ``policy:interval``."""
        if not self.enabled:
            return "off"
        return "async" if self.policy == "async" else f"{self.policy}:{self.interval}"


@dataclass(frozen=True)
class FlowCheck:
    """How far the flow of one carried frame could be trusted.

    Attributes:
        inconsistent: fraction of the carried object's pixels failing the forward-backward check.
        photometric: mean absolute grey difference (0-1) to the flow-warped previous frame.
    """

    inconsistent: float
    photometric: float


#: Frames whose flow image would be smaller than this on a side get a key each instead: OpenCV's
#: DIS refuses images under 12 px on both sides, and a flow over a few pixels carries nothing.
MIN_FLOW_SIDE = 16


def flow_possible(grey: np.ndarray) -> bool:
    """True when optical flow can run on this flow-sized grey image (see :data:`MIN_FLOW_SIDE`)."""
    return min(grey.shape[:2]) >= MIN_FLOW_SIDE


def dis_flow() -> "cv2.DISOpticalFlow":
    """OpenCV DIS optical flow (ultrafast preset) down to full resolution: the preset stops at
    1/4 resolution and shrinks a moving object's motion by a third; at full (small) resolution
    flow follows a planted shift within 0.3 px."""
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flow.setFinestScale(0)
    return flow


def flow_size(height: int, width: int, flow_side: int) -> tuple[int, int]:
    """``(h, w)`` at which flow runs for a ``height x width`` frame: short side ``flow_side``, never upscaled."""
    scale = min(1.0, flow_side / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def small_grey(image: np.ndarray, flow_side: int) -> np.ndarray:
    """``H x W x 3`` uint8 RGB -> uint8 grey at :func:`flow_size`."""
    size = flow_size(*image.shape[:2], flow_side)
    grey = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if grey.shape != size:
        grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return grey


def to_flow_size(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized to the flow's ``(h, w)``: bicubically up (a grid's scores, as the default
    upsampling places edges), by area down (a frame-sized mask)."""
    up = values.shape[0] < size[0] or values.shape[1] < size[1]
    return cv2.resize(values, (size[1], size[0]), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)


def sampling_grid(backward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward flow (``h x w x 2``) -> the ``map_x, map_y`` that ``cv2.remap`` warps the previous frame's maps with."""
    height, width = backward.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs + backward[..., 0], ys + backward[..., 1]


def warp_maps(maps: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """``K x h x w`` maps of the previous frame, warped onto this one by :func:`sampling_grid`'s maps.
    What comes in at the frame's edge copies the edge (an object entering the view is carried in as
    it enters: ``eval live --oracle`` on pans, live J 0.573 against 0.549 with background there), and
    :func:`clear_uncovered` leaves it so (:func:`came_into_view`)."""
    return np.stack([cv2.remap(m, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for m in maps])


def untrusted_flow(backward: np.ndarray, forward: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
                   tolerance: float) -> np.ndarray:
    """Forward-backward check: ``h x w`` bool, True where going back and forth misses by more than ``tolerance`` px."""
    returned = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.linalg.norm(backward + returned, axis=2) > tolerance


def forward_object(forward: np.ndarray, previous_object: np.ndarray) -> np.ndarray:
    """Where the previous frame's object pixels land by forward flow (dilated by 1 px)."""
    height, width = previous_object.shape
    ys, xs = np.nonzero(previous_object)
    landed = np.zeros((height, width), np.uint8)
    ty = np.clip(np.rint(ys + forward[ys, xs, 1]), 0, height - 1).astype(np.intp)
    tx = np.clip(np.rint(xs + forward[ys, xs, 0]), 0, width - 1).astype(np.intp)
    landed[ty, tx] = 1
    return cv2.dilate(landed, np.ones((3, 3), np.uint8)).astype(bool)


#: The camera's shift between two flow-sized frames (phase correlation) is trusted when its peak holds
#: at least this share of the frames' normalised cross-power (``cv2.phaseCorrelate``'s response): most
#: of the view moves as one, as when the camera pans. An object's own motion, blur or smoke spread the
#: peak below it (a third DIS pass there would start from a shift that is no camera's). On the eleven
#: clips, of the steps where DIS missed the shift by more than :data:`SHIFT_MISS_PX`, DIS started from
#: it explained the frame better on 14 of 30 above it, and on 3 of 7 below it (all on motocross-jump,
#: where the rider fills the view).
SHIFT_RESPONSE = 0.2
#: DIS is started again from the camera's shift when its own median flow misses that shift by more
#: than this (px at the flow's size, either axis): the ultrafast preset's patch side. Within a patch
#: DIS was refining the motion; beyond it, it lost it. On the eleven clips a 2 px limit ran the third
#: pass on 142 of 728 flow steps, most of them on slow pans (stroller, car-shadow) where it lowered the
#: warp error by 0.01 grey levels; this one on 30, and on dog-pan2x's lost steps it lowers it by 3.4.
SHIFT_MISS_PX = 8.0


def camera_shift(grey: np.ndarray, previous: np.ndarray) -> tuple[float, float] | None:
    """``(dx, dy)`` px by which ``grey``'s content moved from ``previous`` (two flow-sized uint8 grey
    frames of one size), when most of the view moved as one (:data:`SHIFT_RESPONSE`); else None.
    Phase correlation has no reach limit, where DIS's coarse-to-fine search loses a shift larger than its
    coarsest level follows: a camera panning 33 px a frame at 160 px (2x zoom, 24 FPS) is found as
    4 px on some frames, and an object carried across it stays behind."""
    (dx, dy), response = cv2.phaseCorrelate(previous.astype(np.float32), grey.astype(np.float32),
                                            _hanning(grey.shape[0], grey.shape[1]))
    return (float(dx), float(dy)) if response >= SHIFT_RESPONSE else None


@lru_cache(maxsize=8)
def _hanning(height: int, width: int) -> np.ndarray:
    """The window :func:`camera_shift` tapers the frames' edges with (one per flow size, kept)."""
    return cv2.createHanningWindow((width, height), cv2.CV_32F)


def photometric_error(grey: np.ndarray, previous: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
                      where: np.ndarray | None = None) -> float:
    """Mean absolute grey difference (0-1) between ``grey`` and ``previous`` warped onto it by a
    backward flow's sampling grid (:func:`sampling_grid`): how well that flow explains the frame
    (``auto``'s key trigger, the carrier's scene cut, :class:`PannedFlow`'s choice), or with
    ``where`` (``h x w`` bool) those pixels of it (:func:`follow_object`'s choice)."""
    warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    difference = np.abs(warped.astype(np.float32) - grey)
    return float((difference if where is None else difference[where]).mean() / 255.0)


class PannedFlow:
    """DIS flow between two frames, started from the camera's shift where DIS alone loses it.

    :meth:`backward` runs DIS; when the frame moved as one (:func:`camera_shift`) and DIS's median flow
    misses that shift by more than :data:`SHIFT_MISS_PX`, DIS runs again from the shift, and the flow
    that explains the frame better (:func:`photometric_error`) is kept; :meth:`forward` then starts from the
    same shift. A second DIS object runs the started passes: OpenCV's DIS computes differently after
    it was once given a starting flow. On the pan scenarios (``eval live --oracle --costs 262,22``,
    docs/speed.md) it follows the camera where DIS alone carried an object the camera pans back onto
    a frame or two behind; the plain clips, whose camera moves slowly, are unchanged.

    Attributes:
        passes: DIS passes since :meth:`backward` (1, or 2 when DIS ran again from the shift),
            :meth:`forward` included (2 or 3); the simulated clock of ``eval live`` charges the third.
    """

    def __init__(self):
        self._plain, self._started = dis_flow(), dis_flow()
        self._shift: tuple[float, float] | None = None
        self.passes = 0

    def backward(self, grey: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """``h x w x 2`` float32: where each pixel of ``grey`` was in ``previous``."""
        flow = self._plain.calc(grey, previous, None)
        self._shift, self.passes = None, 1
        shift = camera_shift(grey, previous)
        if shift is None:
            return flow
        medians = np.median(flow.reshape(-1, 2), axis=0)
        if max(abs(medians[0] + shift[0]), abs(medians[1] + shift[1])) <= SHIFT_MISS_PX:
            return flow
        started = self._started.calc(grey, previous, _uniform(grey.shape, -shift[0], -shift[1]))
        self.passes = 2
        if photometric_error(grey, previous, *sampling_grid(started)) < photometric_error(grey, previous, *sampling_grid(flow)):
            self._shift = shift
            return started
        return flow

    def forward(self, previous: np.ndarray, grey: np.ndarray) -> np.ndarray:
        """``h x w x 2`` float32: where each pixel of ``previous`` goes in ``grey`` (after :meth:`backward` of the same pair)."""
        self.passes += 1
        if self._shift is None:
            return self._plain.calc(previous, grey, None)
        return self._started.calc(previous, grey, _uniform(grey.shape, *self._shift))


#: An object's own shift is looked for within this share of the flow image's short side of where it
#: was (a quarter: an object that crosses the view in four frames).
OBJECT_REACH = 0.25
#: Objects of fewer pixels at the flow's size than a DIS patch (8 x 8) are left to DIS: below it DIS
#: has no motion of their own to lose, and a template that small matches anything.
MIN_OBJECT_PX = 64


def object_shift(previous: np.ndarray, grey: np.ndarray, obj: np.ndarray, reach: int,
                 around: tuple[int, int] = (0, 0), coarse: bool = False) -> tuple[int, int] | None:
    """``(dx, dy)`` px that best moves the object's pixels of ``previous`` onto ``grey`` (two uint8
    grey frames of one size; ``obj`` an ``h x w`` bool mask of ``previous``), within ``reach`` px of
    ``around``, by masked template matching (``cv2.matchTemplate``, squared differences over the
    object's pixels only); None when its box cannot move in the frame. ``coarse``: matched at half
    the size (a quarter of the work), the shift then within a pixel or two."""
    x0, y0, box_w, box_h = cv2.boundingRect(obj.astype(np.uint8))
    if box_w == 0:
        return None
    y1, x1 = y0 + box_h, x0 + box_w
    height, width = grey.shape
    sy0, sy1 = max(0, y0 + around[1] - reach), min(height, y1 + around[1] + reach)
    sx0, sx1 = max(0, x0 + around[0] - reach), min(width, x1 + around[0] + reach)
    room = (sy1 - sy0, sx1 - sx0)
    if room[0] < y1 - y0 or room[1] < x1 - x0 or room == (y1 - y0, x1 - x0):
        return None  # the box fills what it could move in
    window, template = grey[sy0:sy1, sx0:sx1], previous[y0:y1, x0:x1]
    mask = obj[y0:y1, x0:x1].astype(np.float32)
    factor = 2 if coarse and min(y1 - y0, x1 - x0) >= 8 else 1
    if factor > 1:
        half = lambda a: cv2.resize(a, (a.shape[1] // factor, a.shape[0] // factor), interpolation=cv2.INTER_AREA)
        window, template, mask = half(window), half(template), half(mask)
    errors = cv2.matchTemplate(window.astype(np.float32), template.astype(np.float32), cv2.TM_SQDIFF, mask=mask)
    _, _, (best_x, best_y), _ = cv2.minMaxLoc(errors)
    return sx0 + factor * best_x - x0, sy0 + factor * best_y - y0


#: About this many of an object's pixels tell whether DIS's flow over it misses its own shift (a
#: median: a strided sample of them gives the same answer at a fraction of the work).
SAMPLE_PX = 512


def follow_object(backward: np.ndarray, forward: np.ndarray, previous: np.ndarray, grey: np.ndarray,
                  obj: np.ndarray) -> bool:
    """Where DIS lost a carried object, move it by its own shift: in place, ``backward`` on the
    object's new place becomes minus the shift, ``forward`` on its old place the shift. Returns
    whether it did.

    DIS gives a small object the motion of what surrounds it when the two differ (a car driving
    against a camera's pan, on drift-turn-pan2x: one flow step carried it to IoU 0.00 while its own
    shift was 10 px the other way). As :class:`PannedFlow` does for the camera, the object's own shift
    (:func:`object_shift`, at half size, then to the pixel) is taken only when DIS's backward flow over
    the object's new place misses it by more than :data:`SHIFT_MISS_PX` (beyond a DIS patch, DIS lost
    it) *and* the shift explains those pixels of ``grey`` better than DIS does (mean absolute grey
    difference). One flow step carrying the ground truth on the eleven clips and the 2x and 3x pans,
    at 96, 128 and 160 px: it changed 9-13 of 1,384 steps, each for the better (IoU +0.01 to +0.57;
    ``benchmarks/object_shift_steps.py``).

    Args:
        backward, forward: ``h x w x 2`` float32 flows of one step (changed in place).
        previous, grey: the step's two uint8 grey frames at the flow's size.
        obj: ``h x w`` bool, the carried object in ``previous``.
    """
    count = int(np.count_nonzero(obj))
    if count < MIN_OBJECT_PX:
        return False
    reach = max(1, int(min(grey.shape) * OBJECT_REACH))
    shift = object_shift(previous, grey, obj, reach, coarse=True)
    if shift is None:
        return False
    height, width = obj.shape
    stride = max(1, int(np.sqrt(count / SAMPLE_PX)))  # every stride-th row and column: about SAMPLE_PX pixels
    ys, xs = np.nonzero(obj[::stride, ::stride])
    ty, tx = ys * stride + shift[1], xs * stride + shift[0]
    inside = (ty >= 0) & (ty < height) & (tx >= 0) & (tx < width)
    if np.count_nonzero(inside) * stride * stride < MIN_OBJECT_PX:
        return False
    median = np.median(backward[ty[inside], tx[inside]], axis=0)
    if max(abs(median[0] + shift[0]), abs(median[1] + shift[1])) <= SHIFT_MISS_PX:
        return False  # DIS follows the object (or refines its motion)
    shift = object_shift(previous, grey, obj, 2, around=shift) or shift  # to the pixel
    dx, dy = shift
    ys, xs = np.nonzero(obj)
    ty, tx = ys + dy, xs + dx
    inside = (ty >= 0) & (ty < height) & (tx >= 0) & (tx < width)
    if np.count_nonzero(inside) < MIN_OBJECT_PX:
        return False
    moved = np.zeros(obj.shape, bool)  # the object's new place
    moved[ty[inside], tx[inside]] = True
    by_shift = photometric_error(grey, previous, *sampling_grid(_uniform(grey.shape, -dx, -dy)), where=moved)
    if by_shift >= photometric_error(grey, previous, *sampling_grid(backward), where=moved):
        return False
    backward[moved] = (-dx, -dy)
    forward[obj] = (dx, dy)
    return True


#: Two boxes (``cv2.boundingRect``'s x, y, w, h) of one step are taken for one object at this
#: intersection over union or more (the PASCAL VOC rule for a detection of the same object).
SAME_OBJECT_IOU = 0.5


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def _uniform(shape: tuple[int, ...], dx: float, dy: float) -> np.ndarray:
    """A flow of ``shape[:2]`` that moves every pixel by ``(dx, dy)``: DIS's starting flow."""
    return np.full((shape[0], shape[1], 2), (dx, dy), np.float32)


def came_into_view(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """``h x w`` bool: pixels whose backward flow (:func:`sampling_grid`'s maps) points outside the
    previous frame, content that has just come into the view at its edge (a camera panning)."""
    height, width = map_x.shape
    return (map_x < 0) | (map_x > width - 1) | (map_y < 0) | (map_y > height - 1)


def clear_uncovered(warped: np.ndarray, previous: np.ndarray, forward: np.ndarray, untrusted: np.ndarray,
                    entered: np.ndarray | None = None) -> None:
    """Backward warping copies the object onto the background it uncovers as it moves. There the
    flow fails the check, and no object pixel lands there by forward flow: such pixels of the
    carried score (``warped[0]``) are made background, in place. (Untrusted pixels that forward
    flow does reach stay: erasing every untrusted pixel cost 0.2 J on DAVIS, where objects deform.)

    ``entered`` (:func:`came_into_view`) is left as warped: what comes into the view at the frame's
    edge fails the check too, as it has nothing in the previous frame to go back to, but it is no
    uncovered background: it copies the edge (:func:`warp_maps`), so an object that the camera pans
    back onto grows into the view as it enters instead of being erased strip by strip."""
    uncovered = untrusted & ~forward_object(forward, previous[0] > 0)
    if entered is not None:
        uncovered &= ~entered
    warped[0][uncovered] = np.minimum(warped[0][uncovered], -1e-3)


def carry_step(maps: np.ndarray, backward: np.ndarray, forward: np.ndarray, tolerance: float,
               grid: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``K x h x w`` maps of the previous frame carried one flow step onto this one, as
    :class:`FlowCarrier` carries them: backward warping (what comes into view copies the edge), then
    the background an object uncovers cleared where the flow fails the forward-backward check by
    more than ``tolerance`` px (:func:`clear_uncovered`). ``grid``: the backward flow's sampling
    grid, when already made."""
    map_x, map_y = grid if grid is not None else sampling_grid(backward)
    warped = warp_maps(maps, map_x, map_y)
    clear_uncovered(warped, maps, forward, untrusted_flow(backward, forward, map_x, map_y, tolerance),
                    came_into_view(map_x, map_y))
    return warped


class ScorePropagator:
    """Carries ``K x h x w`` float maps (scores, similarity) from frame to frame by optical flow.

    Call :meth:`seed` on a keyframe with its maps, then :meth:`step` on each next frame:
    it returns the carried maps, or ``None`` when a keyframe is due (then seed again).
    """

    def __init__(self, settings: KeyframeSettings):
        self.settings = settings
        self._flow = dis_flow()
        self.reset()

    def reset(self) -> None:
        self._grey: np.ndarray | None = None
        self._maps: np.ndarray | None = None
        self.since_key = 0
        self.last_check: FlowCheck | None = None

    @property
    def ready(self) -> bool:
        return self._maps is not None

    def flow_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` at which flow runs for a ``height x width`` frame (never upscaled)."""
        return flow_size(height, width, self.settings.flow_side)

    def _small_grey(self, image: np.ndarray) -> np.ndarray:
        return small_grey(image, self.settings.flow_side)

    def seed(self, image: np.ndarray, maps: "np.ndarray | list[np.ndarray]") -> None:
        """Start carrying from a keyframe.

        Args:
            image: the keyframe, ``H x W x 3`` uint8 RGB.
            maps: ``K`` 2-D maps of that frame, each at any resolution of its own (a
                ``K x h x w`` array, or a list mixing grid-sized scores and frame-sized label
                shares); each is resized bilinearly to the flow resolution.
        """
        grey = self._small_grey(image)
        size = grey.shape
        maps = [np.asarray(m, np.float32) for m in maps]
        if not maps or any(m.ndim != 2 or 0 in m.shape for m in maps):
            raise ValueError(f"expected K >= 1 non-empty 2-D maps, got shapes {[m.shape for m in maps]}")
        self._maps = np.stack([to_flow_size(m, size) for m in maps])
        self._grey = grey
        self.since_key = 0

    def step(self, image: np.ndarray) -> np.ndarray | None:
        """Carry the maps onto ``image`` (the next frame), or ``None`` when it must be a keyframe."""
        if self._maps is None or self._grey is None:
            return None
        settings = self.settings
        if self.since_key + 1 >= settings.interval:
            return None
        grey = self._small_grey(image)
        if grey.shape != self._grey.shape or not flow_possible(grey):
            return None
        backward = self._flow.calc(grey, self._grey, None)  # this frame -> where each pixel was before
        map_x, map_y = sampling_grid(backward)
        warped = warp_maps(self._maps, map_x, map_y)
        forward = self._flow.calc(self._grey, grey, None)
        untrusted, check = self._check(grey, backward, forward, map_x, map_y, warped[0] > 0)
        self.last_check = check
        if settings.policy in ("auto", "async") and (
            check.inconsistent > settings.max_inconsistent or check.photometric > settings.max_photometric
        ):
            return None
        clear_uncovered(warped, self._maps, forward, untrusted)
        self._grey, self._maps = grey, warped  # chained frame to frame: small steps, fewer flow failures
        self.since_key += 1
        return warped

    def _check(self, grey, backward, forward, map_x, map_y, carried_object) -> tuple[np.ndarray, FlowCheck]:
        """Forward-backward check: ``h x w`` bool of untrusted pixels, and the frame's figures."""
        untrusted = untrusted_flow(backward, forward, map_x, map_y, self.settings.fb_tolerance)
        region = cv2.dilate(carried_object.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        inconsistent = float(untrusted[region].mean()) if region.any() else 0.0
        return untrusted, FlowCheck(inconsistent, photometric_error(grey, self._grey, map_x, map_y))


#: A scene cut, for the carrier (``async``): the previous frame warped by the flow misses this one by
#: more than ``auto``'s key trigger (:attr:`KeyframeSettings.max_photometric`, "the flow cannot be
#: trusted") *and* by this many times the clip's recent level (the median of the last
#: :data:`CUT_HISTORY` frames): a cut makes the error jump where motion, blur or a flash raise it over
#: frames. On the eleven clips of davis-live, -motion and -train6 the largest jump between a frame
#: and its recent level is 2.2x (soccerball; motocross-jump peaks at 0.089 without a jump), and a
#: splice of one clip into another jumps to 0.117 or more (at least 5x).
CUT_JUMP = 3.0
CUT_HISTORY = 8
#: ... *and* the frame's colours are not the last frame's: the Bhattacharyya distance between their
#: hue-saturation histograms (:func:`colour_change`, 0 for the same colours, 1 for none shared) is
#: at least this. The warp's error jumps where the flow cannot follow the motion, not only at a cut:
#: a camera zoomed 3x panning fast (breakdance-pan3x, mallard-fly-pan3x) jumped 3.5-7.2x at 0.09-0.16,
#: and the mask was dropped for three frames of an object in full view. A pan keeps the scene's
#: colours, a cut changes them: on the pans of ``benchmarks/scenarios.py`` (2x, 2.5x, 3x, slower and
#: shorter holds) and the eleven clips, no frame changed them by more than 0.44 and the pans' false cuts by
#: 0.16-0.25; the 66 splices of the cut scenarios (8, 24 and 72 frames) by 0.50 or more.
CUT_COLOUR = 0.4
#: The hue-saturation histogram of :func:`colour_change`: 30 hues, 32 saturations.
COLOUR_BINS = (30, 32)


def colour_change(colour: np.ndarray, previous: np.ndarray) -> float:
    """Bhattacharyya distance (0-1) between the hue-saturation histograms of two small ``h x w x 3``
    uint8 RGB frames: how much of their colours they do not share, whatever moved where."""
    hists = []
    for image in (colour, previous):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, list(COLOUR_BINS), [0, 180, 0, 256])
        hists.append(cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1))
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA))


class FlowCarrier:
    """Carries ``K x h x w`` maps by optical flow on every frame, and brings a keyframe's maps
    that land late forward to the current frame through the flows computed since its frame.

    This is what lets the live loop keep up with a camera: the backbone runs in a worker on
    the newest frame while every camera frame gets a flow step (a few ms); when the
    backbone's result for frame ``k`` lands at frame ``n``, :meth:`land` replays the steps
    ``k+1 .. n`` on it (each a remap) instead of showing a mask ``n - k`` frames old.

    Memory is bounded: the flows of the last ``history`` frames are kept (a key older than
    that is refused by :meth:`land`), as float16 at ``flow_side``, with their grey frames (uint8).

    Args:
        flow_side: short side in px at which flow runs and maps are carried.
        fb_tolerance: forward-backward error (px) above which a pixel's flow is not trusted
            (background that a moving object uncovers is cleared, as in :class:`ScorePropagator`).
        history: frames of flow kept for late keys.
    """

    def __init__(self, flow_side: int = 240, fb_tolerance: float = 1.0, history: int = 32,
                 cut_photometric: float | None = 0.08):
        self.flow_side, self.fb_tolerance = flow_side, fb_tolerance
        self.cut_photometric = cut_photometric
        self._flow = PannedFlow()
        # (previous index, index, backward, forward, previous grey, grey, boxes of objects DIS followed)
        self._steps: deque = deque(maxlen=history)
        self._grey: np.ndarray | None = None
        self._colour: np.ndarray | None = None  # the last frame, small, in colour (a scene cut's colours)
        self._errors: deque = deque(maxlen=CUT_HISTORY)  # recent photometric errors (the clip's level)
        self.index: int | None = None
        self.maps: np.ndarray | None = None
        #: the frame of the last scene cut found (its maps were dropped), or None
        self.cut_at: int | None = None
        #: objects matched to their own shift (:func:`object_shift`) since the last :meth:`step` began,
        #: :meth:`land`'s replays included (the simulated clock of ``eval live`` charges each)
        self.matches = 0
        self._resize_next = False

    @classmethod
    def for_settings(cls, settings: KeyframeSettings, history: int = 32) -> "FlowCarrier":
        """The carrier of ``settings``: its flow side, and its forward-backward tolerance, given in px
        at 240 as for :class:`ScorePropagator`, scaled to that side (the same error on the frame);
        scene cuts as ``settings.max_photometric`` says (see :data:`CUT_JUMP`)."""
        return cls(settings.flow_side, settings.fb_tolerance * settings.flow_side / 240, history,
                   settings.max_photometric)

    def reset(self) -> None:
        """Forget the maps, the frames and their flows (a new scene or reference)."""
        self._steps.clear()
        self._errors.clear()
        self._grey, self._colour, self.index, self.maps = None, None, None, None

    def resize(self, flow_side: int) -> None:
        """Run the flow at ``flow_side`` from the next frame on: the carried maps are resized to it
        (that frame is carried without motion), the tolerance follows the side, and keys made
        before are refused when they land (their flows were at the old size)."""
        if flow_side == self.flow_side:
            return
        self.fb_tolerance *= flow_side / self.flow_side
        self.flow_side = flow_side
        self._resize_next = True

    def _is_cut(self, grey: np.ndarray, colour: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> bool:
        """This frame is a new scene (see :data:`CUT_JUMP` and :data:`CUT_COLOUR`); the error joins the
        clip's level. ``colour``: the frame, small (:meth:`_small_colour`); ``map_x``, ``map_y``: the
        backward flow's sampling grid (:func:`sampling_grid`)."""
        if self.cut_photometric is None:
            return False
        error = photometric_error(grey, self._grey, map_x, map_y)
        level = float(np.median(self._errors)) if self._errors else None
        cut = level is not None and error > self.cut_photometric and error > CUT_JUMP * max(level, 1e-3)
        if cut and self._colour is not None and self._colour.shape == colour.shape:
            cut = colour_change(colour, self._colour) >= CUT_COLOUR
        if cut:
            self._errors.clear()  # the new scene's level starts afresh
        self._errors.append(error)
        return cut

    def _nothing(self) -> np.ndarray:
        """Maps that show no object (score -1, similarity and shares 0), shaped as the maps carried."""
        nothing = np.zeros_like(self.maps)
        nothing[0] = -1.0
        return nothing

    def step(self, index: int, image: np.ndarray) -> np.ndarray | None:
        """Frame ``index`` (``H x W x 3`` uint8 RGB, later than the last): compute its flow from
        the last frame and carry the maps onto it. Returns the carried maps (None before any key)."""
        grey = small_grey(image, self.flow_side)
        colour = self._small_colour(image, grey.shape)
        self._flow.passes, self.matches = 0, 0
        if self._resize_next and self._grey is not None and flow_possible(grey):  # a new flow size (resize)
            self._resize_next = False
            self._steps.clear()
            if self.maps is not None:
                self.maps = np.stack([to_flow_size(m, grey.shape) for m in self.maps])
            self._grey, self._colour, self.index = grey, colour, index
            return self.maps
        if self._grey is None or grey.shape != self._grey.shape or not flow_possible(grey):
            self.reset()  # a frame too small for flow is keyed on its own
        else:
            backward = self._flow.backward(grey, self._grey)  # where each pixel of this frame was before
            grid = sampling_grid(backward)  # once: the cut check and the warp both sample by it
            if self._is_cut(grey, colour, *grid):  # a new scene: nothing of the old one is carried onto it
                self._steps.clear()  # a key made before the cut is refused when it lands
                self.cut_at = index
                if self.maps is not None:
                    self.maps = self._nothing()
            else:
                forward = self._flow.forward(self._grey, grey)
                kept: list = []  # filled by this step's carry, read by a late key's replay of it
                self._steps.append((self.index, index, backward.astype(np.float16), forward.astype(np.float16),
                                    self._grey, grey, kept))
                if self.maps is not None:
                    self.maps = self._warp(self.maps, backward, forward, self._grey, grey, grid, kept=kept)
        self._grey, self._colour, self.index = grey, colour, index
        return self.maps

    @staticmethod
    def _small_colour(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The frame (``H x W x 3`` uint8 RGB) at the flow's ``(h, w)``, nearest pixels: what
        :func:`colour_change` compares (a histogram needs no finer resampling)."""
        return cv2.resize(np.ascontiguousarray(image[:, :, :3]), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    @property
    def passes(self) -> int:
        """DIS passes the last :meth:`step` ran: 2, 3 when DIS ran again from the camera's shift
        (:class:`PannedFlow`), 1 or 2 on a scene cut (no forward flow), 0 when it computed no flow
        (the first frame, a new flow size)."""
        return self._flow.passes

    def land(self, key_index: int, maps: "np.ndarray | list[np.ndarray]") -> bool:
        """A keyframe's maps (each 2-D, any resolution) for frame ``key_index``, carried forward to
        the current frame. Returns False (and keeps the current maps) when that frame's flows are
        no longer held."""
        size = self._grey.shape if self._grey is not None else None
        if size is None:
            return False
        carried = np.stack([to_flow_size(np.asarray(m, np.float32), size) for m in maps])
        if key_index != self.index:
            later = [step for step in self._steps if step[1] > key_index]
            if not later or later[0][0] != key_index:
                return False
            for _, _, backward, forward, previous, grey, kept in later:
                carried = self._warp(carried, backward.astype(np.float32), forward.astype(np.float32), previous, grey,
                                     known=kept)
        self.maps = carried
        return True

    @staticmethod
    def _objects(maps: np.ndarray) -> list[np.ndarray]:
        """The carried objects (``h x w`` bool each): the score's object (``maps[0] > 0``), or with
        several objects each one's part of it (``maps[2:]``, one share each, as
        :meth:`~dinomask.segmenter.Segmenter.carry_maps` lays them out)."""
        shown = maps[0] > 0
        if len(maps) < 4:
            return [shown]
        return [shown & (share > 0.5) for share in maps[2:]]

    def _warp(self, maps: np.ndarray, backward: np.ndarray, forward: np.ndarray, previous: np.ndarray,
              grey: np.ndarray, grid: tuple[np.ndarray, np.ndarray] | None = None, kept: list | None = None,
              known: list = ()) -> np.ndarray:
        """One step, as :meth:`ScorePropagator.step` carries: each carried object that DIS lost moved
        by its own shift (:func:`follow_object`), backward warping, then uncovered background cleared.
        ``previous``, ``grey``: the step's grey frames; ``grid``: the backward flow's sampling grid,
        when already made. ``kept``: the step's own carry adds the boxes of the objects DIS followed;
        ``known``: those boxes, when a late key is carried through the step: an object of the key on
        one of them (:data:`SAME_OBJECT_IOU`) is that object, which DIS followed, and is not matched
        again (most keys land a frame or two late, and carry the object the loop carried)."""
        followed = False  # the flows are this step's own copies: changed in place
        for obj in self._objects(maps):
            if np.count_nonzero(obj) < MIN_OBJECT_PX:
                continue
            box = cv2.boundingRect(obj.astype(np.uint8))
            if any(_box_iou(box, other) >= SAME_OBJECT_IOU for other in known):
                continue
            self.matches += 1
            if follow_object(backward, forward, previous, grey, obj):
                followed = True
            elif kept is not None:
                kept.append(box)
        return carry_step(maps, backward, forward, self.fb_tolerance, None if followed else grid)
