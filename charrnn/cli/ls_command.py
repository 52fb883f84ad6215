"""``charrnn ls``: the runs under checkpoints/, or the checkpoints of one folder, with steps, losses and sizes."""

from __future__ import annotations

import os
from typing import Optional

import click

from charrnn.cli.common import echo_text, emit_json, examples, inform, reports_errors
from charrnn.cli.options import option, quiet_option
from charrnn.config import DEFAULT_CHECKPOINT_DIR


@click.command("ls", epilog=examples(
    'charrnn ls',
    'charrnn ls checkpoints/tang300 --json',
))
@click.argument("folder", required=False, type=click.Path(), metavar="[DIR]")
@option("--json", is_flag=True, help="Print one JSON document instead of a table.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def ls_command(folder: Optional[str], json: bool, quiet: bool) -> None:
    """List the runs under checkpoints/, or the checkpoints in DIR.

    Without DIR (or with a DIR that holds run folders rather than checkpoints): one line per run
    folder, oldest first, with its model, corpus, step, best validation loss (nats/token) and when it
    was last written; the newest run is the one sample, eval, info and export read when given no
    checkpoint. --json: {"folder", "newest", "runs": [...]}.

    With DIR: its checkpoints, with step, tokens seen, smoothed training loss, latest validation loss,
    size, and which is best and latest. A step file that holds the same model at the same step as
    best.npz or latest.npz says so (= best.npz). --json: {"folder", "best", "latest", "checkpoints": [...]}.
    Only each file's metadata is read, so listing large checkpoints is quick.
    """
    from charrnn.checkpoints import folder_files, listing

    if folder is None or (os.path.isdir(folder) and not listing.list_folder(folder)
                          and folder_files.run_folders(folder)):
        root = DEFAULT_CHECKPOINT_DIR if folder is None else folder
        runs = listing.list_runs(root)
        if json:
            emit_json(listing.runs_to_dict(root, runs))
        elif runs:
            echo_text("\n".join(listing.describe_runs(runs)))
        else:
            inform(quiet, f"no runs in {root.rstrip(os.sep)}/; train one with 'charrnn train CORPUS'")
        return
    items = listing.list_folder(folder)
    if json:
        emit_json(listing.to_dict(folder, items))
    elif items:
        echo_text("\n".join(listing.describe(items)))
    else:
        inform(quiet, f"no checkpoints in {folder}")
