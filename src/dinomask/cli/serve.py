"""``dinomask serve``: the HTTP service and web page."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dinomask.cli.options import (
    DeviceOpt,
    DtypeOpt,
    FastOpt,
    ModelOpt,
    RefineOpt,
    RefinerOpt,
    RuntimeOpt,
    _backbone,
    _limit_threads,
    _refiner,
    refine_settings,
)
from dinomask.errors import DinomaskError


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
                             "names are always allowed; other Host and Origin headers are refused. 'null' allows "
                             "Origin: null (sandboxed frames, local files), refused by default.")] = None,
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
    from dinomask.backbones import default_model

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
    backbone = _backbone(model or default_model(), device, dtype, runtime, fast, busy_wait=False)
    typer.echo(f"dinomask serving {backbone.spec.name}" + (f" refined by {refiner}" if refiner else "")
               + f" on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(create_app(backbone, config, loaded_refiner), host=host, port=port, log_level="warning", **server_options(config))
