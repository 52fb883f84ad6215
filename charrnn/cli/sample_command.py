"""``charrnn sample``: text from a checkpoint on stdout."""

from __future__ import annotations

import sys
from typing import Any, Optional

import click

from charrnn.cli.common import ProgressBar, checkpoint_option, examples, inform, reports_errors, resolve_checkpoint
from charrnn.cli.options import build, config_options, option, quiet_option
from charrnn.cli.sample_output import SEPARATOR, BLOCK_TOKENS, JsonOutput, TextOutput, write_samples
from charrnn.config import ComputeConfig, DataConfig, SampleConfig


# The longest priming text: the model reads it all before the first token, and the output repeats it.
# A book's chapter is a tenth of this; standard input that never ends must not be held for ever.
MAX_SEED_CHARS = 1_000_000


@click.command("sample", epilog=examples(
    'charrnn sample --seed 月',
    'charrnn sample -c tang --seed-file opening.txt --length 500 --temperature 0.7',
    'charrnn sample --num-samples 3 --json | jq -r ".samples[0]"',
))
@checkpoint_option()
@option("--seed", metavar="TEXT", help="Priming text; the output starts with it [default: a random token].")
@option("--seed-file", type=click.Path(allow_dash=True), metavar="PATH",
        help=f"Read the priming text from this file (- for standard input), for long seeds (at most "
             f"{MAX_SEED_CHARS:,} characters).")
@config_options(DataConfig, only={"encoding"})
@config_options(SampleConfig, ComputeConfig)
@option("--separator", default=SEPARATOR, show_default=True, metavar="TEXT",
        help="The line between samples ('' for a blank line).")
@option("--stream", is_flag=True, help="Print each token as it is generated (one sample only).")
@option("--json", is_flag=True, help="Print one JSON document with the samples as a list.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def sample_command(
    checkpoint: Optional[str], seed: Optional[str], seed_file: Optional[str], encoding: str, separator: str,
    stream: bool, json: bool, quiet: bool, **options: Any,
) -> None:
    """Generate text from a trained checkpoint and print it on stdout, as it is generated.

    Each sample starts with the seed text. Several samples are separated by a line of their own
    holding --separator; --json gives them exactly, as a list. With --seed-file the priming text is
    the file's whole text, decoded as --encoding says.
    """
    import numpy as np

    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn.data.corpus import read_text
    from charrnn.data.token_cache import smallest_id_dtype
    from charrnn.errors import ConfigError, VocabularyError
    from charrnn.inference import sampling
    from charrnn.model import backend

    config = build(SampleConfig, options)
    kernels = backend.select(build(ComputeConfig, options).backend, sampling=True)
    if stream and (config.num_samples > 1 or json):
        raise ConfigError("--stream prints one sample as plain text: drop --num-samples or --json")
    if seed is not None and seed_file is not None:
        raise click.UsageError("give the priming text as --seed or as --seed-file, not both")
    seed_name = "--seed"
    if seed_file is not None:
        seed, _ = read_text(seed_file, encoding, MAX_SEED_CHARS, "--seed-file")
        seed_name = "--seed-file"
    path = resolve_checkpoint(checkpoint, quiet)
    ckpt = checkpoints.load(path)
    if ckpt.model_config.bidirectional:
        raise ConfigError(f"{path} is a bidirectional model: it fills blanks from both sides and cannot generate "
                          f"text; use charrnn fill -c {path} \"a text with _ for a missing token\"")
    rng = np.random.default_rng(config.rng_seed)
    tokenizer = ckpt.tokenizer
    if seed:
        try:
            prime = tokenizer.encode(seed)
        except VocabularyError as exc:
            raise VocabularyError(f"{seed_name} has {exc}") from None
        if tokenizer.unknown is not None and tokenizer.encode_known(seed)[1]:
            inform(quiet, f"note: parts of {seed_name} are outside the vocabulary and are read as {tokenizer.unknown}")
    else:
        prime = rng.integers(tokenizer.vocab_size, size=1)
        seed = tokenizer.decode(prime.tolist())
    banned = sampling.banned_ids(tokenizer.unknown_id, config.allow_unknown)
    _check_memory(ckpt, config, len(prime))
    steps = sampling.generate(ckpt.params, ckpt.model_config, prime, config, rng, banned, kernels)
    if json:
        output: Any = JsonOutput({
            "checkpoint": path, "seed": seed, "length": config.length, "temperature": config.temperature,
            "top_k": config.top_k, "greedy": config.is_greedy, "rng_seed": config.rng_seed, "backend": kernels.name,
        })
    else:
        output = TextOutput(separator)
    # Text arriving on a terminal is progress enough; a bar on stderr beside it would garble both.
    progress = ProgressBar("sampling", quiet or sys.stdout.isatty(), unit="token", delay=0.5)
    try:
        write_samples(seed, steps, config.num_samples, config.length, tokenizer.decode, output,
                      smallest_id_dtype(tokenizer.vocab_size), 1 if stream else BLOCK_TOKENS, progress)
    finally:
        progress.close()


def _check_memory(ckpt: Any, config: Any, prime_length: int) -> None:
    """Refuse a batch of streams that the machine's memory cannot take (the text itself is never held)."""
    from charrnn import memory
    from charrnn.model import network

    parts = {"streams": network.sampling_memory(ckpt.model_config, config.num_samples, prime_length)}
    memory.require(parts, "sampling", "lower --num-samples")
