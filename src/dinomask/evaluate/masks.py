"""``dinomask eval masks``: mask quality of several settings side by side, with a threshold sweep.

For every sequence: the first ``max(refs)`` frames are references (painted black as in
the method) and are never scored; every other frame with a mask is scored by every
setting, so all columns of the table see exactly the same frames. Settings are ranked by
J&F (DAVIS's region and boundary measures, see :mod:`dinomask.evaluate.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import Dataset, LabelledFrame, LabelledSequence, load_pair, load_truth_labels
from dinomask.evaluate.metrics import ConfusionMatrix, davis_statistics, score_mask
from dinomask.evaluate.predictors import MaskPredictor
from dinomask.postprocess import upsample_score
from dinomask.preprocess import load_image

SWEEP = tuple(round(float(t), 2) for t in np.arange(0.0, 1.0001, 0.05))


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


@dataclass
class SequenceScores:
    """What one sequence contributes; :func:`aggregate` merges these in dataset order."""

    name: str
    rows: dict[str, list[dict]]
    confusion: dict[str, np.ndarray]
    rules: dict[str, set]
    sweeps: dict[str, dict]  # setting -> {"j": {threshold: [per-frame J]}, "confusion": {threshold: 2x2}}
    problems: list[str]
    examples: list[dict]
    oracle_rows: dict[str, list[dict]] = field(default_factory=dict)  # setting -> per-frame oracle J, F


def score_sequence(
    sequence: LabelledSequence,
    predictors: dict[str, MaskPredictor],
    refs: dict[str, int],
    *,
    sweep: dict[str, str] | None = None,
    max_frames: int | None = None,
    examples: int = 1,
    example_setting: str | None = None,
    progress: tqdm | None = None,
    oracle: bool = False,
) -> SequenceScores:
    """Score every predictor on one sequence's scored frames (the first ``max(refs)`` are references)."""
    names = list(predictors)
    sweep = sweep or {}
    skip = max(refs.values())
    out = SequenceScores(sequence.name, {n: [] for n in names}, {n: np.zeros((2, 2), np.int64) for n in names},
                         {n: set() for n in names}, {n: {"j": {t: [] for t in SWEEP}, "confusion": {}} for n in sweep},
                         [], [])
    if len(sequence.frames) <= skip:
        out.problems.append(f"{sequence.name}: {len(sequence.frames)} labelled frames, {skip} needed as references "
                            "and at least one to score; skipped")
        return out
    try:
        references = [load_pair(f) for f in sequence.frames[:skip]]
    except DinomaskError as exc:
        out.problems.append(f"{sequence.name}: reference frame unusable ({exc}); sequence skipped")
        return out
    objects = _objects_of(sequence.frames[0], references[0][0].shape[:2])
    scored = sequence.frames[skip:]
    if max_frames is not None:
        scored = scored[:max_frames]
    for object_id in objects:  # a label map: each object on its own, one reference each (DAVIS-2017)
        if object_id is None:
            object_refs = references
        else:
            object_refs = [(image, load_truth_labels(frame.mask, image.shape[:2]) == object_id)
                           for (image, _), frame in zip(references, sequence.frames[:skip])]
        started, refused = [], []
        for name, predictor in predictors.items():
            try:
                predictor.start_sequence(object_refs[: refs[name]])
                started.append(name)
            except DinomaskError as exc:
                refused.append(f"{name} ({exc})")
        if refused:  # every setting is scored on the same frames, or the table compares different data
            which = "" if object_id is None else f" object {object_id}"
            out.problems.append(f"{sequence.name}{which}: could not use the reference frame for " + "; ".join(refused)
                                + "; sequence skipped for every setting")
            if progress is not None:
                progress.update(len(names) * len(scored))
            for name in names:  # no object of this clip is half-scored
                out.rows[name] = []
            return out
        _score_frames(out, sequence, scored, predictors, started, object_id, sweep, examples, example_setting,
                      progress, oracle)
    return out


def _objects_of(frame: LabelledFrame, size: tuple[int, int]) -> list[int | None]:
    """The object ids of a reference frame's label map when it holds several, else ``[None]``."""
    try:
        ids = [int(i) for i in np.unique(load_truth_labels(frame.mask, size)) if i]
    except DinomaskError:
        return [None]
    return ids if len(ids) > 1 else [None]


