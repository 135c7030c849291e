"""The ``dinomask`` command line, one module per command group:

* :mod:`dinomask.cli.options`: the options several commands share, declared once, and the helpers
  that turn them into a segmenter;
* :mod:`dinomask.cli.reference`, :mod:`~dinomask.cli.remove`, :mod:`~dinomask.cli.live`,
  :mod:`~dinomask.cli.serve`, :mod:`~dinomask.cli.models` and :mod:`~dinomask.cli.eval`: the commands;
* this module: the app assembled in the order ``dinomask --help`` lists them, and :func:`main`.

Errors that dinomask raises on purpose print one message and exit with code 2; a batch
in which some inputs failed exits with code 1 after finishing the rest.
"""

from __future__ import annotations

import logging
import sys

import typer

from dinomask.cli import eval as eval_commands
from dinomask.cli import live, models, reference, remove, serve
from dinomask.cli.app import app, eval_app
from dinomask.cli.options import segmenter_config
from dinomask.errors import DinomaskError

__all__ = ["app", "main", "segmenter_config"]

app.command()(reference.reference)
app.command()(remove.remove)
app.command()(live.live)
app.command()(models.download)
app.command()(serve.serve)
app.command("export-onnx")(models.export_onnx_command)
app.command("models")(models.models)
app.command("random-model")(models.random_model)
eval_app.command("masks")(eval_commands.eval_masks)
eval_app.command("recognition")(eval_commands.eval_recognition)
eval_app.command("live")(eval_commands.eval_live)
eval_app.command("control")(eval_commands.eval_control)


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

