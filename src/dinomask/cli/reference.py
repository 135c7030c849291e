"""``dinomask reference``: an object's features from reference photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dinomask.cli.options import (
    DeviceOpt,
    DtypeOpt,
    FastOpt,
    ModelOpt,
    OverwriteOpt,
    RuntimeOpt,
    TokensOpt,
    _backbone,
)
from dinomask.errors import DinomaskError


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
    from dinomask.backbones import default_model
    from dinomask.preprocess import DEFAULT_TOKENS, InputGeometry
    from dinomask.reference import Reference, ReferenceSettings, reference_file

    output = reference_file(output)  # the name it is written to, checked before the model loads
    if output.exists() and not overwrite:
        raise DinomaskError(f"{output} exists; pass --overwrite to replace it")
    from dinomask.files import check_writable

    check_writable(output.parent, "the reference")
    backbone = _backbone(model or default_model(), device, dtype, runtime, fast)
    geometry = InputGeometry(resolution=resolution) if resolution else InputGeometry(tokens=tokens or DEFAULT_TOKENS)
    settings = ReferenceSettings(background=background, geometry=geometry)
    ref = Reference.from_images(backbone, images, mask or None, settings=settings, label=label)
    path = ref.save(output, overwrite=overwrite)
    typer.echo(
        f"wrote {path}: {len(ref.foreground)} object patches from {len(images)} image(s), "
        f"{len(ref.background)} scene-background patches, backbone {backbone.spec.name}"
    )
    if not len(ref.background):  # a painted photo: the weaker rule, and how to get the stronger one
        typer.echo("note: no scene background in the reference (its background is painted), so frames are "
                   "split by Otsu with the presence floor; give the unpainted photo with its mask "
                   "(IMAGE --mask MASK) and the reference's own scene rejects look-alikes (fg-vs-bg)", err=True)
