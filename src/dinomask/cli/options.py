"""Options several commands share, declared once, and the helpers that turn them into a segmenter."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dinomask.errors import ModelNotFoundError

# ----------------------------------------------------------------------------- shared options

#: Temporal smoothing used for video and live input unless the user sets --temporal.
VIDEO_TEMPORAL_ALPHA = 0.5
#: Keyframe policy for video and live input unless the user sets --keyframes.
DEFAULT_KEYFRAMES = "auto"

#: --help panels: options grouped by what they are about (issue 32 item 6).
PANEL_MODEL, PANEL_METHOD, PANEL_VIDEO, PANEL_OUTPUTS, PANEL_ROBOTICS, PANEL_RAY = (
    "Model and runtime", "Method", "Video and live", "Outputs", "Robotics and Rerun", "Ray")

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", rich_help_panel=PANEL_MODEL, help="DINOv2 short name (dinov2_vits14_reg, ...), Hugging Face id, "
                 "save_pretrained folder, .safetensors or Meta .pth. Default: the reference's own backbone."),
]
DeviceOpt = Annotated[str, typer.Option(rich_help_panel=PANEL_MODEL, help="auto, cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option(rich_help_panel=PANEL_MODEL, help="Torch runtime: float32 (exact), bfloat16, float16, or auto (bf16/fp16 where the hardware has it).")]
RuntimeOpt = Annotated[str, typer.Option(rich_help_panel=PANEL_MODEL, help="auto (fastest faithful path: ONNX int8 on CPU, torch fp16 on CUDA), torch, onnx, onnx-int8.")]
FastOpt = Annotated[bool, typer.Option("--fast/--no-fast", rich_help_panel=PANEL_MODEL, help="--no-fast: plain torch fp32 eager (the exact baseline).")]
ResolutionOpt = Annotated[Optional[int], typer.Option(rich_help_panel=PANEL_METHOD, help="Network input short side in px (518 -> 37 patches); overrides --tokens. Default: the method's.")]
TokensOpt = Annotated[Optional[int], typer.Option(rich_help_panel=PANEL_METHOD, help="Token budget: patches per frame on an aspect-kept grid (default 1400: 28x50 at 16:9, 32x43 at 4:3).")]
MethodOpt = Annotated[str, typer.Option(rich_help_panel=PANEL_METHOD, help="Preset: 'dinomask' (improved default) or 'paper' (the method as written).")]
ThresholdOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_METHOD, help="0.5 or any cosine, otsu, relative:F, fg-vs-bg, or auto. Default: the preset's.")]
PrototypeOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_METHOD, help="cls, patch-mean or kmeans. Default: the preset's.")]
PresenceOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_METHOD, help="How a frame says 'no object here': reference (a patch must be at least halfway from unrelated, cosine 0, to the object's own level; the default), none (the threshold alone: Otsu always finds 'an object'), or a cosine. Default: the preset's (none for paper).")]
KOpt = Annotated[Optional[int], typer.Option("--k", rich_help_panel=PANEL_METHOD, help="k-means object prototypes.")]
BgSourceOpt = Annotated[Optional[str], typer.Option("--bg-source", rich_help_panel=PANEL_METHOD, help="Background prototypes from: none, reference, frame, both.")]
UpsampleOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_METHOD, help="nearest (the paper's blocks), bilinear, bicubic (the soft score; default) or bilateral (bicubic, then a joint bilateral filter on the edge band, guided by the frame's colours; about 7 ms at 854x480 on 2 cores, 23 ms at worst).")]
RoiOpt = Annotated[Optional[bool], typer.Option("--roi/--no-roi", rich_help_panel=PANEL_VIDEO, help="Video: after a confident mask, process only a crop around the object: in a file frame by frame it gets the whole token budget (more patches on the object); on a camera's clock (async keyframes) it keeps the frame's scale (fewer patches, sooner keys). Default: on, except for paper.")]
AdaptOpt = Annotated[float, typer.Option(rich_help_panel=PANEL_METHOD, help="Video: rate at which prototypes follow the object's confident patches (0 = off), with a drift guard.")]
KeyframesOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_VIDEO, help="Video/live: off, auto (backbone on keyframes, optical flow between, sooner when the flow is unsure), every:K, or async (live on a camera's clock: the backbone in its own worker, flow on every frame). Default: async for live on a camera, stream or --realtime; auto for files; off for paper.")]
TemporalOpt = Annotated[Optional[float], typer.Option(rich_help_panel=PANEL_VIDEO, help="Temporal smoothing of video: weight of the past in [0, 1); 0 is off. Default: 0.5 for dinomask, 0 for paper.")]
RefineOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_METHOD, help="none, or sam: a SAM-family refiner makes the mask, prompted by the similarity (best patches, most background-like ones, the object's box). Default: sam when --refiner is given.")]
RefinerOpt = Annotated[Optional[Path], typer.Option(rich_help_panel=PANEL_METHOD, help="Folder of a transformers SamModel for --refine sam (SAM ViT-B/L/H, SlimSAM, ...; save_pretrained layout). Its quality depends on its weights: measure it with 'dinomask eval masks --refine sam'.")]
RefOpt = Annotated[list[Path], typer.Option("--ref", "-r", help="Reference .npz (repeat for several objects).")]
BackgroundOpt = Annotated[str, typer.Option("--background", "-b", rich_help_panel=PANEL_OUTPUTS, help="black, white, transparent, blur, #rrggbb or r,g,b.")]
OutputKindOpt = Annotated[str, typer.Option("--output-kind", rich_help_panel=PANEL_OUTPUTS, help="composite, mask, heatmap or overlay.")]
VideoCodecOpt = Annotated[str, typer.Option("--video-codec", rich_help_panel=PANEL_OUTPUTS, help="Videos: auto (H.264 where this OpenCV has an encoder, else MPEG-4 Part 2, which browsers do not play), h264, vp9 (plays in browsers; about 25x slower to encode with OpenCV's libvpx) or mp4v.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", rich_help_panel=PANEL_OUTPUTS, help="Replace outputs that exist (default: skip them).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=PANEL_OUTPUTS, help="No progress bars.")]
RerunRawOpt = Annotated[bool, typer.Option("--rerun-raw", rich_help_panel=PANEL_ROBOTICS, help="With --rerun: log frames as captured (raw RGB, about 1.2 MB a frame at 854x480) instead of JPEG (quality 90, about a tenth of that).")]
RerunOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_ROBOTICS, help="Log every frame, its mask, the similarity and the loop's figures to Rerun: --rerun alone spawns a viewer, --rerun FILE.rrd saves a recording, --rerun HOST:PORT connects to a running viewer (pip install 'dinomask\\[robotics]').")]
TopicOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_ROBOTICS, help="A ROS bag's image topic (sensor_msgs Image or CompressedImage); needed where the bag has several.")]
class Engine(str, Enum):
    """Where batch work runs."""

    local = "local"
    ray = "ray"


EngineOpt = Annotated[Engine, typer.Option(rich_help_panel=PANEL_RAY, help="local (this process) or ray (Ray Data actor pool; pip install 'dinomask\\[ray]').")]
AddressOpt = Annotated[Optional[str], typer.Option(rich_help_panel=PANEL_RAY, help="Ray: 'auto' joins a running cluster, ray://host:port a remote one; default starts a local Ray.")]
ActorsOpt = Annotated[Optional[int], typer.Option(rich_help_panel=PANEL_RAY, min=1, help="Ray: actor count (default: one per GPU on CUDA, else one per CPU).")]
#: What ``live --output`` records to (an mp4v stream; these containers take it).
RECORDING_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv")


def segmenter_config(
    method: str, *, resolution: int | None = None, tokens: int | None = None, threshold: str | None = None,
    prototype: str | None = None, k: int | None = None, bg_source: str | None = None, upsample: str | None = None,
    temporal: float | None = None, adapt: float = 0.0, roi: bool | None = None, keyframes: str | None = None,
    refine: str | None = None, refiner: Path | None = None, presence: str | None = None,
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
                        ("background", bg_source), ("upsample", upsample), ("presence", presence)):
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
    if not busy_wait and backbone.device.type == "cpu" and "DINOMASK_THREADS" not in os.environ:
        import torch

        from dinomask.backbones import default_threads

        torch.set_num_threads(default_threads(busy_wait))  # a torch key leaves the loop its core too
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
        # --model, then DINOMASK_MODEL (your own copy), then the model the reference names
        model = model or os.environ.get("DINOMASK_MODEL", "").strip() or None
        backbone = _backbone(model or references[0].backbone.name, device, dtype, runtime, fast, busy_wait)
    except ModelNotFoundError as exc:
        if model is not None:
            raise
        raise ModelNotFoundError(
            f"{exc}\nThe reference {refs[0]} names the model it was made with ({references[0].backbone.name}); where "
            "that is not on this machine, pass the same weights with --model: a folder, a checkpoint, or an export "
            "made with 'dinomask export-onnx' (--model X.onnx)") from None
    return Segmenter(backbone, references, config, refiner=loaded_refiner)



def _check_rerun(target: str | None) -> None:
    """``--rerun``'s target, checked before the model loads: the SDK, the file's folder, the
    viewer to spawn or to connect to (see :func:`dinomask.rerun_view.check_target`)."""
    if target is None:
        return
    from dinomask.rerun_view import check_target

    try:
        check_target(target)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rerun") from None


def _rerun_view(target: str | None, segmenter, name: str, raw: bool = False):
    """The Rerun recording for ``--rerun`` (frames JPEG, or as captured with ``--rerun-raw``), or None."""
    if target is None:
        return None
    from dinomask.rerun_view import RerunView

    return RerunView(target, segmenter.object_names, name=name, images="raw" if raw else "jpeg",
                     random_weights=getattr(segmenter.backbone, "random_weights", None))
