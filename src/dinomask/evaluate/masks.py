"""``dinomask eval masks``: mask quality of several settings side by side, with a threshold sweep.

For every sequence: the first ``max(refs)`` frames are references (painted black as in
the method) and are never scored; every other frame with a mask is scored by every
setting, so all columns of the table see exactly the same frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import Dataset, LabelledFrame
from dinomask.evaluate.metrics import ConfusionMatrix, score_mask
from dinomask.evaluate.predictors import MaskPredictor
from dinomask.postprocess import upsample_score
from dinomask.preprocess import load_image, load_mask

SWEEP = tuple(round(float(t), 2) for t in np.arange(0.0, 1.0001, 0.05))


@dataclass
class SweepTarget:
    """A setting whose similarity map is re-thresholded at every value of ``SWEEP``."""

    name: str
    upsample: str
    confusion: dict[float, np.ndarray] = field(default_factory=dict)
    per_sequence: dict[str, dict[float, list[float]]] = field(default_factory=dict)


@dataclass
class MaskEvalResult:
    """Everything ``eval masks`` measured; ``to_json`` gives the metrics.json body."""

    settings: list[str]
    per_frame: dict[str, list[dict]]
    per_sequence: dict[str, dict[str, dict[str, float]]]
    dataset: dict[str, dict[str, float]]
    confusion: dict[str, dict]
    sweeps: dict[str, dict]
    problems: list[str]
    rules: dict[str, list[str]]
    examples: list[dict]

    def to_json(self) -> dict:
        return {
            "settings": self.settings,
            "dataset_mean": self.dataset,
            "per_sequence": self.per_sequence,
            "per_frame": self.per_frame,
            "pixel_confusion": self.confusion,
            "threshold_sweeps": self.sweeps,
            "threshold_rules_used": self.rules,
            "problems": self.problems,
        }


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _load_pair(frame: LabelledFrame) -> tuple[np.ndarray, np.ndarray]:
    image = load_image(frame.image)
    mask = load_mask(frame.mask, size=image.shape[:2])
    return image, mask


def evaluate_masks(
    dataset: Dataset,
    predictors: dict[str, MaskPredictor],
    refs: dict[str, int],
    *,
    sweep: dict[str, str] | None = None,
    max_frames: int | None = None,
    examples: int = 4,
    show_progress: bool = True,
) -> MaskEvalResult:
    """Score every predictor on every scored frame of the dataset.

    Args:
        dataset: from :func:`~dinomask.evaluate.datasets.load_dataset`.
        predictors: name -> predictor, in table order.
        refs: name -> reference frames that predictor uses (1 for non-one-shot ones).
        sweep: name -> upsample mode, for the predictors to sweep thresholds on.
        max_frames: score at most this many frames per sequence (after the references).
        examples: how many frames to keep (image, similarity, masks) for the heatmap plot.
    """
    if not dataset.sequences:
        raise DinomaskError(f"{dataset.root}: no sequence with labelled frames to evaluate")
    problems = list(dataset.problems)
    skip = max(refs.values())
    names = list(predictors)
    per_frame: dict[str, list[dict]] = {n: [] for n in names}
    per_sequence: dict[str, dict[str, dict[str, float]]] = {n: {} for n in names}
    confusion = {n: np.zeros((2, 2), np.int64) for n in names}
    rules: dict[str, set[str]] = {n: set() for n in names}
    sweeps = {name: SweepTarget(name, mode) for name, mode in (sweep or {}).items()}
    kept_examples: list[dict] = []
    total = sum(max(0, len(s.frames) - skip) if max_frames is None else min(max_frames, max(0, len(s.frames) - skip))
                for s in dataset.sequences)
    progress = tqdm(total=total * len(names), desc="eval masks", unit="mask", disable=not show_progress)
    for sequence in dataset.sequences:
        if len(sequence.frames) <= skip:
            problems.append(f"{sequence.name}: {len(sequence.frames)} labelled frames, {skip} needed as references "
                            "and at least one to score; skipped")
            continue
        try:
            references = [_load_pair(f) for f in sequence.frames[:skip]]
        except DinomaskError as exc:
            problems.append(f"{sequence.name}: reference frame unusable ({exc}); sequence skipped")
            continue
        started = []
        for name, predictor in predictors.items():
            try:
                predictor.start_sequence(references[: refs[name]])
                started.append(name)
            except DinomaskError as exc:
                problems.append(f"{sequence.name}: {name} could not use the reference ({exc})")
        scored = sequence.frames[skip:]
        if max_frames is not None:
            scored = scored[:max_frames]
        seq_scores: dict[str, list] = {n: [] for n in names}
        for frame in scored:
            try:
                image, truth = _load_pair(frame)
            except DinomaskError as exc:
                problems.append(f"{frame.image}: {exc}; not scored")
                progress.update(len(names))
                continue
            for name in started:
                prediction = predictors[name].predict(image, str(frame.image))
                score = score_mask(prediction.mask, truth)
                confusion[name] += score.confusion
                rules[name].add(prediction.rule)
                row = {"sequence": sequence.name, "frame": frame.image.name, "iou": score.iou, "miou": score.miou,
                       "pixel_accuracy": score.pixel_accuracy}
                per_frame[name].append(row)
                seq_scores[name].append(row)
                if name in sweeps and prediction.similarity is not None:
                    _sweep_frame(sweeps[name], sequence.name, prediction.similarity, truth)
                if len(kept_examples) < examples * len(names) and prediction.similarity is not None:
                    kept_examples.append({"setting": name, "sequence": sequence.name, "frame": frame.image.name,
                                          "image": image, "similarity": prediction.similarity,
                                          "mask": prediction.mask, "truth": truth})
                progress.update(1)
        for name in names:
            rows = seq_scores[name]
            if rows:
                per_sequence[name][sequence.name] = {
                    metric: _mean([r[metric] for r in rows]) for metric in ("iou", "miou", "pixel_accuracy")
                } | {"frames": len(rows)}
    progress.close()
    dataset_mean = {
        name: {metric: _mean([s[metric] for s in per_sequence[name].values()])
               for metric in ("iou", "miou", "pixel_accuracy")} | {
            "sequences": len(per_sequence[name]), "frames": len(per_frame[name])}
        for name in names
    }
    confusion_json = {}
    for name in names:
        matrix = ConfusionMatrix(["background", "object"])
        matrix.matrix[:] = confusion[name]
        confusion_json[name] = matrix.compute()
    return MaskEvalResult(
        settings=names,
        per_frame=per_frame,
        per_sequence=per_sequence,
        dataset=dataset_mean,
        confusion=confusion_json,
        sweeps={name: _finish_sweep(target) for name, target in sweeps.items()},
        problems=problems,
        rules={n: sorted(r) for n, r in rules.items()},
        examples=kept_examples,
    )


def _sweep_frame(target: SweepTarget, sequence: str, similarity: np.ndarray, truth: np.ndarray) -> None:
    seq = target.per_sequence.setdefault(sequence, {t: [] for t in SWEEP})
    size = truth.shape
    for threshold in SWEEP:
        mask = upsample_score(similarity - threshold, size, target.upsample) > 0
        score = score_mask(mask, truth)
        seq[threshold].append(score.miou)
        target.confusion[threshold] = target.confusion.get(threshold, 0) + score.confusion


def _finish_sweep(target: SweepTarget) -> dict:
    curve = {t: _mean([_mean(v[t]) for v in target.per_sequence.values()]) for t in SWEEP}
    best = max(curve, key=lambda t: (curve[t], -abs(t - 0.5)))
    return {"upsample": target.upsample, "thresholds": list(SWEEP), "miou": [curve[t] for t in SWEEP],
            "best_threshold": best, "best_miou": curve[best]}