def _score_frames(out: SequenceScores, sequence: LabelledSequence, scored, predictors, started: list[str],
                  object_id: int | None, sweep: dict, examples: int, example_setting: str | None, progress,
                  oracle: bool) -> None:
    """Every started predictor on every scored frame, for one object (``object_id``; None: the mask's one)."""
    names = list(predictors)
    for frame in scored:
        try:
            if object_id is None:
                image, truth = load_pair(frame)
            else:  # the mask file read once, as ids
                image = load_image(frame.image)
                truth = load_truth_labels(frame.mask, image.shape[:2]) == object_id
        except DinomaskError as exc:
            out.problems.append(f"{frame.image}: {exc}; not scored")
            if progress is not None:
                progress.update(len(names))
            continue
        for name in started:
            if oracle and hasattr(predictors[name], "oracle"):
                best = predictors[name].oracle(image, truth)
                ceiling = score_mask(best.mask, truth)
                out.oracle_rows.setdefault(name, []).append({"iou": ceiling.iou, "f": ceiling.f, "patches": best.patches})
            prediction = predictors[name].predict(image, str(frame.image))
            score = score_mask(prediction.mask, truth)
            out.confusion[name] += score.confusion
            out.rules[name].add(prediction.rule)
            out.rows[name].append({"sequence": sequence.name, "frame": frame.image.name, "iou": score.iou,
                                   "f": score.f, "miou": score.miou, "pixel_accuracy": score.pixel_accuracy,
                                   "patches": prediction.patches, "object": object_id})
            if name in sweep and prediction.similarity is not None:
                _sweep_frame(out.sweeps[name], sweep[name], prediction.similarity, truth)
            if name == example_setting and len(out.examples) < examples and prediction.similarity is not None:
                out.examples.append({"setting": name, "sequence": sequence.name, "frame": frame.image.name,
                                     "image": image, "similarity": prediction.similarity,
                                     "mask": prediction.mask, "truth": truth})
            if progress is not None:
                progress.update(1)


def scored_frame_count(dataset: Dataset, refs: dict[str, int], max_frames: int | None) -> int:
    skip = max(refs.values())
    counts = [max(0, len(s.frames) - skip) for s in dataset.sequences]
    return sum(c if max_frames is None else min(c, max_frames) for c in counts)


#: Per-sequence statistics: DAVIS's J and F (mean, recall, decay), J&F, and the pixel scores.
SEQUENCE_METRICS = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "jf", "miou", "pixel_accuracy")


def sequence_statistics(rows: list[dict]) -> dict[str, float]:
    """One sequence's statistics from its per-frame rows (in frame order). Rows of several objects
    (a label map) are scored per object and the sequence by the mean over its objects, as DAVIS-2017
    does; each object's statistics stay under ``objects``."""
    ids = list(dict.fromkeys(r.get("object") for r in rows))
    if len(ids) > 1 or (ids and ids[0] is not None):
        per_object = {str(i): sequence_statistics([{**r, "object": None} for r in rows if r.get("object") == i])
                      for i in ids}
        keys = [k for k in next(iter(per_object.values())) if k != "frames"]
        return {k: _mean([o[k] for o in per_object.values()]) for k in keys} | {"frames": len(rows),
                                                                              "objects": per_object}
    j, f = davis_statistics([r["iou"] for r in rows]), davis_statistics([r["f"] for r in rows])
    stats = {f"j_{k}": v for k, v in j.items()} | {f"f_{k}": v for k, v in f.items()}
    return stats | {"jf": (j["mean"] + f["mean"]) / 2, "iou": j["mean"],
                    "miou": _mean([r["miou"] for r in rows]),
                    "pixel_accuracy": _mean([r["pixel_accuracy"] for r in rows]), "frames": len(rows)}


