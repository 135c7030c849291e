"""The ``dinomask`` Typer application and its ``eval`` group; :mod:`dinomask.cli` registers the commands."""

from __future__ import annotations

from typing import Annotated

import typer

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
