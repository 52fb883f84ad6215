"""``charrnn plot``: a training log's loss curves as a PNG (needs the ``plot`` extra)."""

from __future__ import annotations

import click

from charrnn.cli.options import option, quiet_option
from charrnn.cli.common import emit_json, examples, inform, reports_errors


@click.command("plot", epilog=examples(
    'charrnn plot run.jsonl -o loss.png',
    'charrnn plot run.jsonl -o loss.png --width-px 800 --json',
))
@click.argument("log", type=click.Path())
@option("-o", "--output", required=True, type=click.Path(), metavar="PNG", help="PNG file to write, e.g. loss.png.")
@option("--width-px", type=int, default=1200, show_default=True, metavar="N", help="Image width in pixels.")
@option("--height-px", type=int, default=800, show_default=True, metavar="N", help="Image height in pixels.")
@option("--json", is_flag=True, help="Print a JSON document naming the file written.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def plot_command(log: str, output: str, width_px: int, height_px: int, json: bool, quiet: bool) -> None:
    """Draw the loss curves of LOG (written by 'charrnn train --log-jsonl') to a PNG.

    Two panels against tokens seen: loss in nats per token, and in bits per character; training loss
    as a line, validation loss as points at the steps where it was measured. Needs matplotlib:
    pip install '.[plot]' in charrnn's source folder (not 'charrnn[plot]', which is another project).
    """
    from charrnn.plot import plot_log

    records = plot_log(log, output, width_px, height_px)
    validations = sum(r.val_loss_nats is not None for r in records)
    inform(quiet, f"wrote {output} ({width_px}×{height_px} px; {len(records)} steps, {validations} validations)")
    if json:
        emit_json({"log": log, "output": output, "width_px": width_px, "height_px": height_px,
                   "steps": len(records), "validations": validations})
