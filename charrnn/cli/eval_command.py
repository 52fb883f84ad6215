"""``charrnn eval``: loss, bits per character and perplexity of text under a model."""

from __future__ import annotations

import click

from charrnn.cli.common import emit_json, format_score, reports_errors
from charrnn.cli.exits import write_stdout
from charrnn.cli.options import config_options, option, quiet_option
from charrnn.config import DataConfig


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("files", nargs=-1, required=True, type=click.Path())
@config_options(DataConfig, only={"encoding"})
@option("--batch-size", type=int, default=32, show_default=True, metavar="N",
              help="Streams scored side by side (each starts with no context).")
@option("--json", is_flag=True, help="Print the scores as one JSON document.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def eval_command(
    checkpoint: str, files: tuple[str, ...], encoding: str, batch_size: int, json: bool, quiet: bool
) -> None:
    """Score the text of FILES (joined) under the model in CHECKPOINT.

    Prints one line on stdout: tokens scored, loss in nats per token, bits per character and
    perplexity. Tokens outside the model's vocabulary are counted, and left out of the score (or
    scored as <unk> when the model has one). Exit code 2 if none of the text can be scored.
    """
    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn import memory
    from charrnn.model import network
    from charrnn.errors import ConfigError
    from charrnn.data.corpus import read_corpus
    from charrnn.inference.scoring import score_text

    if batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    ckpt = checkpoints.load(checkpoint)
    text = read_corpus(files, encoding)
    # Scoring runs up to --batch-size streams side by side, never more than the text has tokens (at
    # most its characters).
    streams = min(batch_size, len(text.text))
    need = {"streams": network.sampling_memory(ckpt.model_config, streams)}
    memory.require(need, "scoring", "lower --batch-size")
    score = score_text(ckpt.params, ckpt.model_config, ckpt.tokenizer, text.text, batch_size)
    if json:
        emit_json({"checkpoint": checkpoint, "files": list(files), "encodings": list(text.encodings), **score.to_dict()})
    else:
        write_stdout(f"{score.tokens_scored} tokens scored, {score.tokens_unknown} unknown: {format_score(score)}")
    if score.tokens_unknown and not quiet:
        click.echo(f"note: {score.tokens_unknown} tokens outside the model's vocabulary were left out", err=True)
