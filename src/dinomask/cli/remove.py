"""``dinomask remove``: images, folders, videos and ROS bags in, one output each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dinomask.cli.options import (
    PANEL_OUTPUTS,
    PANEL_RAY,
    PANEL_ROBOTICS,
    ActorsOpt,
    AdaptOpt,
    AddressOpt,
    BackgroundOpt,
    BgSourceOpt,
    DeviceOpt,
    DtypeOpt,
    Engine,
    EngineOpt,
    FastOpt,
    KOpt,
    KeyframesOpt,
    MethodOpt,
    ModelOpt,
    OutputKindOpt,
    OverwriteOpt,
    PresenceOpt,
    PrototypeOpt,
    QuietOpt,
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
    VideoCodecOpt,
    UpsampleOpt,
    _check_rerun,
    _load_segmenter,
    _rerun_view,
    _runtime,
    segmenter_config,
)
from dinomask.errors import DinomaskError


def remove(
    inputs: Annotated[list[Path], typer.Argument(help="Images, folders and video files; or one ROS bag (a ROS 2 bag folder, .mcap or ROS 1 .bag).")],
    output: Annotated[Path, typer.Option("--output", "-o", rich_help_panel=PANEL_OUTPUTS, help="Output folder (created; inputs are never overwritten). For a bag: the output bag, a ROS 2 bag folder, or a bare MCAP file when it ends in .mcap.")],
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
    output_kind: OutputKindOpt = "composite",
    video_codec: VideoCodecOpt = "auto",
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    engine: EngineOpt = Engine.local,
    address: AddressOpt = None,
    actors: ActorsOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(rich_help_panel=PANEL_RAY, min=1, help="Ray: work items per batch (default 4).")] = None,
    rerun: RerunOpt = None,
    rerun_raw: RerunRawOpt = False,
    topic: TopicOpt = None,
    bag_outputs: Annotated[Optional[str], typer.Option("--bag-outputs", rich_help_panel=PANEL_ROBOTICS, help="A bag input: besides TOPIC/mask, also write removed (the composited frame) and/or similarity (32FC1 on the patch grid), comma-separated.")] = None,
) -> None:
    """Remove the background of images, folders, videos, or a ROS bag's image topic; one output per input
    (for a bag: a ROS 2 bag of masks at OUT)."""
    from dinomask.batch import OutputOptions, remove_batch
    from dinomask.composite import OUTPUT_KINDS, Background
    from dinomask.files import check_writable, plan_outputs

    if output_kind not in OUTPUT_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(OUTPUT_KINDS)}, got {output_kind!r}", param_hint="--output-kind")
    options = OutputOptions(kind=output_kind, background=Background.parse(background), overwrite=overwrite,
                            video_codec=_checked_codec(video_codec))
    _check_rerun(rerun)
    if rerun is not None and engine is Engine.ray:
        raise typer.BadParameter("--rerun logs from this process; it does not combine with --engine ray", param_hint="--rerun")
    from dinomask.bags import bag_without_metadata, is_bag

    for path in inputs:  # a crashed recorder's folder is no folder of images: say what it is and what to do
        hint = bag_without_metadata(path)
        if hint is not None:
            raise DinomaskError(hint)
    config = segmenter_config(method, resolution=resolution, tokens=tokens, threshold=threshold, prototype=prototype, k=k,
                              bg_source=bg_source, upsample=upsample, temporal=temporal, adapt=adapt, roi=roi,
                              keyframes=keyframes, refine=refine, refiner=refiner, presence=presence)
    if any(is_bag(path) for path in inputs):
        _remove_bag(inputs, output, options, topic, bag_outputs, engine, quiet, rerun, rerun_raw,
                    lambda: _load_segmenter(ref, model, device, dtype, runtime, fast, config, refiner=refiner))
        return
    if topic is not None or bag_outputs is not None:
        raise typer.BadParameter("--topic and --bag-outputs are for a ROS bag input", param_hint="--topic")
    suffix = "" if output_kind == "composite" else f"_{output_kind}"
    items, problems = plan_outputs(inputs, output, transparent=options.transparent, suffix=suffix)
    if not items:
        raise DinomaskError("no image or video files to process among the inputs:\n  " + "\n  ".join(problems))
    check_writable(output)
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
        view = _rerun_view(rerun, segmenter, "remove", rerun_raw)
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


def _remove_bag(inputs, output: Path, options, topic, bag_outputs, engine, quiet: bool, rerun: str | None,
                rerun_raw: bool, load_segmenter) -> None:
    """``remove`` on one ROS bag: its image topic in, a ROS 2 bag (MCAP) of masks out at ``output``;
    ``load_segmenter()`` loads the model once the bag, its topic and the output are checked."""
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
    from dinomask.bags import check_output

    note = check_output(source, output, options.overwrite)  # nothing the user owns is replaced; before the model loads
    if note:
        typer.echo(f"note: {note}", err=True)
    with BagReader(source, topic) as reader:  # the bag and its topic, checked before the model loads
        topic = reader.topic
    from dinomask.files import check_writable

    check_writable(output.parent, "the output bag")
    segmenter = load_segmenter()
    view = _rerun_view(rerun, segmenter, f"remove {source}", rerun_raw)
    try:
        report = remove_bag(segmenter, source, output, options, topic=topic, extras=extras, show_progress=not quiet,
                            view=view)
    finally:
        if view is not None:
            view.close()
    typer.echo(report.summary(), err=not report.ok)
    if report.interrupted is not None:
        raise report.interrupted
    if not report.ok:
        raise typer.Exit(1)


def _checked_codec(choice: str) -> str:
    """``--video-codec`` checked before the model loads: a name it knows, that this OpenCV writes."""
    from dinomask.errors import OutputError
    from dinomask.files import video_codec

    try:
        video_codec(".mp4", choice)
    except (ValueError, OutputError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--video-codec") from None
    return choice
