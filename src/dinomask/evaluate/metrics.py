"""Metrics as accumulators (``update`` / ``reset`` / ``compute``) and per-frame mask scores.

Conventions, written into every report:

* J is the IoU of the object (DAVIS's region similarity). Where prediction and ground
  truth are both empty it is 1.0 (nothing to find, nothing found); where only one is
  empty it is 0.0.
* F is DAVIS's boundary measure: the F1 of boundary pixels matched within a tolerance of
  0.8% of the image diagonal (:func:`boundary_f`, as in the DAVIS 2016/2017 toolkit).
* J&F is the mean of J and F. mIoU (mean of object and background IoU) is kept as a
  column, but never ranks: an empty mask scores about 0.46 on it.
* Per sequence, DAVIS statistics of a per-frame series: mean, recall (share of frames
  above 0.5) and decay (mean of the first quarter of frames minus mean of the last).
* A dataset mean is the mean over sequences of the per-sequence statistic, so a long
  sequence does not outweigh a short one (as in the DAVIS benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ConfusionMatrix:
    """An ``n x n`` confusion matrix, rows = ground truth, columns = prediction.

    Args:
        labels: class names, in index order.
    """

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, truth: np.ndarray, prediction: np.ndarray) -> None:
        """Add pairs of integer labels (any equal shapes)."""
        truth = np.asarray(truth).astype(np.int64).ravel()
        prediction = np.asarray(prediction).astype(np.int64).ravel()
        if truth.shape != prediction.shape:
            raise ValueError(f"truth and prediction differ in size: {truth.shape} vs {prediction.shape}")
        n = len(self.labels)
        self.matrix += np.bincount(truth * n + prediction, minlength=n * n).reshape(n, n)

    def compute(self) -> dict:
        """Accuracy, per-class accuracy (recall) and IoU, and the matrix itself."""
        m = self.matrix.astype(np.float64)
        total = m.sum()
        diag = np.diag(m)
        rows, cols = m.sum(axis=1), m.sum(axis=0)
        per_class = np.where(rows > 0, diag / np.maximum(rows, 1), np.nan)
        union = rows + cols - diag
        iou = np.where(union > 0, diag / np.maximum(union, 1), np.nan)
        return {
            "accuracy": float(diag.sum() / total) if total else float("nan"),
            "per_class_accuracy": {label: _num(v) for label, v in zip(self.labels, per_class)},
            "iou": {label: _num(v) for label, v in zip(self.labels, iou)},
            "matrix": self.matrix.tolist(),
            "labels": self.labels,
        }

    def plot(self, path, title: str = "", normalize: bool = True, caption: str = ""):
        """Save the matrix as a PNG (matplotlib); ``caption`` under it (model, data, random weights)."""
        from dinomask.plots import plot_confusion

        return plot_confusion(self.matrix, self.labels, path, title=title, normalize=normalize, caption=caption)


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass(frozen=True)
class MaskScore:
    """Scores of one predicted mask against its ground truth (``iou`` is J, ``f`` is F)."""

    iou: float
    miou: float
    pixel_accuracy: float
    confusion: np.ndarray  # 2 x 2: [[tn, fp], [fn, tp]]
    f: float = float("nan")

    @property
    def jf(self) -> float:
        return (self.iou + self.f) / 2.0


#: DAVIS's boundary tolerance: a fraction of the image diagonal.
BOUNDARY_TOLERANCE = 0.008


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """``H x W`` bool -> its one-pixel boundary, as DAVIS's ``seg2bmap`` computes it: a pixel
    differing from its east, south or south-east neighbour (the image edge continues it)."""
    seg = mask.astype(bool)
    east, south, south_east = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bound = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bound[-1, :] = seg[-1, :] ^ east[-1, :]
    bound[:, -1] = seg[:, -1] ^ south[:, -1]
    bound[-1, -1] = False
    return bound


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    disk = (x * x + y * y <= radius * radius).astype(np.uint8)  # skimage.morphology.disk(radius)
    return cv2.dilate(mask.astype(np.uint8), disk).astype(bool)


def boundary_f(prediction: np.ndarray, truth: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """DAVIS's boundary measure F: precision and recall of boundary pixels, each matched
    within ``ceil(tolerance * diagonal)`` px (``tolerance >= 1`` is taken as pixels).

    Both boundaries empty gives 1; one empty gives 0.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in size")
    radius = int(tolerance if tolerance >= 1 else np.ceil(tolerance * np.linalg.norm(truth.shape)))
    predicted, annotated = boundary_map(prediction), boundary_map(truth)
    n_pred, n_true = int(predicted.sum()), int(annotated.sum())
    if n_pred == 0 and n_true == 0:
        return 1.0
    if n_pred == 0 or n_true == 0:
        return 0.0
    precision = float((predicted & _dilate(annotated, radius)).sum()) / n_pred
    recall = float((annotated & _dilate(predicted, radius)).sum()) / n_true
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def davis_statistics(values: list[float]) -> dict[str, float]:
    """Mean, recall (share above 0.5) and decay of a per-frame series, as the DAVIS toolkit
    computes them (decay: mean of the first of four equal bins minus mean of the last)."""
    series = np.asarray(values, dtype=np.float64)
    if series.size == 0:
        return {"mean": float("nan"), "recall": float("nan"), "decay": float("nan")}
    ids = (np.round(np.linspace(1, series.size, 5) + 1e-10) - 1).astype(int)
    bins = [series[ids[i]:ids[i + 1] + 1] for i in range(4)]
    return {"mean": float(np.nanmean(series)), "recall": float(np.nanmean(series > 0.5)),
            "decay": float(np.nanmean(bins[0]) - np.nanmean(bins[3]))}


def _iou(tp: int, fp: int, fn: int) -> float:
    union = tp + fp + fn
    return 1.0 if union == 0 else tp / union


def score_mask(prediction: np.ndarray, truth: np.ndarray, boundary: bool = True) -> MaskScore:
    """J (IoU of the object), F (boundary, unless ``boundary=False``), mIoU over object and
    background, pixel accuracy.

    Args:
        prediction, truth: ``H x W`` bool masks of the same shape.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in size")
    p, t = prediction.astype(bool), truth.astype(bool)
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    tn = int(p.size - tp - fp - fn)
    object_iou = _iou(tp, fp, fn)
    background_iou = _iou(tn, fn, fp)
    return MaskScore(
        iou=object_iou,
        miou=(object_iou + background_iou) / 2.0,
        pixel_accuracy=(tp + tn) / p.size,
        confusion=np.array([[tn, fp], [fn, tp]], dtype=np.int64),
        f=boundary_f(p, t) if boundary else float("nan"),
    )
