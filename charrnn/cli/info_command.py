"""``charrnn info``: what a checkpoint holds, for people (text) and for scripts (``--json``)."""

from __future__ import annotations

import os
from typing import Optional

import click

from charrnn.cli.options import option, quiet_option
from charrnn.cli.common import echo_text, emit_json, inform, reports_errors, resolve_checkpoint


@click.command("info")
@click.argument("checkpoint", required=False, type=click.Path())
@option("--json", is_flag=True, help="Print one JSON document instead of text.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def info_command(checkpoint: Optional[str], json: bool, quiet: bool) -> None:
    """Describe the model in CHECKPOINT [default: the newest in checkpoints/].

    CHECKPOINT may also be a folder of checkpoints, for its newest one.

    Shows the cell, layers and sizes, the parameter count with its formula, the vocabulary, the
    corpus, training progress and losses, the optimizer, and the file's format and charrnn versions.
    With --json, stdout holds exactly one JSON document (NaN and infinity written as null).
    """
    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn.checkpoints import info
    from charrnn.errors import CheckpointError

    path = resolve_checkpoint(checkpoint, quiet)
    if os.path.isdir(path):  # a run's folder, as a sweep script has it at hand: its newest checkpoint
        found = checkpoints.find_latest(path)
        if found is None:
            raise CheckpointError(f"no checkpoint in {path}; pass a checkpoint file")
        inform(quiet, f"using {found}")
        path = found
    facts = info.summarize(path)
    if json:
        emit_json(info.to_dict(facts))
    else:
        echo_text("\n".join(info.describe(facts)))
