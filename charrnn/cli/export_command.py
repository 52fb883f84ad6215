"""``charrnn export``: a sampling-only copy of a checkpoint, without optimizer and stream state."""

from __future__ import annotations

import os
from typing import Optional

import click

from charrnn import files
from charrnn.cli.common import (
    checkpoint_argument, checkpoint_option, emit_json, examples, inform, reports_errors, resolve_checkpoint,
)
from charrnn.cli.options import option, quiet_option


@click.command("export", epilog=examples(
    'charrnn export -o tang-model.npz',
    'charrnn export tang/best.npz -o share/tang.npz --overwrite',
))
@click.argument("ckpt", required=False, type=click.Path(), metavar="[CKPT]")
@checkpoint_option()
@option("-o", "--output", required=True, type=click.Path(), metavar="OUT",
        help="The file to write, e.g. tang-model.npz.")
@option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@option("--json", is_flag=True, help="Print a JSON document naming the file written.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def export_command(ckpt: Optional[str], checkpoint: Optional[str], output: str, overwrite: bool, json: bool,
                   quiet: bool) -> None:
    """Write the model of CKPT to OUT without its optimizer state and its streams' state, for sampling.

    CKPT, the argument or -c, is a checkpoint file, or a folder for its best.npz, else latest.npz
    [default: the newest run's folder in checkpoints/]. OUT is an ordinary checkpoint that sample, eval and info
    read, a fraction of the size (with Adagrad, about half); train --resume refuses it, as it has
    nothing to continue from.
    """
    from charrnn import files
    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn.errors import ConfigError

    path = resolve_checkpoint(checkpoint_argument(ckpt, checkpoint), quiet)
    if not output:
        raise ConfigError("-o is empty; give the name of the file to write, e.g. -o model.npz")
    if os.path.isdir(output):
        raise ConfigError(f"-o {output} is a folder; give the name of the file to write")
    files.require_regular_or_absent(output, "-o ")  # a link, a device, a pipe: never replaced
    if os.path.exists(output):
        if os.path.exists(path) and os.path.samefile(output, path):
            raise ConfigError(f"-o {output} is the checkpoint being exported; give another name")
        if not overwrite:
            raise ConfigError(f"-o {output} exists; give another name, or --overwrite to replace it")
    folder = os.path.dirname(output) or "."
    if not os.path.isdir(folder):
        raise ConfigError(f"cannot write -o {output}: the folder {folder} does not exist")
    # The unfinished writes of exports that were killed (their process no longer runs) go first.
    files.remove_orphaned_temporaries(folder)
    _check_writable(folder, output)
    source = checkpoints.load(path)
    checkpoints.write(checkpoints.export(source), output)
    size, source_size = os.path.getsize(output), os.path.getsize(path)
    kind = "bidirectional model (for charrnn fill)" if source.model_config.bidirectional else "model"
    inform(quiet, f"wrote {output}: the {kind} of {path} at step {source.progress.step:,}, {size:,} bytes "
                  f"({source_size:,} with the optimizer and stream state)")
    if json:
        emit_json({"checkpoint": path, "output": output, "step": source.progress.step, "size_bytes": size,
                   "checkpoint_size_bytes": source_size,
                   "direction": "bidirectional" if source.model_config.bidirectional else "left-to-right"})


def _check_writable(folder: str, output: str) -> None:
    """ConfigError (exit 2) unless a file can be created in ``folder``, found before any work is done.

    Tried for real, with a temporary file removed at once: permissions do not tell (root passes every
    check, and a read-only file system or a folder such as /proc refuses root too).
    """
    from charrnn.errors import ConfigError

    try:
        fd, probe = files.make_temporary(folder, "export-probe")
    except OSError as exc:
        raise ConfigError(f"cannot write -o {output}: {exc.strerror or exc} (the folder {folder}); "
                          "give another path") from None
    os.close(fd)
    os.unlink(probe)
