"""``dinomask live``: a camera, stream, video, folder or bag, shown, recorded or logged, taught while it runs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Optional

import typer


from dinomask.cli.options import (
    PANEL_OUTPUTS,
    PANEL_VIDEO,
    AdaptOpt,
    BackgroundOpt,
    BgSourceOpt,
    DeviceOpt,
    DtypeOpt,
    FastOpt,
    KOpt,
    KeyframesOpt,
    MethodOpt,
    ModelOpt,
    OverwriteOpt,
    PresenceOpt,
    PrototypeOpt,
    RECORDING_SUFFIXES,
    RefOpt,
    RefineOpt,
    RefinerOpt,
    RerunOpt,
    RerunRawOpt,
    ResolutionOpt,
    RoiOpt,
    RuntimeOpt,
    TemporalOpt,
    ThresholdOpt,
    TokensOpt,
    TopicOpt,
    UpsampleOpt,
    _check_rerun,
    _load_segmenter,
    segmenter_config,
)


def live(
    ref: RefOpt = [],  # noqa: B006
    source: Annotated[str, typer.Option(help="Camera index (0), stream URL, video file, folder of frames, or ROS bag (ROS 2 folder, .mcap, ROS 1 .bag; --topic).")] = "0",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", rich_help_panel=PANEL_OUTPUTS, help="Record to this .mp4 (headless).")] = None,
    window: Annotated[bool, typer.Option(rich_help_panel=PANEL_OUTPUTS, help="Show a window (needs an OpenCV build with GUI).")] = True,
    max_frames: Annotated[Optional[int], typer.Option(rich_help_panel=PANEL_VIDEO, min=1, help="Stop after this many frames (at least 1).")] = None,
    retry_seconds: Annotated[float, typer.Option(rich_help_panel=PANEL_VIDEO, min=0, max=86400, help="How long to retry a camera or stream that disconnects (0 to 86400 s).")] = 10.0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    runtime: RuntimeOpt = "auto",
    fast: FastOpt = True,
    method: MethodOpt = "dinomask",
    resolution: ResolutionOpt = None,
    tokens: TokensOpt = None,
    threshold: ThresholdOpt = None,
    presence: PresenceOpt = None,
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
    save_ref: Annotated[Optional[Path], typer.Option("--save-ref", rich_help_panel=PANEL_OUTPUTS, help="Write the taught reference here on 's' and on exit (.npz).")] = None,
    stats_every: Annotated[Optional[float], typer.Option("--stats-every", rich_help_panel=PANEL_OUTPUTS, min=0, help="Print a JSON line of FPS, latency p50/p95 and keyframe share every this many seconds, and one for the last, partial interval at the end (0: only that one).")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", rich_help_panel=PANEL_VIDEO, help="Play a video file or frame folder on its own clock, as a camera would (the newest frame wins); without it every frame is processed.")] = False,
    fps: Annotated[Optional[float], typer.Option(rich_help_panel=PANEL_VIDEO, min=0.1, max=1000, help="Frame rate of a folder of frames (default 24), or one that replaces a file's own (0.1 to 1000).")] = None,
    key_budget_ms: Annotated[Optional[float], typer.Option(rich_help_panel=PANEL_VIDEO, min=0, max=60000, help="--keyframes async: target ms of one backbone key; the key's token budget follows it (default: one camera frame, keys no coarser than a 405-token whole frame, 32 px a patch at 854x480; 0: keep --tokens fixed).")] = None,
    topic: TopicOpt = None,
    rerun: RerunOpt = None,
    rerun_raw: RerunRawOpt = False,
) -> None:
    """Live background removal from a camera, stream or video, taught while it runs: keys a (add this
    view), +/- (threshold), u (undo), r (reset), s (save), q (quit); without a window, the same as stdin lines."""
    from dinomask.live import LiveOptions, run_live_command
    from dinomask.reference import reference_file

    from dinomask.video import is_live, parse_source

    save_ref = None if save_ref is None else reference_file(save_ref)  # the name 's' and exit write
    for name, value in (("--fps", fps), ("--key-budget-ms", key_budget_ms), ("--stats-every", stats_every),
                        ("--retry-seconds", retry_seconds)):
        if value is not None and not math.isfinite(value):  # click's range lets NaN through
            raise typer.BadParameter(f"expected a finite number, got {value}", param_hint=name)
    if output is not None and output.suffix.lower() not in RECORDING_SUFFIXES:  # checked before the model loads
        raise typer.BadParameter(f"expected a video file name ending in {', '.join(RECORDING_SUFFIXES)}, got {str(output)!r}",
                                 param_hint="--output")
    if keyframes is None and method != "paper" and (realtime or is_live(parse_source(source))):
        keyframes = "async"  # on a camera's clock the backbone runs beside the loop, never in it
    config = segmenter_config(method, resolution=resolution, tokens=tokens, threshold=threshold, prototype=prototype, k=k,
                              bg_source=bg_source, upsample=upsample, temporal=temporal, adapt=adapt, roi=roi,
                              keyframes=keyframes, refine=refine, refiner=refiner, presence=presence)
    options = LiveOptions(
        source=source, output=output, window=window and output is None, max_frames=max_frames,
        retry_seconds=retry_seconds, background=background, overwrite=overwrite, save_ref=save_ref,
        stats_every=stats_every, realtime=realtime, fps=fps, key_budget_ms=key_budget_ms, topic=topic, rerun=rerun,
        rerun_images="raw" if rerun_raw else "jpeg",
    )
    _check_rerun(rerun)
    _check_bag_source(source, topic)
    from dinomask.files import check_writable

    if output is not None:
        check_writable(output.parent, "the recording")
    if save_ref is not None:
        check_writable(save_ref.parent, "the taught reference")
    if options.window:
        from dinomask.errors import DinomaskError
        from dinomask.live import check_window_support

        try:
            check_window_support()
        except DinomaskError:
            if rerun is None:
                raise
            # a Rerun viewer is the window: where OpenCV has none (headless), show frames there alone
            typer.echo("note: this OpenCV build has no window support; frames are shown in the Rerun viewer only",
                       err=True)
            options = dataclasses.replace(options, window=False)
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


def _check_bag_source(source: str, topic: str | None) -> None:
    """A bag named as the source is opened (its topic chosen) before the model loads; a crashed
    recorder's folder (bag storage without metadata.yaml) is said for what it is."""
    from dinomask.bags import BagReader, bag_without_metadata, is_bag
    from dinomask.errors import DinomaskError

    hint = bag_without_metadata(source)
    if hint is not None:
        raise DinomaskError(hint)
    if is_bag(source):
        with BagReader(source, topic):
            pass
    elif topic is not None:
        raise typer.BadParameter("--topic is for a ROS bag source", param_hint="--topic")
