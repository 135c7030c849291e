"""Metrics as accumulators (``update`` / ``reset`` / ``compute``) and per-frame mask scores.

Conventions, written into every report:

* IoU of a class where prediction and ground truth are both empty is 1.0 (nothing to
  find, nothing found); where only one is empty it is 0.0.
* mIoU averages the IoU of the two classes, object and background.
* A dataset mean is the mean over sequences of the per-sequence mean over frames, so a
  long sequence does not outweigh a short one (as in the DAVIS benchmark).
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

    def plot(self, path, title: str = "", normalize: bool = True):
        """Save the matrix as a PNG (matplotlib)."""
        from dinomask.plots import plot_confusion

        return plot_confusion(self.matrix, self.labels, path, title=title, normalize=normalize)


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass(frozen=True)
class MaskScore:
    """Scores of one predicted mask against its ground truth."""

    iou: float
    miou: float
    pixel_accuracy: float
    confusion: np.ndarray  # 2 x 2: [[tn, fp], [fn, tp]]


def _iou(tp: int, fp: int, fn: int) -> float:
    union = tp + fp + fn
    return 1.0 if union == 0 else tp / union


def score_mask(prediction: np.ndarray, truth: np.ndarray) -> MaskScore:
    """IoU of the object, mIoU over object and background, pixel accuracy.

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
    )
