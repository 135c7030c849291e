"""``dinomask eval recognition``: nearest-prototype object recognition with and without removal.

Each class (a class folder, or a sequence where the data has none) gets a reference from
its first ``refs`` labelled frames, painted black as in the method; its prototype is the
mean DINOv2 global (CLS) feature of those references. Every other frame is classified
by cosine to the nearest class prototype three ways:

* ``full``: the CLS of the whole frame;
* ``removed``: the CLS of the frame with the background removed by the segmenter (one
  segmenter holding every class's reference, so it does not know the answer);
* ``ground-truth mask``: the CLS of the frame with the annotated background removed,
  the upper bound of what removal can give.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from dinomask.backbones import Backbone
from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import Dataset, load_pair
from dinomask.evaluate.metrics import ConfusionMatrix
from dinomask.evaluate.predictors import sequence_reference
from dinomask.features import extract_features
from dinomask.prototypes import l2_normalize
from dinomask.segmenter import Segmenter, SegmenterConfig

VARIANTS = ("full", "removed", "ground-truth mask")


def _painted(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, :, None], image, 0).astype(np.uint8)


def evaluate_recognition(
    dataset: Dataset, backbone: Backbone, config: SegmenterConfig, *, refs: int = 1,
    max_frames: int | None = None, show_progress: bool = True,
) -> dict:
    """Accuracy, per-class accuracy and confusion matrices for the three variants."""
    problems = list(dataset.problems)
    classes, references, scored = [], [], []
    for sequence in dataset.sequences:
        if len(sequence.frames) <= refs:
            problems.append(f"{sequence.name}: needs more than {refs} labelled frames; class skipped")
            continue
        try:
            reference = sequence_reference(backbone, sequence, refs, config)
        except DinomaskError as exc:
            problems.append(f"{sequence.name}: reference unusable ({exc}); class skipped")
            continue
        classes.append(sequence.name)
        references.append(reference)
        frames = sequence.frames[refs:]
        scored += [(len(classes) - 1, f) for f in (frames[:max_frames] if max_frames else frames)]
    if len(classes) < 2:
        raise DinomaskError(f"recognition needs at least two classes with usable references, got {len(classes)}")
    prototypes = l2_normalize(np.stack([r.cls.mean(axis=0) for r in references]))
    segmenter = Segmenter(backbone, references, config)
    matrices = {v: ConfusionMatrix(classes) for v in VARIANTS}
    rows = []
    for truth, frame in tqdm(scored, desc="eval recognition", unit="frame", disable=not show_progress):
        try:
            image, mask = load_pair(frame)
        except DinomaskError as exc:
            problems.append(f"{frame.image}: {exc}; not scored")
            continue
        segmenter.reset()
        predicted = segmenter.predict(image).mask
        features = extract_features(backbone, [image, _painted(image, predicted), _painted(image, mask)], config.geometry)
        row = {"frame": str(frame.image), "class": classes[truth], "mask_fraction": float(predicted.mean())}
        for variant, feats in zip(VARIANTS, features):
            guess = int(np.argmax(prototypes @ feats.cls))
            matrices[variant].update(np.array([truth]), np.array([guess]))
            row[variant] = classes[guess]
        rows.append(row)
    return {
        "classes": classes,
        "variants": {v: matrices[v].compute() for v in VARIANTS},
        "per_frame": rows,
        "problems": problems,
        "references_per_class": refs,
        "segmenter": config.method,
    }
