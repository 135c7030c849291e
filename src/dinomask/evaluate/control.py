"""``dinomask eval control``: the effect of background removal on a simple closed loop.

The model (deterministic, documented in every report): a pan-tilt camera keeps the
object centred. The recorded frames stand for what the camera sees; the camera's aim
``c_t`` is a point in normalised frame coordinates (0..1 on each axis), and the object
appears in the camera's image at ``g_t - c_t`` from its centre, where ``g_t`` is the
object's position in the frame. Each step (one frame):

1. perception measures the object's position ``m_t`` in the frame;
2. the controller sees the error ``e_t = m_t - c_t`` and commands ``c_{t+1} = c_t + K e_t``
   (proportional control with gain ``K`` and one frame of delay);
3. when perception finds nothing, the camera holds still.

The camera starts aimed at the frame centre. Measured against the ground truth ``g_t``
(centroid of the annotation mask): the deviation ``|g_t - c_t|`` over time, its RMS and
maximum, and the jitter: the RMS of the frame-to-frame change of the measurement error
``m_t - g_t`` (a steady bias has none, a flickering mask has much).

Perception pipelines:

* ``with removal``: centroid of the segmenter's mask;
* ``without removal``: similarity-weighted centroid on the unmasked frame (weights are
  the patch similarity to the object, clipped at 0) — what one gets without a mask;
* ``ground truth``: centroid of the annotation mask (shows the controller's own lag).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from dinomask.backbones import Backbone
from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import Dataset, load_pair
from dinomask.evaluate.predictors import sequence_reference
from dinomask.segmenter import Segmenter, SegmenterConfig

PIPELINES = ("with removal", "without removal", "ground truth")


@dataclass(frozen=True)
class ControlModel:
    """Parameters of the simulated loop.

    Attributes:
        gain: proportional gain ``K`` per frame (0 < K <= 1).
    """

    gain: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.gain <= 1.0:
            raise ValueError(f"gain must be in (0, 1], got {self.gain}")


def mask_centroid(mask: np.ndarray) -> np.ndarray | None:
    """``(x, y)`` in 0..1 frame coordinates, or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([(xs.mean() + 0.5) / mask.shape[1], (ys.mean() + 0.5) / mask.shape[0]])


def weighted_centroid(similarity: np.ndarray) -> np.ndarray | None:
    """Similarity-weighted centroid of patch centres (weights clipped at 0), 0..1 coordinates."""
    weights = np.clip(similarity, 0.0, None)
    total = float(weights.sum())
    if total <= 0:
        return None
    h, w = similarity.shape
    ys, xs = np.mgrid[0:h, 0:w]
    return np.array([((xs + 0.5) * weights).sum() / total / w, ((ys + 0.5) * weights).sum() / total / h])


def simulate(truth: list[np.ndarray], measured: list[np.ndarray | None], model: ControlModel) -> dict:
    """Run the loop over one sequence.

    Args:
        truth: ``g_t``, ground-truth positions (x, y) in 0..1.
        measured: ``m_t``, perceived positions, None where nothing was found.

    Returns:
        ``deviation`` per step, ``rms``, ``max``, ``jitter``, ``lost`` (steps with no measurement).
    """
    aim = np.array([0.5, 0.5])
    deviation, errors, lost = [], [], 0
    for g, m in zip(truth, measured):
        deviation.append(float(np.linalg.norm(g - aim)))
        if m is None:
            lost += 1
            continue
        errors.append(m - g)
        aim = aim + model.gain * (m - aim)
    deviation_arr = np.array(deviation)
    steps = np.diff(np.array(errors), axis=0) if len(errors) > 1 else np.zeros((0, 2))
    return {
        "deviation": deviation_arr.tolist(),
        "rms": float(np.sqrt(np.mean(deviation_arr ** 2))),
        "max": float(deviation_arr.max()),
        "jitter": float(np.sqrt(np.mean(np.sum(steps ** 2, axis=1)))) if len(steps) else 0.0,
        "lost": lost,
    }


def evaluate_control(
    dataset: Dataset, backbone: Backbone, config: SegmenterConfig, *, model: ControlModel = ControlModel(),
    refs: int = 1, max_frames: int | None = None, show_progress: bool = True,
) -> dict:
    """Simulate the loop on every sequence with the three perception pipelines."""
    problems = list(dataset.problems)
    sequences: dict[str, dict] = {}
    for sequence in tqdm(dataset.sequences, desc="eval control", unit="sequence", disable=not show_progress):
        if len(sequence.frames) <= refs + 1:
            problems.append(f"{sequence.name}: too few labelled frames for a loop; skipped")
            continue
        try:
            reference = sequence_reference(backbone, sequence, refs, config)
        except DinomaskError as exc:
            problems.append(f"{sequence.name}: reference unusable ({exc}); skipped")
            continue
        segmenter = Segmenter(backbone, reference, config)
        truth, measured = [], {p: [] for p in PIPELINES}
        frames = sequence.frames[refs:]
        for frame in frames[:max_frames] if max_frames else frames:
            try:
                image, mask = load_pair(frame)
            except DinomaskError as exc:
                problems.append(f"{frame.image}: {exc}; not used")
                continue
            g = mask_centroid(mask)
            if g is None:
                problems.append(f"{frame.image}: empty ground-truth mask; step not used")
                continue
            result = segmenter.predict(image)
            truth.append(g)
            measured["with removal"].append(mask_centroid(result.mask))
            measured["without removal"].append(weighted_centroid(result.similarity))
            measured["ground truth"].append(g)
        if len(truth) < 2:
            problems.append(f"{sequence.name}: fewer than two usable steps; skipped")
            continue
        sequences[sequence.name] = {p: simulate(truth, measured[p], model) for p in PIPELINES}
    if not sequences:
        raise DinomaskError("no sequence could be simulated; see the problems above")
    summary = {
        p: {metric: float(np.mean([s[p][metric] for s in sequences.values()])) for metric in ("rms", "max", "jitter")}
        for p in PIPELINES
    }
    return {"model": {"gain": model.gain, "delay_frames": 1, "start": [0.5, 0.5]}, "sequences": sequences,
            "mean_over_sequences": summary, "problems": problems, "segmenter": config.method}