def aggregate(dataset: Dataset, names: list[str], parts: list[SequenceScores], sweep: dict[str, str],
              examples: int = 6) -> MaskEvalResult:
    """Merge per-sequence scores (in dataset order) into dataset means, confusion and sweeps.

    ``examples``: heatmap examples kept, at most one per sequence."""
    problems = list(dataset.problems)
    per_frame: dict[str, list[dict]] = {n: [] for n in names}
    per_sequence: dict[str, dict[str, dict[str, float]]] = {n: {} for n in names}
    confusion = {n: np.zeros((2, 2), np.int64) for n in names}
    rules: dict[str, set] = {n: set() for n in names}
    curves: dict[str, dict[str, dict[float, list[float]]]] = {n: {} for n in sweep}
    kept: list[dict] = []
    oracle_by_sequence: dict[str, list[dict]] = {}
    for part in parts:
        for name, rows in part.oracle_rows.items():
            oracle_by_sequence.setdefault(name, []).append({"j": _mean([r["iou"] for r in rows]),
                                                            "f": _mean([r["f"] for r in rows]),
                                                            "patches": _mean([r["patches"] for r in rows])})
        problems += part.problems
        kept += part.examples[: max(0, min(1, examples - len(kept)))]
        for name in names:
            rows = part.rows[name]
            per_frame[name] += rows
            confusion[name] += part.confusion[name]
            rules[name] |= part.rules[name]
            if rows:
                per_sequence[name][part.name] = sequence_statistics(rows)
        for name in sweep:
            if any(part.sweeps[name]["j"][t] for t in SWEEP):
                curves[name][part.name] = part.sweeps[name]["j"]
    dataset_mean = {
        name: {metric: _mean([s[metric] for s in per_sequence[name].values()]) for metric in SEQUENCE_METRICS} | {
            "iou": _mean([s["iou"] for s in per_sequence[name].values()]),
            "sequences": len(per_sequence[name]), "frames": len(per_frame[name]),
            "patches_per_frame": _mean([r["patches"] for r in per_frame[name]])}
        for name in names
    }
    for name, sequences in oracle_by_sequence.items():  # the same mean over sequences as the model's J and F
        j, f = _mean([x["j"] for x in sequences]), _mean([x["f"] for x in sequences])
        dataset_mean[name]["oracle"] = {"j": j, "f": f, "jf": (j + f) / 2, "sequences": len(sequences),
                                        "patches_per_frame": _mean([x["patches"] for x in sequences])}
    confusion_json = {}
    for name in names:
        matrix = ConfusionMatrix(["background", "object"])
        matrix.matrix[:] = confusion[name]
        confusion_json[name] = matrix.compute()
    return MaskEvalResult(
        settings=names, per_frame=per_frame, per_sequence=per_sequence, dataset=dataset_mean,
        confusion=confusion_json,
        sweeps={name: _finish_sweep(sweep[name], curves[name]) for name in sweep if curves[name]},
        problems=problems, rules={n: sorted(r) for n, r in rules.items()}, examples=kept,
    )


def ranked(result: MaskEvalResult) -> list[str]:
    """Settings by dataset J&F, best first (a setting that scored nothing goes last)."""
    def key(name: str) -> float:
        value = result.dataset[name]["jf"]
        return -value if value == value else float("inf")

    return sorted(result.settings, key=key)


def evaluate_masks(
    dataset: Dataset,
    predictors: dict[str, MaskPredictor],
    refs: dict[str, int],
    *,
    sweep: dict[str, str] | None = None,
    max_frames: int | None = None,
    examples: int = 6,
    show_progress: bool = True,
    oracle: bool = False,
) -> MaskEvalResult:
    """Score every predictor on every scored frame of the dataset (this process).

    Args:
        dataset: from :func:`~dinomask.evaluate.datasets.load_dataset`.
        predictors: name -> predictor, in table order.
        refs: name -> reference frames that predictor uses (1 for non-one-shot ones).
        sweep: name -> upsample mode, for the predictors to sweep thresholds on.
        max_frames: score at most this many frames per sequence (after the references).
        examples: frames kept (image, similarity, masks) for the heatmap plot, one per
            sequence, from the ``dinomask`` setting when there is one, else the first.
        oracle: also score each dinomask setting with the ground truth as its patch classifier
            (:meth:`~dinomask.evaluate.predictors.DinomaskPredictor.oracle`); its means go under
            ``dataset[name]["oracle"]``.
    """
    if not dataset.sequences:
        raise DinomaskError(f"{dataset.root}: no sequence with labelled frames to evaluate")
    names = list(predictors)
    sweep = sweep or {}
    shown = example_setting(names)
    total = scored_frame_count(dataset, refs, max_frames)
    with tqdm(total=total * len(names), desc="eval masks", unit="mask", disable=not show_progress) as progress:
        parts = [score_sequence(s, predictors, refs, sweep=sweep, max_frames=max_frames, examples=1,
                                example_setting=shown, progress=progress, oracle=oracle) for s in dataset.sequences]
    return aggregate(dataset, names, parts, sweep, examples)


def example_setting(names: list[str]) -> str | None:
    return "dinomask" if "dinomask" in names else (names[0] if names else None)


def _sweep_frame(target: dict, upsample: str, similarity: np.ndarray, truth: np.ndarray) -> None:
    size = truth.shape
    for threshold in SWEEP:
        mask = upsample_score(similarity - threshold, size, upsample) > 0
        score = score_mask(mask, truth, boundary=False)
        target["j"][threshold].append(score.iou)
        target["confusion"][threshold] = target["confusion"].get(threshold, 0) + score.confusion


def _finish_sweep(upsample: str, per_sequence: dict[str, dict[float, list[float]]]) -> dict:
    """The dataset J at each threshold (mean over sequences) and the threshold that maximises it."""
    curve = {t: _mean([_mean(v[t]) for v in per_sequence.values()]) for t in SWEEP}
    best = max(curve, key=lambda t: (curve[t], -abs(t - 0.5)))
    return {"upsample": upsample, "thresholds": list(SWEEP), "j": [curve[t] for t in SWEEP],
            "best_threshold": best, "best_j": curve[best]}
