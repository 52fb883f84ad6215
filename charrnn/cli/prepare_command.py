"""``charrnn prepare``: tokenize a corpus into the cache ahead of training."""

from __future__ import annotations

from typing import Optional

import click

from charrnn.cli.common import (
    ProgressBar, echo_text, emit_json, examples, inform, reports_errors, writing_cache,
)
from charrnn.cli.options import build, config_options, option, quiet_option
from charrnn.config import DataConfig


@click.command("prepare", epilog=examples(
    'charrnn prepare big.txt',
    'charrnn prepare corpus/*.txt --tokenizer jieba --max-vocab 20000 --json',
))
@click.argument("corpus", nargs=-1, required=True, type=click.Path(allow_dash=True))
@config_options(DataConfig)
@option("--workers", type=int, metavar="N", help="Processes cutting jieba words [default: one per core].")
@option("--json", is_flag=True, help="Print a JSON description of the cache entry.")
@quiet_option("No progress bar or summary.")
@reports_errors
def prepare_command(
    corpus: tuple[str, ...], tokenizer: str, encoding: str, max_vocab: Optional[int], cache_dir: str,
    spool_limit_mb: int, workers: Optional[int], json: bool, quiet: bool,
) -> None:
    """Tokenize CORPUS files once into the cache, so that train starts at once and memory-maps them.

    A CORPUS of - is standard input. Prints the cached ids file on stdout. train does this by itself
    on first use; an edited corpus gets a new cache entry (the key covers the files' contents and the
    options).
    """
    import time

    from charrnn.data import token_cache
    from charrnn.errors import ConfigError

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be positive, got {workers}")
    build(DataConfig, {"tokenizer": tokenizer, "encoding": encoding, "max_vocab": max_vocab, "cache_dir": cache_dir,
                       "spool_limit_mb": spool_limit_mb})  # the settings' own checks
    started = time.perf_counter()
    progress = ProgressBar("tokenizing", quiet)
    try:
        with writing_cache(cache_dir):
            prepared = token_cache.prepare(corpus, tokenizer, encoding, max_vocab, cache_dir, workers, progress,
                                           spool_limit_mb)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    megabytes = prepared.size_bytes / 1e6
    if prepared.from_cache:
        inform(quiet, f"already prepared: {len(prepared.ids):,} tokens, vocabulary {prepared.tokenizer.vocab_size}")
    else:
        inform(quiet, f"prepared {megabytes:,.1f} MB into {len(prepared.ids):,} {prepared.ids.dtype} ids, vocabulary "
                    f"{prepared.tokenizer.vocab_size}, in {seconds:.1f} s ({megabytes / max(seconds, 1e-9):,.1f} MB/s)")
    if json:
        emit_json({
            "cache_path": prepared.cache_path, "from_cache": prepared.from_cache, "tokens": len(prepared.ids),
            "vocab_size": prepared.tokenizer.vocab_size, "dtype": str(prepared.ids.dtype),
            "files": list(prepared.paths), "encodings": list(prepared.encodings), "seconds": seconds,
            "megabytes_per_s": None if prepared.from_cache else megabytes / max(seconds, 1e-9),
        })
    else:
        echo_text(prepared.cache_path)
