"""What ``eval masks`` compares, as one picklable plan, and the predictors it builds.

The local engine builds the predictors once in this process; the Ray engine builds them
once per actor from the same plan, so both score with identical code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dinomask.evaluate.predictors import BASELINES, DinomaskPredictor, FeatureCache, MaskPredictor, build_comparators
from dinomask.evaluate.settings import EvalSetting
from dinomask.postprocess import ThresholdRule


@dataclass(frozen=True)
class MaskEvalPlan:
    """Settings, model and comparison segmenters of one ``eval masks`` run."""

    settings: tuple[EvalSetting, ...]
    model: str
    device: str = "auto"
    dtype: str = "auto"
    runtime: str = "auto"
    compare: tuple[str, ...] = ()
    u2netp: str | None = None
    maskrcnn_weights: str | None = None
    maskrcnn_class: str | None = None
    refiner: str | None = None


@dataclass
class BuiltPredictors:
    predictors: dict[str, MaskPredictor]
    refs: dict[str, int]
    sweep: dict[str, str]
    described: dict[str, str]
    left_out: list[str] = field(default_factory=list)
    backbones: dict = field(default_factory=dict)  # model source -> the loaded backbone


def describe(setting: EvalSetting) -> str:
    c = setting.config
    text = (f"proto={c.prototype}{c.k if c.prototype == 'kmeans' else ''} thr={c.threshold} bg={c.background} "
            f"up={c.upsample} grid={c.geometry.describe()} "
            f"temporal={c.temporal.alpha:g} adapt={c.temporal.adapt:g} roi={int(c.roi.enabled)} "
            f"keyframes={c.keyframes.describe()} refs={setting.refs}")
    if c.refine.enabled:
        text += f" refine={c.refine.mode}"
    return text + (f" model={setting.model}" if setting.model else "")


def sweepable(setting: EvalSetting) -> bool:
    """Fixed threshold, no background prototypes, no smoothing: re-thresholding the similarity is exact."""
    c = setting.config
    fixed = c.threshold != "auto" and ThresholdRule.parse(c.threshold).kind == "fixed"
    return (fixed and c.background == "none" and c.temporal.alpha == 0 and c.temporal.adapt == 0 and not c.roi.enabled
            and not c.refine.enabled and c.upsample != "bilateral")


def build_predictors(plan: MaskEvalPlan) -> BuiltPredictors:
    """Load each model once, wrap every setting, and add the comparison segmenters that are available."""
    from dinomask.backbones import load_backbone

    caches: dict[str, FeatureCache] = {}
    built = BuiltPredictors({}, {}, {}, {})
    refiner = None
    if any(item.config.refine.enabled for item in plan.settings):
        from dinomask.errors import DinomaskError
        from dinomask.refine import SamRefiner

        if plan.refiner is None:
            raise DinomaskError("a setting asks for refine=sam: give the refiner's folder with --refiner PATH")
        refiner = SamRefiner.load(plan.refiner, plan.device)
    for item in plan.settings:
        source = item.model or plan.model
        if source not in caches:
            caches[source] = FeatureCache(load_backbone(source, device=plan.device, dtype=plan.dtype, runtime=plan.runtime))
        built.predictors[item.name] = DinomaskPredictor(item.name, caches[source].backbone, item.config, caches[source],
                                                        refiner)
        built.refs[item.name] = item.refs
        built.described[item.name] = describe(item)
        if sweepable(item):
            built.sweep[item.name] = item.config.upsample
    built.backbones = {source: cache.backbone for source, cache in caches.items()}
    comparators, built.left_out = build_comparators(
        plan.compare, u2netp=plan.u2netp, maskrcnn_weights=plan.maskrcnn_weights,
        backbone=next(iter(caches.values())).backbone if caches else None,
        config=plan.settings[0].config if plan.settings else None, category=plan.maskrcnn_class)
    for name, predictor in comparators.items():
        built.predictors[name] = predictor
        built.refs[name] = 1
        built.described[name] = ("comparison segmenter (not one-shot: ignores the reference)" if name == "u2netp" else
                                 "comparison segmenter: the instance whose DINOv2 feature matches the reference")
    for baseline in BASELINES:
        built.predictors[baseline.name] = baseline()
        built.refs[baseline.name] = 1
        built.described[baseline.name] = "trivial baseline: " + (baseline.__doc__ or "").split(":", 1)[1].split(".")[0].strip()
    return built
