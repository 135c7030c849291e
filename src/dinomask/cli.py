"""The ``dinomask`` command line. Options shared by several commands are declared once below.

Errors that dinomask raises on purpose print one message and exit with code 2; a batch
in which some inputs failed exits with code 1 after finishing the rest.
"""

from __future__ import annotations

import logging
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dinomask.errors import DinomaskError, ModelNotFoundError

app = typer.Typer(
    name="dinomask",
    help="One-shot DINOv2 background removal: show it one photo of your object, get every frame back with only the object.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        from dinomask import __version__

        typer.echo(f"dinomask {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print dinomask's version and exit.")] = False,
) -> None:
    """One-shot DINOv2 background removal: show it one photo of your object, get every frame back with only the object."""


eval_app = typer.Typer(help="Measure masks, recognition, control and live (on a camera's clock) on a labelled dataset.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

# ----------------------------------------------------------------------------- shared options

#: Temporal smoothing used for video and live input unless the user sets --temporal.
VIDEO_TEMPORAL_ALPHA = 0.5
#: Keyframe policy for video and live input unless the user sets --keyframes.
DEFAULT_KEYFRAMES = "auto"

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="DINOv2 short name (dinov2_vits14_reg, ...), Hugging Face id, "
                 "save_pretrained folder, .safetensors or Meta .pth. Default: the reference's own backbone."),
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(help="Torch runtime: float32 (exact), bfloat16, float16, or auto (bf16/fp16 where the hardware has it).")]
RuntimeOpt = Annotated[str, typer.Option(help="auto (fastest faithful path: ONNX int8 on CPU, torch fp16 on CUDA), torch, onnx, onnx-int8.")]
FastOpt = Annotated[bool, typer.Option("--fast/--no-fast", help="--no-fast: plain torch fp32 eager (the exact baseline).")]
ResolutionOpt = Annotated[Optional[int], typer.Option(help="Network input short side in px (518 -> 37 patches); overrides --tokens. Default: the method's.")]
TokensOpt = Annotated[Optional[int], typer.Option(help="Token budget: patches per frame on an aspect-kept grid (default 1400: 28x50 at 16:9, 32x43 at 4:3).")]
MethodOpt = Annotated[str, typer.Option(help="Preset: 'dinomask' (improved default) or 'paper' (the method as written).")]
ThresholdOpt = Annotated[Optional[str], typer.Option(help="0.5 or any cosine, otsu, relative:F, fg-vs-bg, or auto. Default: the preset's.")]
PrototypeOpt = Annotated[Optional[str], typer.Option(help="cls, patch-mean or kmeans. Default: the preset's.")]
KOpt = Annotated[Optional[int], typer.Option("--k", help="k-means object prototypes.")]
BgSourceOpt = Annotated[Optional[str], typer.Option("--bg-source", help="Background prototypes from: none, reference, frame, both.")]
UpsampleOpt = Annotated[Optional[str], typer.Option(help="nearest (the paper's blocks), bilinear, bicubic (the soft score; default) or bilateral (bicubic, then a joint bilateral filter on the edge band, guided by the frame's colours; about 7 ms at 854x480 on 2 cores, 23 ms at worst).")]
RoiOpt = Annotated[Optional[bool], typer.Option("--roi/--no-roi", help="Video: after a confident mask, process only a crop around the object: in a file frame by frame it gets the whole token budget (more patches on the object); on a camera's clock (async keyframes) it keeps the frame's scale (fewer patches, sooner keys). Default: on, except for paper.")]
AdaptOpt = Annotated[float, typer.Option(help="Video: rate at which prototypes follow the object's confident patches (0 = off), with a drift guard.")]
KeyframesOpt = Annotated[Optional[str], typer.Option(help="Video/live: off, auto (backbone on keyframes, optical flow between, sooner when the flow is unsure), every:K, or async (live on a camera's clock: the backbone in its own worker, flow on every frame). Default: async for live on a camera, stream or --realtime; auto for files; off for paper.")]
TemporalOpt = Annotated[Optional[float], typer.Option(help="Temporal smoothing of video: weight of the past in [0, 1); 0 is off. Default: 0.5 for dinomask, 0 for paper.")]
RefineOpt = Annotated[Optional[str], typer.Option(help="none, or sam: a SAM-family refiner makes the mask, prompted by the similarity (best patches, most background-like ones, the object's box). Default: sam when --refiner is given.")]
RefinerOpt = Annotated[Optional[Path], typer.Option(help="Folder of a transformers SamModel for --refine sam (SAM ViT-B/L/H, SlimSAM, ...; save_pretrained layout). Its quality depends on its weights: measure it with 'dinomask eval masks --refine sam'.")]
RefOpt = Annotated[list[Path], typer.Option("--ref", "-r", help="Reference .npz (repeat for several objects).")]
BackgroundOpt = Annotated[str, typer.Option("--background", "-b", help="black, white, transparent, blur, #rrggbb or r,g,b.")]
OutputKindOpt = Annotated[str, typer.Option("--output-kind", help="composite, mask, heatmap or overlay.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist (default: skip them).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
RerunOpt = Annotated[Optional[str], typer.Option(help="Log every frame, its mask, the similarity and the loop's figures to Rerun: --rerun alone spawns a viewer, --rerun FILE.rrd saves a recording, --rerun HOST:PORT connects to a running viewer (pip install 'dinomask[robotics]').")]
TopicOpt = Annotated[Optional[str], typer.Option(help="A ROS bag's image topic (sensor_msgs Image or CompressedImage); needed where the bag has several.")]
class Engine(str, Enum):
    """Where batch work runs."""

    local = "local"
    ray = "ray"


EngineOpt = Annotated[Engine, typer.Option(help="local (this process) or ray (Ray Data actor pool; pip install 'dinomask\\[ray]').")]
AddressOpt = Annotated[Optional[str], typer.Option(help="Ray: 'auto' joins a running cluster, ray://host:port a remote one; default starts a local Ray.")]
ActorsOpt = Annotated[Optional[int], typer.Option(min=1, help="Ray: actor count (default: one per GPU on CUDA, else one per CPU).")]
#: What ``live --output`` records to (an mp4v stream; these containers take it).
RECORDING_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv")


def segmenter_config(
    method: str, *, resolution: int | None = None, tokens: int | None = None, threshold: str | None = None,
    prototype: str | None = None, k: int | None = None, bg_source: str | None = None, upsample: str | None = None,
    temporal: float | None = None, adapt: float = 0.0, roi: bool | None = None, keyframes: str | None = None,
    refine: str | None = None, refiner: Path | None = None,
):
    """The preset for ``method`` with the options the user set on top."""
    from dinomask.postprocess import TemporalSettings
    from dinomask.preprocess import InputGeometry
    from dinomask.segmenter import SegmenterConfig

    config = SegmenterConfig.preset(method)
    changes: dict = {}
    if resolution is not None:
        changes["geometry"] = InputGeometry(resolution=resolution, keep_aspect=config.geometry.keep_aspect)
    elif tokens is not None:
        if not config.geometry.keep_aspect:
            raise typer.BadParameter(f"the {method} preset squashes frames to a square; use --resolution there",
                                     param_hint="--tokens")
        changes["geometry"] = InputGeometry(tokens=tokens)
    for name, value in (("threshold", threshold), ("prototype", prototype), ("k", k),
                        ("background", bg_source), ("upsample", upsample)):
        if value is not None:
            changes[name] = value
    if temporal is None:  # video and live: smooth by default, except the method as written
        temporal = 0.0 if method == "paper" else VIDEO_TEMPORAL_ALPHA
    changes["temporal"] = TemporalSettings(alpha=temporal, adapt=adapt)
    from dinomask.keyframes import KeyframeSettings
    from dinomask.roi import RoiSettings

    if keyframes is None:  # video and live: keyframes by default, except the method as written
        keyframes = "off" if method == "paper" else DEFAULT_KEYFRAMES
    try:
        changes["keyframes"] = KeyframeSettings.parse(keyframes)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--keyframes") from None
    if roi is None:  # a file frame by frame: the crop gives the object more patches (oracle J with auto keys on
        # davis-live 0.939 -> 0.948); on a camera's clock it keeps the frame's scale for cheaper, sooner keys
        # (async, oracle, simulated clock: davis-motion live J 0.502 -> 0.513, davis-live 0.805 -> 0.824)
        roi = method != "paper"
    # on a camera's clock a crop is for a sooner key (the frame's scale, fewer patches); in a file, for a finer mask
    changes["roi"] = RoiSettings(enabled=roi, crop_tokens="scale" if changes["keyframes"].policy == "async" else "budget")
    changes["refine"] = refine_settings(refine, refiner)
    return config.replace(**changes)


def refine_settings(refine: str | None, refiner: Path | None):
    """``--refine`` and ``--refiner`` checked together: sam needs a refiner, a refiner needs sam."""
    from dinomask.refine import REFINE_MODES, RefineSettings

    mode = refine or ("sam" if refiner is not None else "none")
    if mode not in REFINE_MODES:
        raise typer.BadParameter(f"expected one of {', '.join(REFINE_MODES)}, got {mode!r}", param_hint="--refine")
    if mode == "sam" and refiner is None:
        raise typer.BadParameter("--refine sam needs the refiner's folder: --refiner PATH (a transformers SamModel "
                                 "saved with save_pretrained, e.g. facebook/sam-vit-base)", param_hint="--refiner")
    if mode == "none" and refiner is not None:
        raise typer.BadParameter("--refiner was given with --refine none; drop one of them", param_hint="--refiner")
    return RefineSettings(mode=mode)


def _refiner(refiner: Path | None, device: str):
    """The loaded SamRefiner, or None."""
    if refiner is None:
        return None
    from dinomask.refine import SamRefiner

    return SamRefiner.load(refiner, device)


def _limit_threads(threads: int) -> None:
    """At most ``threads`` compute threads for ONNX Runtime (read from ``DINOMASK_THREADS`` when a
    session is made), torch and OpenCV, set before any model loads."""
    import os

    import cv2
    import torch

    os.environ["DINOMASK_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _runtime(fast: bool, runtime: str, dtype: str) -> tuple[str, str]:
    """``--no-fast`` means the plain path whatever --runtime and --dtype say."""
    return (runtime, dtype) if fast else ("torch", "float32")


def _backbone(model: str, device: str, dtype: str, runtime: str, fast: bool, busy_wait: bool = True,
              warn_random: bool = True):
    from dinomask.backbones import load_backbone

    runtime, dtype = _runtime(fast, runtime, dtype)
    backbone = load_backbone(model, device=device, dtype=dtype, runtime=runtime, busy_wait=busy_wait)
    if warn_random and backbone.random_weights:
        typer.echo(f"warning: {backbone.spec.name} has RANDOM weights ({backbone.random_weights}): "
                   "its masks mean nothing", err=True)
    return backbone


def _load_segmenter(refs, model, device, dtype, runtime, fast, config, busy_wait: bool = True, refiner: Path | None = None):
    from dinomask.reference import Reference
    from dinomask.segmenter import Segmenter

    if not refs:
        raise typer.BadParameter("give at least one --ref reference file (make one with 'dinomask reference')")
    references = [Reference.load(path) for path in refs]
    for path, reference in zip(refs, references):
        taught = reference.teaching
        if taught.views or taught.positive_clicks or taught.negative_clicks:
            typer.echo(f"reference {path}: taught after it was made: {taught.describe()}", err=True)
    loaded_refiner = _refiner(refiner, device)  # its checks are quick: before the backbone's load
    try:
        backbone = _backbone(model or references[0].backbone.name, device, dtype, runtime, fast, busy_wait)
    except ModelNotFoundError as exc:
        if model is not None:
            raise
        raise ModelNotFoundError(
            f"{exc}\nThe reference {refs[0]} names the model it was made with ({references[0].backbone.name}); where "
            "that is not on this machine, pass the same weights with --model: a folder, a checkpoint, or an export "
            "made with 'dinomask export-onnx' (--model X.onnx)") from None
    return Segmenter(backbone, references, config, refiner=loaded_refiner)


# ----------------------------------------------------------------------------- commands


@app.command()
def reference(
    images: Annotated[list[Path], typer.Argument(help="Reference photo(s) of ONE object, background painted black/white/transparent, or with --mask.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the reference (.npz).")],
    mask: Annotated[Optional[list[Path]], typer.Option("--mask", help="A mask per image, instead of a painted background: a hard mask (0/1, 0/255) is the object where non-zero, a soft one (antialiased, JPEG) above 127, a palette PNG where its index is not 0.")] = None,
    background: Annotated[str, typer.Option(help="Painted background: auto, black, white or transparent.")] = "auto",
    label: Annotated[str, typer.Option(help="The object's name.")] = "object",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    resolution: Annotated[Optional[int], typer.Option(help="Input short side in px for the reference photo; overrides --tokens.")] = None,
    tokens: TokensOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Compute an object's DINOv2 features from reference photo(s) and save them."""
    from dinomask.backbones import DEFAULT_BACKBONE
    from dinomask.preprocess import DEFAULT_TOKENS, InputGeometry
    from dinomask.reference import Reference, ReferenceSettings, reference_file

    output = reference_file(output)  # the name it is written to, checked before the model loads
    if output.exists() and not overwrite:
        raise DinomaskError(f"{output} exists; pass --overwrite to replace it")
    from dinomask.files import check_writable

    check_writable(output.parent, "the reference")
    backbone = _backbone(model or DEFAULT_BACKBONE, device, dtype, runtime, fast)
    geometry = InputGeometry(resolution=resolution) if resolution else InputGeometry(tokens=tokens or DEFAULT_TOKENS)
    settings = ReferenceSettings(background=background, geometry=geometry)
    ref = Reference.from_images(backbone, images, mask or None, settings=settings, label=label)
    path = ref.save(output, overwrite=overwrite)
    typer.echo(
        f"wrote {path}: {len(ref.foreground)} object patches from {len(images)} image(s), "
        f"{len(ref.background)} scene-background patches, backbone {backbone.spec.name}"
    )


@app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders and video files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (created; inputs are never overwritten).")],
    ref: RefOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    method: MethodOpt = "dinomask",
    resolution: ResolutionOpt = None,
    tokens: TokensOpt = None,
    threshold: ThresholdOpt = None,
    prototype: PrototypeOpt = None,
    k: KOpt = None,
    bg_source: BgSourceOpt = None,
    upsample: UpsampleOpt = None,
    temporal: TemporalOpt = None,
    adapt: AdaptOpt = 0.0,
    roi: RoiOpt = None,
    keyframes: KeyframesOpt = None,
    refine: RefineOpt = None,
    refiner: RefinerOpt = None,
    background: BackgroundOpt = "black",
    output_kind: OutputKindOpt = "composite",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Ray: work items per batch (default 4).")] = None,
    rerun: RerunOpt = None,
    topic: TopicOpt = None,
    bag_outputs: Annotated[Optional[str], typer.Option("--bag-outputs", help="A bag input: besides TOPIC/mask, also write removed (the composited frame) and/or similarity (32FC1 on the patch grid), comma-separated.")] = None,
) -> None:
    """Remove the background of images, folders, videos, or a ROS bag's image topic; one output per input
    (for a bag: a ROS 2 bag of masks at OUT)."""
    from dinomask.batch import OutputOptions, remove_batch
    from dinomask.composite import OUTPUT_KINDS, Background
    from dinomask.files import check_writable, plan_outputs

    if output_kind not in OUTPUT_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(OUTPUT_KINDS)}, got {output_kind!r}", param_hint="--output-kind")
    options = OutputOptions(kind=output_kind, background=Background.parse(background), overwrite=overwrite)
    _check_rerun(rerun)
    if rerun is not None and engine is Engine.ray:
        raise typer.BadParameter("--rerun logs from this process; it does not combine with --engine ray", param_hint="--rerun")
    from dinomask.bags import is_bag

    if any(is_bag(path) for path in inputs):
        _remove_bag(inputs, output, options, topic, bag_outputs, engine, quiet, rerun, ref=ref, model=model, device=device,
                    dtype=dtype, runtime=runtime, fast=fast, refiner=refiner,
                    config=segmenter_config(method, resolution=resolution, tokens=tokens, threshold=threshold,
                                            prototype=prototype, k=k, bg_source=bg_source, upsample=upsample,
                                            temporal=temporal, adapt=adapt, roi=roi, keyframes=keyframes,
                                            refine=refine, refiner=refiner))
        return
    if topic is not None or bag_outputs is not None:
        raise typer.BadParameter("--topic and --bag-outputs are for a ROS bag input", param_hint="--topic")
    suffix = "" if output_kind == "composite" else f"_{output_kind}"
    items, problems = plan_outputs(inputs, output, transparent=options.transparent, suffix=suffix)
    if not items:
        raise DinomaskError("no image or video files to process among the inputs:\n  " + "\n  ".join(problems))
    check_writable(output)
    config = segmenter_config(method, resolution=resolution, tokens=tokens, threshold=threshold, prototype=prototype, k=k,
                              bg_source=bg_source, upsample=upsample, temporal=temporal, adapt=adapt, roi=roi,
                              keyframes=keyframes, refine=refine, refiner=refiner)
    segmenter = _load_segmenter(ref, model, device, dtype, runtime, fast, config, refiner=refiner)
    if engine is Engine.ray:
        from dinomask.ray_engine import RayOptions, WorkerSpec, remove_batch_ray

        runtime, dtype = _runtime(fast, runtime, dtype)
        spec = WorkerSpec(model=segmenter.backbone.spec.name if model is None else model, device=device, dtype=dtype,
                          runtime=runtime, references=tuple(segmenter.references), config=config, options=options,
                          refiner=None if refiner is None else str(refiner.resolve()))
        report = remove_batch_ray(spec, items, RayOptions(address=address, actors=actors, batch_size=batch_size),
                                  show_progress=not quiet)
    else:
        view = _rerun_view(rerun, segmenter, "remove")
        try:
            report = remove_batch(segmenter, items, options, show_progress=not quiet, view=view)
        finally:
            if view is not None:
                view.close()
    report.ignored = problems
    typer.echo(report.summary(), err=not report.ok)
    if report.interrupted is not None:  # after the summary: exit 130 (Ctrl-C) or 143 (SIGTERM)
        raise report.interrupted
    if not report.ok:
        raise typer.Exit(1)


def _check_rerun(target: str | None) -> None:
    """``--rerun``'s target, checked before the model loads."""
    if target is None:
        return
    from dinomask.rerun_view import parse_target

    try:
        parse_target(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rerun") from None


def _rerun_view(target: str | None, segmenter, name: str):
    """The Rerun recording for ``--rerun``, or None."""
    if target is None:
        return None
    from dinomask.rerun_view import RerunView

    return RerunView(target, segmenter.object_names, name=name)


def _remove_bag(inputs, output: Path, options, topic, bag_outputs, engine, quiet: bool, rerun: str | None, *, config,
                **load) -> None:
    """``remove`` on one ROS bag: its image topic in, a ROS 2 bag (MCAP) of masks out at ``output``."""
    from dinomask.bags import EXTRA_OUTPUTS, BagReader
    from dinomask.batch import remove_bag

    if len(inputs) != 1:
        raise typer.BadParameter("a ROS bag is processed alone: give one bag per run", param_hint="INPUTS")
    if engine is Engine.ray:
        raise typer.BadParameter("--engine ray takes images and videos; a bag runs in this process", param_hint="--engine")
    extras = [part.strip() for part in (bag_outputs or "").split(",") if part.strip()]
    unknown = sorted(set(extras) - set(EXTRA_OUTPUTS))
    if unknown:
        raise typer.BadParameter(f"expected any of {', '.join(EXTRA_OUTPUTS)}, got {', '.join(unknown)}", param_hint="--bag-outputs")
    source = Path(inputs[0])
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise typer.BadParameter(f"the output bag {output} would be written inside or over the input {source}",
                                 param_hint="--output")
    if output.exists() and not options.overwrite:
        raise DinomaskError(f"{output} exists; pass --overwrite to replace it")
    with BagReader(source, topic) as reader:  # the bag and its topic, checked before the model loads
        topic = reader.topic
    from dinomask.files import check_writable

    check_writable(output.parent, "the output bag")
    segmenter = _load_segmenter(load["ref"], load["model"], load["device"], load["dtype"], load["runtime"], load["fast"],
                                config, refiner=load["refiner"])
    view = _rerun_view(rerun, segmenter, f"remove {source}")
    try:
        report = remove_bag(segmenter, source, output, options, topic=topic, extras=extras, show_progress=not quiet,
                            view=view)
    finally:
        if view is not None:
            view.close()
    typer.echo(report.summary().replace("(output exists)", "").replace(" frames in", " messages in"), err=not report.ok)
    if report.interrupted is not None:
        raise report.interrupted
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def live(
    ref: RefOpt = [],  # noqa: B006
    source: Annotated[str, typer.Option(help="Camera index (0), stream URL, video file, folder of frames, or ROS bag (ROS 2 folder, .mcap, ROS 1 .bag; --topic).")] = "0",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Record to this .mp4 (headless).")] = None,
    window: Annotated[bool, typer.Option(help="Show a window (needs an OpenCV build with GUI).")] = True,
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after this many frames.")] = None,
    retry_seconds: Annotated[float, typer.Option(help="How long to retry a camera or stream that disconnects.")] = 10.0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    method: MethodOpt = "dinomask",
    resolution: ResolutionOpt = None,
    tokens: TokensOpt = None,
    threshold: ThresholdOpt = None,
    prototype: PrototypeOpt = None,
    k: KOpt = None,
    bg_source: BgSourceOpt = None,
    upsample: UpsampleOpt = None,
    temporal: TemporalOpt = None,
    adapt: AdaptOpt = 0.0,
    roi: RoiOpt = None,
    keyframes: KeyframesOpt = None,
    refine: RefineOpt = None,
    refiner: RefinerOpt = None,
    background: BackgroundOpt = "black",
    overwrite: OverwriteOpt = False,
    save_ref: Annotated[Optional[Path], typer.Option("--save-ref", help="Write the taught reference here on 's' and on exit (.npz).")] = None,
    stats_every: Annotated[Optional[float], typer.Option("--stats-every", min=0, help="Print a JSON line of FPS, latency p50/p95 and keyframe share every this many seconds, and one for the last, partial interval at the end (0: only that one).")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Play a video file or frame folder on its own clock, as a camera would (the newest frame wins); without it every frame is processed.")] = False,
    fps: Annotated[Optional[float], typer.Option(min=0.1, max=1000, help="Frame rate of a folder of frames (default 24), or one that replaces a file's own (0.1 to 1000).")] = None,
    key_budget_ms: Annotated[Optional[float], typer.Option(min=0, max=60000, help="--keyframes async: target ms of one backbone key; the key's token budget follows it (default: one camera frame, keys no coarser than 32 px a patch; 0: keep --tokens fixed).")] = None,
    topic: TopicOpt = None,
    rerun: RerunOpt = None,
) -> None:
    """Live background removal from a camera, stream or video, taught while it runs: keys a (add this
    view), +/- (threshold), u (undo), r (reset), s (save), q (quit); without a window, the same as stdin lines."""
    from dinomask.live import LiveOptions, run_live_command
    from dinomask.reference import reference_file

    from dinomask.video import is_live, parse_source

    save_ref = None if save_ref is None else reference_file(save_ref)  # the name 's' and exit write
    for name, value in (("--fps", fps), ("--key-budget-ms", key_budget_ms), ("--stats-every", stats_every)):
        if value is not None and not math.isfinite(value):  # click's range lets NaN through
            raise typer.BadParameter(f"expected a finite number, got {value}", param_hint=name)
    if output is not None and output.suffix.lower() not in RECORDING_SUFFIXES:  # checked before the model loads
        raise typer.BadParameter(f"expected a video file name ending in {', '.join(RECORDING_SUFFIXES)}, got {str(output)!r}",
                                 param_hint="--output")
    if keyframes is None and method != "paper" and (realtime or is_live(parse_source(source))):
        keyframes = "async"  # on a camera's clock the backbone runs beside the loop, never in it
    config = segmenter_config(method, resolution=resolution, tokens=tokens, threshold=threshold, prototype=prototype, k=k,
                              bg_source=bg_source, upsample=upsample, temporal=temporal, adapt=adapt, roi=roi,
                              keyframes=keyframes, refine=refine, refiner=refiner)
    options = LiveOptions(
        source=source, output=output, window=window and output is None, max_frames=max_frames,
        retry_seconds=retry_seconds, background=background, overwrite=overwrite, save_ref=save_ref,
        stats_every=stats_every, realtime=realtime, fps=fps, key_budget_ms=key_budget_ms, topic=topic, rerun=rerun,
    )
    _check_rerun(rerun)
    from dinomask.files import check_writable

    if output is not None:
        check_writable(output.parent, "the recording")
    if save_ref is not None:
        check_writable(save_ref.parent, "the taught reference")
    if options.window:
        from dinomask.live import check_window_support

        check_window_support()
    # capture and output threads work beside the model: its threads must not spin on their cores
    segmenter = _load_segmenter(ref, model, device, dtype, runtime, fast, config, busy_wait=False, refiner=refiner)
    stats = run_live_command(segmenter, options)
    stages = ", ".join(f"{name[:-3]} {value:.1f} ms" for name, value in stats.stage_ms.items())
    grid = f"{stats.grid[0]}x{stats.grid[1]} patches" if stats.grid else "no frame"
    typer.echo(
        f"{stats.frames_processed} frames processed in {stats.seconds:.1f} s ({stats.fps:.2f} FPS); "
        f"{stats.frames_dropped} dropped; reconnects {stats.reconnects}; {stages}\n"
        f"grid {grid} ({config.geometry.describe()}); keyframes {stats.keyframes}: backbone ran on "
        f"{stats.keyframe_fraction:.0%} of frames"
    )


@app.command()
def download(
    name: Annotated[str, typer.Argument(help="Short name (dinov2_vits14_reg, ...) or Hugging Face id.")],
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder (default: huggingface_hub's, HF_HOME).")] = None,
) -> None:
    """Fetch a model ahead of time, for machines that will be offline."""
    from dinomask.backbones import download as fetch

    path = fetch(name, str(cache_dir) if cache_dir else None)
    typer.echo(f"downloaded {name} to {path}\nuse it offline with HF_HUB_OFFLINE=1 --model {name}, or --model {path}")


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; the default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="DINOMASK_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /v1 and /metrics.")] = None,
    queue_size: Annotated[int, typer.Option(help="Requests waiting or running before 503.")] = 4,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload in MiB before 413.")] = 20.0,
    max_megapixels: Annotated[float, typer.Option(help="Largest image in megapixels before 413.")] = 40.0,
    max_references: Annotated[int, typer.Option(help="References held at once; one more gets 409 (none is evicted).")] = 64,
    max_streams: Annotated[int, typer.Option(help="WebSocket streams open at once; one more is closed with 1013.")] = 8,
    max_feature_mb: Annotated[float, typer.Option(help="Reference features held in memory (teaching history included) before 409.")] = 1024.0,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        "--allow-host", help="A host name clients use to reach the server (repeatable; '*' for any). Loopback "
                             "names are always allowed; other Host and Origin headers are refused.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    refine: RefineOpt = None,
    refiner: RefinerOpt = None,
    threads: Annotated[Optional[int], typer.Option(min=1, max=256, help="Threads the model and image work may use (ONNX Runtime, torch, OpenCV). Default: every core. Beside 'dinomask live' on the same machine, fewer leave it cores (see docs/speed.md).")] = None,
) -> None:
    """HTTP service and web page for live background removal (FastAPI under uvicorn)."""
    try:
        import uvicorn

        from dinomask.serve.app import ServeConfig, create_app, server_options
    except ImportError as exc:
        raise DinomaskError(f"dinomask serve needs its extra: pip install 'dinomask[serve]' ({exc.name} is missing)") from None
    from dinomask.backbones import DEFAULT_BACKBONE

    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        typer.echo(f"warning: serving on {host} without --token: anyone who reaches this port can use it", err=True)
    try:  # checked (the token too) before the model loads
        config = ServeConfig.for_bind(host, tuple(allow_host or ()), token=token, queue_size=queue_size,
                                      max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                                      max_pixels=int(max_megapixels * 1e6), max_references=max_references,
                                      max_streams=max_streams, max_feature_bytes=int(max_feature_mb * 2**20))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    refine_settings(refine, refiner)
    if threads is not None:
        _limit_threads(threads)
    loaded_refiner = _refiner(refiner, device)
    # request decoding and encoding run beside the model: its threads must not spin on their cores
    backbone = _backbone(model or DEFAULT_BACKBONE, device, dtype, runtime, fast, busy_wait=False)
    typer.echo(f"dinomask serving {backbone.spec.name}" + (f" refined by {refiner}" if refiner else "")
               + f" on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(create_app(backbone, config, loaded_refiner), host=host, port=port, log_level="warning", **server_options(config))


@app.command("export-onnx")
def export_onnx_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write (a .json with its settings goes beside it).")],
    model: ModelOpt = None,
    int8: Annotated[bool, typer.Option("--int8", help="Quantise matrix weights to int8 (dynamic quantisation).")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a DINOv2 to ONNX for ONNX Runtime (dynamic batch and image size), checked against fp32."""
    from dinomask.backbones import DEFAULT_BACKBONE, MIN_FIDELITY, export_onnx, load_backbone

    if output.exists() and not overwrite:
        raise DinomaskError(f"{output} exists; pass --overwrite to replace it")
    backbone = load_backbone(model or DEFAULT_BACKBONE, device="cpu", dtype="float32", runtime="torch")
    info = export_onnx(backbone, output, int8=int8)
    verdict = "ok" if info.fidelity_min_cosine >= MIN_FIDELITY else f"BELOW {MIN_FIDELITY}: prefer fp32"
    typer.echo(
        f"wrote {output} ({info.quantization}) in {info.exported_seconds:.1f} s; per-patch cosine to fp32 torch: "
        f"min {info.fidelity_min_cosine:.4f}, mean {info.fidelity_mean_cosine:.4f} ({verdict}). Use it with --model {output}"
    )


@app.command("models")
def models() -> None:
    """List the short model names and their Hugging Face ids."""
    from dinomask.backbones import BACKBONES, DEFAULT_BACKBONE

    for short, hub in BACKBONES.items():
        typer.echo(f"{short:20s} {hub}{'   (default)' if short == DEFAULT_BACKBONE else ''}")


@app.command("random-model")
def random_model(
    directory: Annotated[Path, typer.Argument(help="Folder to write (save_pretrained layout).")],
    hidden_size: Annotated[int, typer.Option(help="Feature size C (multiple of 32).")] = 64,
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    registers: Annotated[int, typer.Option(help="Register tokens (0 = no registers).")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    arch: Annotated[Optional[str], typer.Option(help="True shape of a released model (dinov2_vits14_reg, dinov3_vits16, ...); overrides the sizes.")] = None,
    family: Annotated[str, typer.Option(help="dinov2 (patch 14) or dinov3 (patch 16, RoPE) for a tiny model.")] = "dinov2",
) -> None:
    """Write a tiny DINOv2 or DINOv3 with RANDOM weights, for tests, demos and speed checks only (its masks mean nothing)."""
    from dinomask.backbones import random_backbone_dir

    if (directory / "config.json").exists():
        raise DinomaskError(f"{directory} already holds a model; choose another folder")
    try:
        random_backbone_dir(directory, hidden_size=hidden_size, layers=layers, registers=registers, seed=seed,
                            arch=arch, family=family)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"wrote a random-weight {arch or family} to {directory} (for tests only: its masks carry no meaning)")


# ----------------------------------------------------------------------------- eval

DatasetOpt = Annotated[Path, typer.Option("--dataset", "-d", help="DAVIS layout (JPEGImages/480p + Annotations/480p) or images/ + masks/.")]
EvalOutOpt = Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics.json, report.md and plots.")]
MaxFramesOpt = Annotated[Optional[int], typer.Option(help="Score at most this many frames per sequence.")]
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


@eval_app.command("masks")
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
    from dinomask.backbones import DEFAULT_BACKBONE
    from dinomask.evaluate.masks import evaluate_masks, ranked
    from dinomask.evaluate.plan import MaskEvalPlan, build_predictors
    from dinomask.evaluate.report import conditions, write_masks_report
    from dinomask.evaluate.settings import named_settings, with_refined_twins

    model = model or DEFAULT_BACKBONE
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


@eval_app.command("recognition")
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
    from dinomask.backbones import DEFAULT_BACKBONE
    from dinomask.evaluate.predictors import build_comparators
    from dinomask.evaluate.recognition import CLASSIFIERS, evaluate_recognition, read_class_map
    from dinomask.evaluate.report import conditions, write_recognition_report
    from dinomask.segmenter import SegmenterConfig

    model = model or DEFAULT_BACKBONE
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


@eval_app.command("live")
def eval_live(
    dataset: DatasetOpt,
    output: EvalOutOpt,
    model: ModelOpt = None,
    keyframes: Annotated[Optional[list[str]], typer.Option("--keyframes", help="Schedules to compare (repeat): async, auto, every:K, off. Default: async and auto.")] = None,
    oracle: Annotated[bool, typer.Option("--oracle", help="The ground truth on the grid is the patch classifier (the backbone still runs, so costs are real): each schedule against its own ceiling.")] = False,
    realtime: Annotated[bool, typer.Option("--realtime/--no-realtime", help="Deliver frames on the camera clock (the newest wins) or every frame.")] = True,
    fps: Annotated[float, typer.Option(min=0.1, max=1000, help="The camera's frame rate (0.1 to 1000).")] = 24.0,
    costs: Annotated[Optional[str], typer.Option(help="KEY_MS,FLOW_MS: a simulated clock instead of the wall clock (reproducible): a key costs KEY_MS at the configured --tokens and grows with its own patch count (exponent 1.1, so a crop or coarser key costs less); each frame FLOW_MS.")] = None,
    key_budget_ms: Annotated[Optional[float], typer.Option(min=0, max=60000, help="async: target ms of one key for the rate controller, as in live (default: one camera frame, keys no coarser than 32 px a patch; 0: keep --tokens fixed).")] = None,
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

    from dinomask.backbones import DEFAULT_BACKBONE
    from dinomask.evaluate.datasets import load_pair
    from dinomask.evaluate.live import LiveEvalSettings, evaluate_live, parse_costs
    from dinomask.evaluate.report import conditions, write_live_report
    from dinomask.reference import Reference
    from dinomask.segmenter import Segmenter

    model = model or DEFAULT_BACKBONE
    schedules = keyframes or ["async", "auto"]
    for name, value in (("--fps", fps), ("--key-budget-ms", key_budget_ms)):
        if value is not None and not math.isfinite(value):  # click's range lets NaN through
            raise typer.BadParameter(f"expected a finite number, got {value}", param_hint=name)
    try:
        settings = LiveEvalSettings(fps=fps, realtime=realtime, oracle=oracle, costs=parse_costs(costs), max_frames=max_frames,
                                    key_budget_ms=key_budget_ms)
        for text in schedules:
            segmenter_config("dinomask", keyframes=text, roi=roi, refine=refine, refiner=refiner)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    data, run = _eval_run(dataset, model, output, overwrite)
    loaded_refiner = _refiner(refiner, device)
    backbone = _backbone(model, device, dtype, runtime, fast, busy_wait=False, warn_random=not oracle)
    run["conditions"] = {model: conditions(backbone, max_frames)}
    run["live"] = {"fps": fps, "realtime": realtime, "oracle": oracle, "costs_ms": settings.costs, "tokens": tokens,
                   "key_budget_ms": settings.key_budget, "roi": roi, "refiner": None if refiner is None else str(refiner)}
    references: dict[str, Reference] = {}

    def segmenter_for(sequence, keyframe_settings):
        if sequence.name not in references:  # the clip's first frame and its mask, as a user would show it
            image, mask = load_pair(sequence.frames[0])
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

    def show(value, spec: str, width: int) -> str:
        return ("-" if value is None else format(value, spec)).rjust(width)

    typer.echo(f"  {'schedule':10s} {'shown FPS':>9s} {'p50 ms':>7s} {'p95 ms':>7s} {'own J':>6s} {'own J&F':>7s} "
               f"{'live J':>6s} {'late-1':>6s} {'keys':>5s} {'scale':>5s} {'dropped':>7s}")
    for name, d in result["schedules"].items():
        typer.echo(f"  {name:10s} {show(d['shown_fps'], '.1f', 9)} {show(d['latency_ms_p50'], '.0f', 7)} "
                   f"{show(d['latency_ms_p95'], '.0f', 7)} {show(d['own_frame_j'], '.3f', 6)} "
                   f"{show(d['own_frame_jf'], '.3f', 7)} {show(d['live_j'], '.3f', 6)} {show(d['late_by_one_j'], '.3f', 6)} "
                   f"{show(d['keyframe_share'], '.0%', 5)} {show(d['key_scale_px_max'], '.0f', 5)} {show(d['dropped'], '.1f', 7)}")


@eval_app.command("control")
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
    from dinomask.backbones import DEFAULT_BACKBONE
    from dinomask.evaluate.control import ControlModel, evaluate_control
    from dinomask.evaluate.report import conditions, write_control_report
    from dinomask.segmenter import SegmenterConfig

    model = model or DEFAULT_BACKBONE
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping us, ``kill``), handled as Ctrl-C is: a recording is
    finished and kept, a taught reference saved, no ``.part`` file left."""


#: Set by the SIGTERM handler: typer turns every KeyboardInterrupt into exit code 130.
_TERMINATED: list[bool] = []


def _raise_terminated(signum, frame) -> None:
    _TERMINATED.append(True)
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, turning dinomask errors into one line and exit code 2
    (130 after Ctrl-C, 143 after SIGTERM)."""
    import signal
    import threading

    logging.basicConfig(level=logging.WARNING, format="dinomask: %(message)s")
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    _TERMINATED.clear()
    try:
        code = _run(argv)
        if code == 130 and _TERMINATED:
            typer.echo("terminated", err=True)
            return 143
        return code
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _expand_bare_rerun(argv: list[str]) -> list[str]:
    """``--rerun`` with no value (last, or before another option) means ``--rerun spawn``: click's
    options take a value or none, not either."""
    out = []
    for index, arg in enumerate(argv):
        out.append(arg)
        if arg == "--rerun" and (index + 1 == len(argv) or argv[index + 1].startswith("-")):
            out.append("spawn")
    return out


def _run(argv: list[str] | None) -> int:
    argv = _expand_bare_rerun(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
        if isinstance(code, int):
            return code
    except (DinomaskError, FileExistsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt) as exc:  # click turns KeyboardInterrupt into Abort
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            typer.echo("terminated", err=True)
            return 143
        typer.echo("aborted", err=True)
        return 130
    except (ValueError, RecursionError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except OSError as exc:  # a path too long for the file system, a folder where a file was expected, ...
        name = f"{str(exc.filename)[:200]}: " if exc.filename else ""
        typer.echo(f"error: {name}{exc.strerror or exc}", err=True)
        return 2
    except typer.TyperException as exc:  # usage errors (typer's click): the message, no traceback
        if not hasattr(exc, "show"):
            raise
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
