"""``charrnn ls``: the checkpoints of a folder, with their steps, losses and sizes."""

from __future__ import annotations

from typing import Optional

import click

from charrnn.cli.common import echo_text, emit_json, examples, inform, reports_errors
from charrnn.cli.options import option, quiet_option
from charrnn.config import DEFAULT_CHECKPOINT_DIR


@click.command("ls", epilog=examples(
    'charrnn ls',
    'charrnn ls tang --json',
))
@click.argument("folder", required=False, type=click.Path(), metavar="[DIR]")
@option("--json", is_flag=True, help="Print one JSON document instead of a table.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def ls_command(folder: Optional[str], json: bool, quiet: bool) -> None:
    """List the checkpoints in DIR [default: checkpoints/]: step, tokens seen, smoothed training loss,
    latest validation loss (nats/token), size, and which is best and latest.

    A step file that holds the same model at the same step as best.npz or latest.npz says so (=
    best.npz). Only each file's metadata is read, so listing large checkpoints is quick.
    """
    from charrnn.checkpoints import listing

    directory = DEFAULT_CHECKPOINT_DIR if folder is None else folder
    items = listing.list_folder(directory)
    if json:
        emit_json(listing.to_dict(directory, items))
    elif items:
        echo_text("\n".join(listing.describe(items)))
    else:
        inform(quiet, f"no checkpoints in {directory}")
