"""Models: ``download``, ``export-onnx``, ``models``, ``random-model``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dinomask.cli.options import (
    ModelOpt,
    OverwriteOpt,
)
from dinomask.errors import DinomaskError


def download(
    name: Annotated[str, typer.Argument(help="Short name (dinov2_vits14_reg, ...) or Hugging Face id.")],
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder (default: huggingface_hub's, HF_HOME).")] = None,
) -> None:
    """Fetch a model ahead of time, for machines that will be offline."""
    from dinomask.backbones import download as fetch

    path = fetch(name, str(cache_dir) if cache_dir else None)
    typer.echo(f"downloaded {name} to {path}\nuse it offline with HF_HUB_OFFLINE=1 --model {name}, or --model {path}")



def export_onnx_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write (a .json with its settings goes beside it).")],
    model: ModelOpt = None,
    int8: Annotated[bool, typer.Option("--int8", help="Quantise matrix weights to int8 (dynamic quantisation).")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a DINOv2 to ONNX for ONNX Runtime (dynamic batch and image size), checked against fp32."""
    from dinomask.backbones import MIN_FIDELITY, default_model, export_onnx, load_backbone

    if output.exists() and not overwrite:
        raise DinomaskError(f"{output} exists; pass --overwrite to replace it")
    backbone = load_backbone(model or default_model(), device="cpu", dtype="float32", runtime="torch")
    info = export_onnx(backbone, output, int8=int8)
    verdict = "ok" if info.fidelity_min_cosine >= MIN_FIDELITY else f"BELOW {MIN_FIDELITY}: prefer fp32"
    typer.echo(
        f"wrote {output} ({info.quantization}) in {info.exported_seconds:.1f} s; per-patch cosine to fp32 torch: "
        f"min {info.fidelity_min_cosine:.4f}, mean {info.fidelity_mean_cosine:.4f} ({verdict}). Use it with --model {output}"
    )


def models() -> None:
    """List the short model names and their Hugging Face ids."""
    from dinomask.backbones import BACKBONES, DEFAULT_BACKBONE

    for short, hub in BACKBONES.items():
        typer.echo(f"{short:20s} {hub}{'   (default)' if short == DEFAULT_BACKBONE else ''}")


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
