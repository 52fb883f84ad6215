"""``charrnn sample``: text from a checkpoint on stdout."""

from __future__ import annotations

from typing import Any, Optional

import click

from charrnn.cli.common import checkpoint_option, emit_json, inform, reports_errors, resolve_checkpoint
from charrnn.cli.exits import write_stdout
from charrnn.cli.options import build, config_options, option, quiet_option
from charrnn.config import SampleConfig

# Held for every generated token until a non-streamed sample is printed: its id, gathered twice (8 bytes
# each), and its characters in the decoded text (up to 4 bytes each); 18.5 bytes a token were measured
# for Chinese characters.
BYTES_PER_KEPT_ID = 16
BYTES_PER_KEPT_CHAR = 4


@click.command("sample")
@checkpoint_option()
@option("--seed", metavar="TEXT", help="Priming text; the output starts with it [default: a random token].")
@config_options(SampleConfig)
@option("--stream", is_flag=True, help="Print each token as it is generated (one sample only).")
@option("--json", is_flag=True, help="Print one JSON document with the samples as a list.")
@quiet_option("No informational messages on stderr.")
@reports_errors
def sample_command(
    checkpoint: Optional[str], seed: Optional[str], stream: bool, json: bool, quiet: bool, **options: Any,
) -> None:
    """Generate text from a trained checkpoint and print it on stdout.

    Samples are separated by a blank line; each starts with the seed text.
    """
    import numpy as np

    from charrnn.checkpoints import checkpoint as checkpoints
    from charrnn.errors import ConfigError, VocabularyError
    from charrnn.inference.sampling import generate

    config = build(SampleConfig, options)
    if stream and (config.num_samples > 1 or json):
        raise ConfigError("--stream prints one sample as plain text: drop --num-samples or --json")
    path = resolve_checkpoint(checkpoint, quiet)
    ckpt = checkpoints.load(path)
    rng = np.random.default_rng(config.rng_seed)
    tokenizer = ckpt.tokenizer
    if seed:
        try:
            prime = tokenizer.encode(seed)
        except VocabularyError as exc:
            raise VocabularyError(f"--seed has {exc}") from None
        if tokenizer.unknown is not None and tokenizer.encode_known(seed)[1]:
            inform(quiet, f"note: parts of --seed are outside the vocabulary and are read as {tokenizer.unknown}")
    else:
        prime = rng.integers(tokenizer.vocab_size, size=1)
        seed = tokenizer.decode(prime.tolist())
    banned = () if config.allow_unknown or tokenizer.unknown_id is None else (tokenizer.unknown_id,)
    _check_memory(ckpt, config, len(prime), stream)
    steps = generate(ckpt.params, ckpt.model_config, prime, config, rng, banned)
    if stream:
        write_stdout(seed, nl=False)
        for ids in steps:  # each written and flushed: a reader sees every token as it comes
            write_stdout(tokenizer.decode(ids.tolist()), nl=False)
        write_stdout("")
        return
    generated = np.array(list(steps))
    samples = [seed + tokenizer.decode(generated[:, i].tolist()) for i in range(config.num_samples)]
    if json:
        emit_json({
            "checkpoint": path, "seed": seed, "length": config.length, "temperature": config.temperature,
            "top_k": config.top_k, "greedy": config.is_greedy, "rng_seed": config.rng_seed, "samples": samples,
        })
    else:
        write_stdout("\n\n".join(samples))


def _check_memory(ckpt: Any, config: Any, prime_length: int, stream: bool) -> None:
    """Refuse a batch of streams, or a text to hold, that the machine's memory cannot take."""
    from charrnn import memory
    from charrnn.model import network

    parts = {"streams": network.sampling_memory(ckpt.model_config, config.num_samples, prime_length)}
    if not stream:
        chars_per_token = float(ckpt.tokenizer.token_lengths().mean())
        per_token = BYTES_PER_KEPT_ID + BYTES_PER_KEPT_CHAR * chars_per_token
        parts["generated text"] = int(config.length * config.num_samples * per_token)
    if max(parts, key=parts.__getitem__) == "streams":
        advice = "lower --num-samples"
    else:
        advice = "lower --length or --num-samples, or print one sample as it comes with --stream"
    memory.require(parts, "sampling", advice)
