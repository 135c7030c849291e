"""``dinomask eval recognition``: category recognition with and without background removal.

The question a user asks: does removing the background help a recogniser tell *categories*
apart, on clips it has never seen? So:

* a **class map** (CSV ``name,category`` or YAML ``name: category``) gives each sequence
  (clip) its category; several clips share a category;
* each category's **references come from one clip** (its first in name order; ``refs``
  frames spread over it, background painted black as in the method) and **every frame of
  its other clips is scored**. A category with one clip cannot be scored and is reported;
* two classifiers use only those references: the nearest category prototype (mean
  reference feature) and k-NN over the reference features, both by cosine;
* each scored frame is classified as it is (``full frame``), with its background removed
  by dinomask (one segmenter holding every category's reference, so it does not know the
  answer), by each comparison segmenter, and by its ground-truth mask (the upper bound).

**Why this avoids the leak of the first design.** There, a class was one clip and its
prototype that clip's own frame 0 painted black: the silhouette and the amount of black
alone identified the clip, so even random weights scored 0.78 with ground-truth masks.
Here the references never come from the scored clip, so shape, position and the share of
black carry no label unless they truly go with the category; a classifier that only counts
black pixels scores chance (``tests/evaluate/test_recognition.py``).

Reported per variant and classifier: accuracy, per-class accuracy, the confusion matrix,
and for the removal variants the mean J (IoU) of their masks against the ground truth.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dinomask.backbones import Backbone
from dinomask.composite import composite
from dinomask.errors import DinomaskError
from dinomask.evaluate.datasets import Dataset, LabelledSequence, load_pair
from dinomask.evaluate.metrics import ConfusionMatrix, score_mask
from dinomask.evaluate.predictors import MaskPredictor, cls_embedding, reference_from_pairs
from dinomask.prototypes import l2_normalize
from dinomask.segmenter import Segmenter, SegmenterConfig

CLASSIFIERS = ("nearest prototype", "k-NN")

#: ``images (RGB uint8) -> N x D`` features a classifier compares by cosine.
Embedding = Callable[[list[np.ndarray]], np.ndarray]


#: A class map larger than this is refused unread (a map of thousands of clips is a few KB).
MAX_CLASS_MAP_BYTES = 1_000_000


def read_class_map(path: str | Path) -> dict[str, str]:
    """``name -> category`` from a CSV (``name,category`` per line; ``#`` comments and a
    ``name,category`` header allowed) or a YAML mapping (``.yaml``/``.yml``), UTF-8 with or
    without a byte-order mark.

    YAML is read without aliases (``*name``: a few lines of nested aliases expand to billions
    of nodes) and without constructing objects; every key and value must be plain text.

    Raises:
        DinomaskError: unreadable, over :data:`MAX_CLASS_MAP_BYTES`, empty, a line that is not two
            fields, a name given twice, a missing (null) name or category, or YAML that is not one
            flat mapping; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DinomaskError(f"class map {path} not found")
    size = path.stat().st_size
    if size > MAX_CLASS_MAP_BYTES:
        raise DinomaskError(f"class map {path} is {size} bytes; the limit is {MAX_CLASS_MAP_BYTES}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DinomaskError(f"class map {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    pairs = _yaml_pairs(text, path) if yaml_file else _csv_pairs(text, path)
    mapping: dict[str, str] = {}
    for line, name, category in pairs:
        if name in mapping:
            raise DinomaskError(f"class map {path}, line {line}: {name!r} is given a category twice")
        mapping[name] = category
    if not mapping:
        raise DinomaskError(f"class map {path} maps no sequence to a category")
    return mapping


def _csv_pairs(text: str, path: Path) -> list[tuple[int, str, str]]:
    pairs = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or row[0].lstrip().startswith("#") or [c.strip().lower() for c in row] == ["name", "category"]:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DinomaskError(f"class map {path}, line {number}: expected 'name,category', got {','.join(row)!r}")
        pairs.append((number, row[0].strip(), row[1].strip()))
    return pairs


def _yaml_pairs(text: str, path: Path) -> list[tuple[int, str, str]]:
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise DinomaskError(f"class map {path}, line {mark.line + 1}: YAML aliases (*name) are not accepted")
            return super().compose_node(parent, index)

    loader = NoAliases(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise DinomaskError(f"class map {path} is not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(root, yaml.MappingNode):
        raise DinomaskError(f"class map {path}: expected a YAML mapping of sequence name to category")
    null = "tag:yaml.org,2002:null"
    pairs = []
    for key, value in root.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode) or not isinstance(value, yaml.ScalarNode):
            raise DinomaskError(f"class map {path}, line {line}: expected 'name: category', got a nested value")
        if key.tag == null or value.tag == null or not key.value.strip() or not value.value.strip():
            raise DinomaskError(f"class map {path}, line {line}: a name and a category are needed, "
                                f"got {key.value!r}: {value.value!r}")
        pairs.append((line, key.value.strip(), value.value.strip()))
    return pairs


def _spread(frames: tuple, count: int) -> list:
    """``count`` frames spread evenly over a clip (first and last included)."""
    if count >= len(frames):
        return list(frames)
    return [frames[int(round(i))] for i in np.linspace(0, len(frames) - 1, count)]


def split_by_clip(dataset: Dataset, class_map: dict[str, str], problems: list[str]
                  ) -> tuple[list[str], dict[str, LabelledSequence], list[tuple[int, LabelledSequence]]]:
    """Categories (sorted), each category's reference clip, and the scored clips with their
    category index. Categories with one clip, and unmapped sequences, go to ``problems``."""
    clips: dict[str, list[LabelledSequence]] = {}
    for sequence in dataset.sequences:
        category = class_map.get(sequence.name)
        if category is None:
            problems.append(f"{sequence.name}: not in the class map; not used")
            continue
        clips.setdefault(category, []).append(sequence)
    for name in sorted(set(class_map) - {s.name for s in dataset.sequences}):
        problems.append(f"{name}: in the class map but not in the dataset")
    categories, reference_clips, scored = [], {}, []
    for category in sorted(clips):
        members = sorted(clips[category], key=lambda s: s.name)
        if len(members) < 2:
            problems.append(f"category {category!r} has one clip ({members[0].name}); references must come from "
                            "another clip than the frames scored, so it is not scored")
            continue
        categories.append(category)
        reference_clips[category] = members[0]
        scored += [(len(categories) - 1, clip) for clip in members[1:]]
    return categories, reference_clips, scored


def _knn(similarity: np.ndarray, labels: np.ndarray, k: int, classes: int) -> int:
    """Majority label of the ``k`` most similar references; ties go to the higher summed similarity."""
    nearest = np.argsort(-similarity)[:k]
    votes = np.zeros(classes)
    weight = np.zeros(classes)
    for index in nearest:
        votes[labels[index]] += 1
        weight[labels[index]] += similarity[index]
    best = np.flatnonzero(votes == votes.max())
    return int(best[np.argmax(weight[best])])


def evaluate_recognition(
    dataset: Dataset, backbone: Backbone, config: SegmenterConfig, class_map: dict[str, str], *,
    refs: int = 3, k: int = 3, comparators: dict[str, MaskPredictor] | None = None,
    embed: Embedding | None = None, max_frames: int | None = None, show_progress: bool = True,
) -> dict:
    """Accuracy, per-class accuracy, confusion and removal-mask J for every variant and classifier.

    Args:
        class_map: sequence name -> category (:func:`read_class_map`).
        refs: reference frames per category, spread over its reference clip.
        k: neighbours of the k-NN classifier.
        comparators: other segmenters whose removal is scored as a variant (e.g. u2netp).
        embed: the features classifiers compare (default: the backbone's CLS); tests pass
            others, e.g. the share of black pixels.
        max_frames: score at most this many frames per scored clip.
    """
    problems = list(dataset.problems)
    comparators = comparators or {}
    embed = embed or cls_embedding(backbone, config)
    categories, reference_clips, scored_clips = split_by_clip(dataset, class_map, problems)
    if len(categories) < 2:
        raise DinomaskError(
            f"recognition needs at least two categories with two or more clips each, got {len(categories)}: "
            + "; ".join(problems[-3:]))
    references, ref_features, ref_labels = [], [], []
    for label, category in enumerate(categories):
        pairs = [load_pair(frame) for frame in _spread(reference_clips[category].frames, refs)]
        references.append(reference_from_pairs(backbone, pairs, config, label=category))
        ref_features.append(embed([composite(image, mask) for image, mask in pairs]))
        ref_labels += [label] * len(pairs)
    bank = l2_normalize(np.concatenate(ref_features))
    labels = np.array(ref_labels)
    prototypes = l2_normalize(np.stack([l2_normalize(f).mean(axis=0) for f in ref_features]))
    segmenter = Segmenter(backbone, references, config)
    variants = ["full frame", "removed by dinomask", *(f"removed by {n}" for n in comparators), "ground-truth mask"]
    matrices = {(v, c): ConfusionMatrix(categories) for v in variants for c in CLASSIFIERS}
    mask_j: dict[str, list[float]] = {v: [] for v in variants if v.startswith("removed")}
    frames = [(label, clip, frame) for label, clip in scored_clips
              for frame in (clip.frames[:max_frames] if max_frames else clip.frames)]
    rows = []
    for predictor in comparators.values():
        predictor.start_sequence([])
    for label, clip, frame in tqdm(frames, desc="eval recognition", unit="frame", disable=not show_progress):
        try:
            image, truth = load_pair(frame)
        except DinomaskError as exc:
            problems.append(f"{frame.image}: {exc}; not scored")
            continue
        segmenter.reset()
        masks = {"removed by dinomask": segmenter.predict(image).mask}
        for name, predictor in comparators.items():
            masks[f"removed by {name}"] = predictor.predict(image, str(frame.image)).mask
        shown = {"full frame": image, **{v: composite(image, m) for v, m in masks.items()},
                 "ground-truth mask": composite(image, truth)}
        features = l2_normalize(embed([shown[v] for v in variants]))
        row = {"frame": str(frame.image), "clip": clip.name, "category": categories[label]}
        for variant, feature in zip(variants, features):
            similarity = bank @ feature
            guesses = {"nearest prototype": int(np.argmax(prototypes @ feature)),
                       "k-NN": _knn(similarity, labels, min(k, len(labels)), len(categories))}
            for classifier, guess in guesses.items():
                matrices[(variant, classifier)].update(np.array([label]), np.array([guess]))
                row[f"{variant} / {classifier}"] = categories[guess]
        for variant, mask in masks.items():
            mask_j[variant].append(score_mask(mask, truth, boundary=False).iou)
        rows.append(row)
    results = {}
    for variant in variants:
        results[variant] = {c: matrices[(variant, c)].compute() for c in CLASSIFIERS}
        if variant in mask_j:
            results[variant]["mask_j"] = float(np.mean(mask_j[variant])) if mask_j[variant] else float("nan")
    return {
        "categories": categories,
        "reference_clips": {c: reference_clips[c].name for c in categories},
        "scored_clips": sorted({clip.name for _, clip in scored_clips}),
        "references_per_category": refs,
        "k": k,
        "chance": 1.0 / len(categories),
        "variants": results,
        "per_frame": rows,
        "problems": problems,
        "segmenter": config.method,
    }
