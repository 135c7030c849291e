"""``dinomask eval``: masks, recognition, live and control on a labelled dataset."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from dinomask.cli.options import (
    ActorsOpt,
    AddressOpt,
    DeviceOpt,
    DtypeOpt,
    Engine,
    EngineOpt,
    FastOpt,
    MethodOpt,
    ModelOpt,
    OverwriteOpt,
    QuietOpt,
    RefineOpt,
    RefinerOpt,
    RoiOpt,
    RuntimeOpt,
    TokensOpt,
    _backbone,
    _refiner,
    _runtime,
    refine_settings,
    segmenter_config,
)
from dinomask.errors import DinomaskError


# ----------------------------------------------------------------------------- eval

DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="DAVIS layout (JPEGImages/480p + Annotations/480p) or images/ + masks/.")]
EvalOutOpt = Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics.json, report.md and plots.")]
MaxFramesOpt = Annotated[Optional[int], typer.Option(min=1, help="Score at most this many frames per sequence (at least 1).")]
MaskRCNNWeightsOpt = Annotated[Optional[Path], typer.Option(help="torchvision maskrcnn_resnet50_fpn COCO weights (.pth) for --compare maskrcnn.")]
AllowMissingOpt = Annotated[bool, typer.Option("--allow-missing", help="Exit 0 even when a --compare segmenter could not run (it is listed in the report either way).")]
MaskRCNNClassOpt = Annotated[Optional[str], typer.Option(help="--compare maskrcnn: keep only instances of this COCO category (e.g. dog).")]
EvalRefsOpt = Annotated[int, typer.Option("--refs", help="Reference frames per sequence/class (the first ones; never scored).")]


def _refuse_missing(left_out: list[str], allow_missing: bool) -> None:
    """Exit 1 when a comparison could not run, unless the user accepted that with --allow-missing."""
    if left_out and not allow_missing:
        typer.echo(f"{len(left_out)} comparison(s) could not run (see report.md); pass --allow-missing to accept that",
                   err=True)
        raise typer.Exit(1)


def _say_random_weights(run: dict) -> None:
    from dinomask.evaluate.report import random_weights_banner

    banner = random_weights_banner(run)
    if banner:
        typer.echo(typer.style(banner.replace("**", ""), bold=True), err=True)


def _eval_run(dataset: Path, model: str, output: Path, overwrite: bool) -> tuple:
    """Refuse to overwrite an earlier eval, read the dataset, report its problems."""
    from dinomask.evaluate.datasets import load_dataset
    from dinomask.evaluate.report import prepare_output

    prepare_output(output, overwrite)
    try:
        data = load_dataset(dataset)
    except FileNotFoundError as exc:
        raise DinomaskError(str(exc)) from None
    for problem in data.problems:
        typer.echo(f"dataset: {problem}", err=True)
    return data, {"dataset": str(dataset.resolve()), "layout": data.layout, "model": model}


def eval_masks(
    dataset: DatasetOpt,
    output: EvalOutOpt,
    model: ModelOpt = None,
    setting: Annotated[Optional[list[str]], typer.Option("--setting", "-s", help="'standard' (every option), 'quick', or name:key=value,... (repeat).")] = None,
    compare: Annotated[Optional[list[str]], typer.Option(help="Comparison segmenters: u2netp, maskrcnn (repeat).")] = None,
    u2netp: Annotated[Optional[Path], typer.Option(help="Path to u2netp.onnx (default: ~/.u2net, $U2NET_HOME, rembg).")] = None,
    maskrcnn_weights: MaskRCNNWeightsOpt = None,
    maskrcnn_class: MaskRCNNClassOpt = None,
    max_frames: MaxFramesOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    allow_missing: AllowMissingOpt = False,
    oracle: Annotated[bool, typer.Option("--oracle", help="Also score each setting with the ground truth as its patch classifier: its ceiling (what the grid and refinement lose) beside the model.")] = False,
    refine: Annotated[Optional[str], typer.Option(help="sam: every setting is also scored refined by --refiner (as NAME+sam), beside itself. Settings may ask for it alone with refine=sam.")] = None,
    refiner: RefinerOpt = None,
) -> None:
    """Mask quality (DAVIS J&F, mIoU, confusion) of settings beside trivial baselines, with a threshold sweep."""
    from dinomask.backbones import default_model
    from dinomask.evaluate.masks import evaluate_masks, ranked
    from dinomask.evaluate.plan import MaskEvalPlan, build_predictors
    from dinomask.evaluate.report import conditions, write_masks_report
    from dinomask.evaluate.settings import named_settings, with_refined_twins

    model = model or default_model()
    runtime, dtype = _runtime(fast, runtime, dtype)
    try:
        settings = named_settings(setting or ["standard"])
        if refine_settings(refine, refiner).enabled:
            settings = with_refined_twins(settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--setting") from None
    plan = MaskEvalPlan(tuple(settings), model, device, dtype, runtime,
                        tuple(compare or ()), str(u2netp) if u2netp else None,
                        str(maskrcnn_weights) if maskrcnn_weights else None, maskrcnn_class,
                        None if refiner is None else str(refiner.resolve()))
    data, run = _eval_run(dataset, model, output, overwrite)
    built = build_predictors(plan)  # here too on the Ray engine: fails early, and exports the ONNX model once
    for problem in built.left_out:
        typer.echo(f"compare: {problem}; left out", err=True)
    if built.left_out:
        run["left_out"] = built.left_out
    if engine is Engine.ray and oracle:
        raise typer.BadParameter("--oracle runs with the local engine only", param_hint="--oracle")
    if engine is Engine.ray:
        from dinomask.ray_engine import RayOptions, evaluate_masks_ray

        result = evaluate_masks_ray(data, plan, built, RayOptions(address=address, actors=actors),
                                    max_frames=max_frames, show_progress=not quiet)
    else:
        result = evaluate_masks(data, built.predictors, built.refs, sweep=built.sweep, max_frames=max_frames,
                                show_progress=not quiet, oracle=oracle)
    run["setting_options"] = built.described  # "settings" itself is the ordered list of names
    run["held_back"] = max(built.refs.values())  # reference frames every setting leaves unscored
    run["engine"] = engine.value
    run["conditions"] = {source: conditions(b, max_frames) for source, b in built.backbones.items()}
    files = write_masks_report(output, result, run, built.described)
    typer.echo(f"wrote {len(files)} files to {output}")
    _say_random_weights(run)
    for rank, name in enumerate(ranked(result), start=1):
        d = result.dataset[name]
        ceiling = f"  oracle J&F {d['oracle']['jf']:.3f} J {d['oracle']['j']:.3f}" if "oracle" in d else ""
        typer.echo(f"  {rank:2d}. {name:34s} J&F {d['jf']:.3f}  J {d['j_mean']:.3f}  F {d['f_mean']:.3f}  "
                   f"mIoU {d['miou']:.3f}  ({d['frames']} frames){ceiling}")
    _refuse_missing(built.left_out, allow_missing)


def eval_recognition(
    dataset: DatasetOpt,
    output: EvalOutOpt,
    classes: Annotated[Path, typer.Option("--classes", help="Class map: CSV 'name,category' lines or YAML 'name: category' (sequence -> category; two or more clips per category).")],
    model: ModelOpt = None,
    method: MethodOpt = "dinomask",
    refs: Annotated[int, typer.Option("--refs", help="Reference frames per category, spread over its reference clip.")] = 3,
    k: Annotated[int, typer.Option("--k", help="Neighbours of the k-NN classifier.")] = 3,
    compare: Annotated[Optional[list[str]], typer.Option(help="Comparison segmenters whose removal is scored too: u2netp, maskrcnn (repeat).")] = None,
    u2netp: Annotated[Optional[Path], typer.Option(help="Path to u2netp.onnx.")] = None,
    maskrcnn_weights: MaskRCNNWeightsOpt = None,
    maskrcnn_class: MaskRCNNClassOpt = None,
    max_frames: MaxFramesOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    allow_missing: AllowMissingOpt = False,
) -> None:
    """Category recognition on unseen clips (references from other clips), with and without background removal."""
    from dinomask.backbones import default_model
    from dinomask.evaluate.predictors import build_comparators
    from dinomask.evaluate.recognition import CLASSIFIERS, evaluate_recognition, read_class_map
    from dinomask.evaluate.report import conditions, write_recognition_report
    from dinomask.segmenter import SegmenterConfig

    model = model or default_model()
    class_map = read_class_map(classes)
    data, run = _eval_run(dataset, model, output, overwrite)
    run["class_map"] = str(classes.resolve())
    backbone = _backbone(model, device, dtype, runtime, fast, warn_random=False)  # the report's banner says it
    config = SegmenterConfig.preset(method)
    comparators, left_out = build_comparators(compare or (), u2netp=str(u2netp) if u2netp else None,
                                              maskrcnn_weights=str(maskrcnn_weights) if maskrcnn_weights else None,
                                              backbone=backbone, config=config, category=maskrcnn_class)
    for problem in left_out:
        typer.echo(f"compare: {problem}; left out", err=True)
    if left_out:
        run["left_out"] = left_out
    run["conditions"] = {model: conditions(backbone, max_frames)}
    result = evaluate_recognition(data, backbone, config, class_map, refs=refs, k=k,
                                  comparators=comparators, max_frames=max_frames, show_progress=not quiet)
    files = write_recognition_report(output, result, run)
    typer.echo(f"wrote {len(files)} files to {output}")
    _say_random_weights(run)
    typer.echo(f"  categories {', '.join(result['categories'])}; chance {result['chance']:.3f}")
    for variant, by_classifier in result["variants"].items():
        scores = "  ".join(f"{c} {by_classifier[c]['accuracy']:.3f}" for c in CLASSIFIERS)
        typer.echo(f"  {variant:24s} {scores}" + (f"  mask J {by_classifier['mask_j']:.3f}" if "mask_j" in by_classifier else ""))
    _refuse_missing(left_out, allow_missing)


def eval_live(
    dataset: DatasetOpt,
    output: EvalOutOpt,
    model: ModelOpt = None,
    keyframes: Annotated[Optional[list[str]], typer.Option("--keyframes", help="Schedules to compare (repeat): async, auto, every:K, off. Default: async and auto.")] = None,
    oracle: Annotated[bool, typer.Option("--oracle", help="The ground truth on the grid is the patch classifier (the backbone still runs, so costs are real): each schedule against its own ceiling.")] = False,
    realtime: Annotated[bool, typer.Option("--realtime/--no-realtime", help="Deliver frames on the camera clock (the newest wins) or every frame.")] = True,
    fps: Annotated[float, typer.Option(min=0.1, max=1000, help="The camera's frame rate (0.1 to 1000).")] = 24.0,
    costs: Annotated[Optional[str], typer.Option(help="KEY_MS,FLOW_MS: a simulated clock instead of the wall clock (reproducible): a key costs KEY_MS at the configured --tokens and grows with its own patch count (exponent 1.1, so a crop or coarser key costs less); each frame FLOW_MS.")] = None,
    key_budget_ms: Annotated[Optional[float], typer.Option(min=0, max=60000, help="async: target ms of one key for the rate controller, as in live (default: one camera frame, keys no coarser than a 405-token whole frame, 32 px a patch at 854x480; 0: keep --tokens fixed).")] = None,
    machine_factor: Annotated[float, typer.Option("--machine-factor", min=0.1, max=100, help="With --costs: play a machine this many times slower than the one the costs came from (2: twice as slow; every key and flow cost scales).")] = 1.0,
    tokens: TokensOpt = None,
    roi: RoiOpt = None,
    refine: RefineOpt = None,
    refiner: RefinerOpt = None,
    max_frames: MaxFramesOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """What a camera user sees: clips replayed through the live loop on a camera's clock; shown FPS,
    latency, J of each shown mask and live J (the newest mask against the frame on the camera)."""
    from tqdm import tqdm

    from dinomask.backbones import default_model
    import numpy as np

    from dinomask.evaluate.datasets import load_pair, load_truth_labels
    from dinomask.evaluate.live import LiveEvalSettings, evaluate_live, parse_costs
    from dinomask.evaluate.report import conditions, write_live_report
    from dinomask.reference import Reference
    from dinomask.segmenter import Segmenter

    model = model or default_model()
    schedules = keyframes or ["async", "auto"]
    for name, value in (("--fps", fps), ("--key-budget-ms", key_budget_ms), ("--machine-factor", machine_factor)):
        if value is not None and not math.isfinite(value):  # click's range lets NaN through
            raise typer.BadParameter(f"expected a finite number, got {value}", param_hint=name)
    if machine_factor != 1.0 and not costs:
        raise typer.BadParameter("--machine-factor scales the simulated clock: give --costs too", param_hint="--machine-factor")
    try:
        settings = LiveEvalSettings(fps=fps, realtime=realtime, oracle=oracle, costs=parse_costs(costs), max_frames=max_frames,
                                    key_budget_ms=key_budget_ms, machine_factor=machine_factor)
        for text in schedules:
            segmenter_config("dinomask", keyframes=text, roi=roi, refine=refine, refiner=refiner)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    data, run = _eval_run(dataset, model, output, overwrite)
    loaded_refiner = _refiner(refiner, device)
    backbone = _backbone(model, device, dtype, runtime, fast, busy_wait=False, warn_random=not oracle)
    run["conditions"] = {model: conditions(backbone, max_frames)}
    run["live"] = {"fps": fps, "realtime": realtime, "oracle": oracle, "costs_ms": settings.costs, "tokens": tokens,
                   "machine_factor": machine_factor,
                   "key_budget_ms": settings.key_budget, "roi": roi, "refiner": None if refiner is None else str(refiner)}
    references: dict[str, Reference] = {}

    def segmenter_for(sequence, keyframe_settings):
        if sequence.name not in references:  # the clip's first frame and its mask, as a user would show it
            image, mask = load_pair(sequence.frames[0])
            ids = load_truth_labels(sequence.frames[0].mask, image.shape[:2])
            objects = [int(i) for i in np.unique(ids) if i]
            if len(objects) > 1:  # a label map: one reference per object, in id order (DAVIS-2017)
                references[sequence.name] = [Reference.from_images(backbone, [image], [ids == i],
                                                                   label=f"{sequence.name}:{i}") for i in objects]
            else:
                references[sequence.name] = Reference.from_images(backbone, [image], [mask], label=sequence.name)
        config = segmenter_config("dinomask", tokens=tokens, keyframes=keyframe_settings.describe(), roi=roi,
                                  refine=refine, refiner=refiner)
        return Segmenter(backbone, references[sequence.name], config, refiner=loaded_refiner)

    with tqdm(total=len(schedules) * len(data.sequences), desc="eval live", unit="replay", disable=quiet) as bar:
        result = evaluate_live(data, segmenter_for, schedules, settings, progress=bar)
    files = write_live_report(output, result, run)
    typer.echo(f"wrote {len(files)} files to {output}")
    if oracle:
        typer.echo("oracle: the ground truth was the patch classifier; these are ceilings of each schedule, "
                   "with the backbone's real cost")
    else:
        _say_random_weights(run)
    for problem in result["problems"]:
        typer.echo(f"  problem: {problem}", err=True)
    if not any(d["sequences"] for d in result["schedules"].values()):
        typer.echo(f"error: no clip of {dataset} could be replayed (see the problems above); nothing was measured",
                   err=True)
        raise typer.Exit(1)

    def show(value, spec: str, width: int) -> str:
        return ("-" if value is None else format(value, spec)).rjust(width)

    typer.echo(f"  {'schedule':10s} {'shown FPS':>9s} {'p50 ms':>7s} {'p95 ms':>7s} {'own J':>6s} {'own J&F':>7s} "
               f"{'live J':>6s} {'late-1':>6s} {'keys':>5s} {'scale':>5s} {'dropped':>7s}")
    for name, d in result["schedules"].items():
        typer.echo(f"  {name:10s} {show(d['shown_fps'], '.1f', 9)} {show(d['latency_ms_p50'], '.0f', 7)} "
                   f"{show(d['latency_ms_p95'], '.0f', 7)} {show(d['own_frame_j'], '.3f', 6)} "
                   f"{show(d['own_frame_jf'], '.3f', 7)} {show(d['live_j'], '.3f', 6)} {show(d['late_by_one_j'], '.3f', 6)} "
                   f"{show(d['keyframe_share'], '.0%', 5)} {show(d['key_scale_px_max'], '.0f', 5)} {show(d['dropped'], '.1f', 7)}")
    typer.echo("  (dropped: camera frames a clip never shown, mean over clips)")
    if any(d["absent_frames"] for d in result["schedules"].values()):
        typer.echo(f"  {'schedule':10s} {'absent':>6s} {'absent FP':>9s} {'reacquire mean/max':>18s} {'missed':>6s} "
                   f"{'present J':>9s} {'late-1 FP/reacquire':>19s}")
        for name, d in result["schedules"].items():
            reacquire = f"{show(d['reacquire_frames_mean'], '.1f', 0)}/{show(d['reacquire_frames_max'], 'd', 0)}"
            typer.echo(f"  {name:10s} {show(d['absent_frames'], 'd', 6)} {show(d['absent_fp_rate'], '.1%', 9)} "
                       f"{reacquire:>18s} {show(d['reacquire_missed'], 'd', 6)} {show(d['present_live_j'], '.3f', 9)} "
                       f"{show(d['late_by_one_absent_fp_rate'], '.1%', 9)}/{show(d['late_by_one_reacquire_frames_mean'], '.1f', 0)}")


def eval_control(
    dataset: DatasetOpt,
    output: EvalOutOpt,
    model: ModelOpt = None,
    method: MethodOpt = "dinomask",
    gain: Annotated[float, typer.Option(help="Proportional gain of the simulated pan-tilt loop, per frame.")] = 0.5,
    refs: EvalRefsOpt = 1,
    max_frames: MaxFramesOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """A simulated pan-tilt loop driven by the perception, with and without background removal."""
    from dinomask.backbones import default_model
    from dinomask.evaluate.control import ControlModel, evaluate_control
    from dinomask.evaluate.report import conditions, write_control_report
    from dinomask.segmenter import SegmenterConfig

    model = model or default_model()
    data, run = _eval_run(dataset, model, output, overwrite)
    backbone = _backbone(model, device, dtype, runtime, fast, warn_random=False)  # the report's banner says it
    run["conditions"] = {model: conditions(backbone, max_frames)}
    config = SegmenterConfig.preset(method)
    result = evaluate_control(data, backbone, config, model=ControlModel(gain=gain), refs=refs, max_frames=max_frames,
                              show_progress=not quiet)
    files = write_control_report(output, result, run)
    typer.echo(f"wrote {len(files)} files to {output}")
    _say_random_weights(run)
    for pipeline, metrics in result["mean_over_sequences"].items():
        typer.echo(f"  {pipeline:16s} RMS {metrics['rms']:.3f}  max {metrics['max']:.3f}  jitter {metrics['jitter']:.3f}")
