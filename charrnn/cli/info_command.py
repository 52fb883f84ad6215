"""``charrnn info``: what a checkpoint holds, for people (text) and for scripts (``--json``)."""

from __future__ import annotations

from typing import Optional

import click

from charrnn.cli.options import option, quiet_option
from charrnn.cli.common import (
    checkpoint_argument, checkpoint_option, echo_text, emit_json, examples, reports_errors, resolve_checkpoint,
)


@click.command("info", epilog=examples(
    'charrnn info',
    'charrnn info tang/step_00002000.npz',
    'charrnn info -c tang --json',
))
@click.argument("ckpt", required=False, type=click.Path(), metavar="[CKPT]")
@checkpoint_option()
@option("--json", is_flag=True, help="Print one JSON document instead of text.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def info_command(ckpt: Optional[str], checkpoint: Optional[str], json: bool, quiet: bool) -> None:
    """Describe the model in CKPT (given as the argument or as -c).

    CKPT is a checkpoint file, or a folder for its best.npz, else latest.npz [default: the newest
    run's folder in checkpoints/].

    Shows the cell, layers and sizes, the parameter count with its formula, the vocabulary, the
    corpus, training progress and losses, the optimizer, and the file's format and charrnn versions.
    With --json, stdout holds exactly one JSON document (NaN and infinity written as null).
    """
    from charrnn.checkpoints import info

    path = resolve_checkpoint(checkpoint_argument(ckpt, checkpoint), quiet)
    facts = info.summarize(path)
    if json:
        emit_json(info.to_dict(facts))
    else:
        echo_text("\n".join(info.describe(facts)))
