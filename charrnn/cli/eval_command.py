"""``charrnn eval``: loss, bits per character and perplexity of text under a model."""

from __future__ import annotations

import os
from typing import Iterator, Optional

import click

from charrnn.cli.common import (
    ProgressBar, checkpoint_option, emit_json, examples, format_score, inform, reports_errors, resolve_checkpoint,
)
from charrnn.cli.exits import write_stdout
from charrnn.cli.options import config_options, option, quiet_option
from charrnn.config import ComputeConfig, DataConfig

ZIP_MAGIC = b"PK\x03\x04"  # every checkpoint is a zip archive; no text file starts so


def is_checkpoint_path(path: str) -> bool:
    """True if ``path`` names a checkpoint rather than text: a folder, a .npz name, or a zip archive."""
    if os.path.isdir(path) or path.endswith(".npz"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == ZIP_MAGIC
    except OSError:
        return False


def split_arguments(paths: tuple[str, ...], checkpoint: Optional[str]) -> tuple[Optional[str], tuple[str, ...]]:
    """(checkpoint, text files) from ``[CKPT] FILE...`` and -c/--checkpoint.

    Without -c, a first argument that is a checkpoint (see is_checkpoint_path) is the checkpoint, as in
    ``charrnn eval tang/best.npz held_out.txt``; otherwise every argument is text.
    """
    if checkpoint is None and paths and is_checkpoint_path(paths[0]):
        checkpoint, paths = paths[0], paths[1:]
    elif checkpoint is not None and paths and is_checkpoint_path(paths[0]):
        raise click.UsageError("give the checkpoint once: as the first argument or as -c/--checkpoint")
    if not paths:
        raise click.UsageError(f"give the text FILE(s) to score after the checkpoint {checkpoint}")
    return checkpoint, paths


@click.command("eval", epilog=examples(
    'charrnn eval held_out.txt',
    'charrnn eval tang/best.npz held_out.txt --json',
    'cat chapter*.txt | charrnn eval -c tang -',
))
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True), metavar="[CKPT] FILE...")
@checkpoint_option()
@config_options(DataConfig, only={"encoding"})
@config_options(ComputeConfig)
@option("--batch-size", type=int, default=32, show_default=True, metavar="N",
        help="Streams scored side by side, for speed (each first reads the text before its part, so the "
             "score does not depend on it).")
@option("--json", is_flag=True, help="Print the scores as one JSON document.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def eval_command(
    paths: tuple[str, ...], checkpoint: Optional[str], encoding: str, backend: str, batch_size: int, json: bool,
    quiet: bool,
) -> None:
    """Score the text of FILE(s) (joined) under the model in CKPT; a FILE of - is standard input.

    CKPT, the first argument or -c, is a checkpoint file, or a folder for its best.npz, else
    latest.npz [default: the newest run's folder in checkpoints/].

    Prints one line on stdout: tokens scored, loss in nats per token, bits per character and
    perplexity. Tokens outside the model's vocabulary are counted, and left out of the score (or
    scored as <unk> when the model has one). Exit code 2 if none of the text can be scored.
    """
    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn import memory
    from charrnn.model import network
    from charrnn.errors import ConfigError, CorpusError
    from charrnn.data.corpus import TextReader, check_standard_input_once, display_name
    from charrnn.inference.scoring import score_chunks, unknown_warning
    from charrnn.model import backend as backends

    checkpoint, files = split_arguments(paths, checkpoint)
    if batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    check_standard_input_once(files)
    kernels = backends.select(ComputeConfig(backend=backend).backend)
    path = resolve_checkpoint(checkpoint, quiet)
    ckpt = checkpoints.load(path)
    # The text is scored as it is read, a window at a time (scoring.score_id_blocks): standard input
    # that never ends costs no more memory than a short file.
    readers = [TextReader(display_name(name), encoding, source=name) for name in files]
    total_bytes = sum(reader.size_bytes for reader in readers)
    progress = ProgressBar("scoring", quiet, delay=0.5)
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        progress(done[0], total_bytes or None)

    def text() -> Iterator[str]:
        for reader in readers:
            empty = True
            for chunk in reader.chunks(advance):
                empty = False
                yield chunk
            if empty:
                raise CorpusError(f"{reader.path} is empty")

    def check_memory(streams: int) -> None:
        need = {"streams": network.sampling_memory(ckpt.model_config, streams)}
        memory.require(need, "scoring", "lower --batch-size")

    try:
        score = score_chunks(ckpt.params, ckpt.model_config, ckpt.tokenizer, text(), batch_size, kernels,
                             on_streams=check_memory, window=ckpt.train_config.seq_length,
                             look_ahead=ckpt.train_config.look_ahead)
    finally:
        progress.close()
    warning = unknown_warning(score)
    if warning:
        inform(quiet, f"warning: {warning}")
    elif score.tokens_unknown:
        inform(quiet, f"note: {score.tokens_unknown:,} tokens outside the model's vocabulary were left out")
    if json:
        emit_json({"checkpoint": path, "files": list(files), "encodings": [reader.encoding for reader in readers],
                   "backend": kernels.name, **score.to_dict()})
    else:
        unknown = f"{score.tokens_unknown:,} unknown" + (f" ({score.unknown_share:.0%})" if score.tokens_unknown else "")
        write_stdout(f"{score.tokens_scored:,} tokens scored, {unknown}: {format_score(score)}")
