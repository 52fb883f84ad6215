"""The ``charrnn`` command line: a click group over the library, one module per command.

This package is the only place that imports click or tqdm and the only one that writes to the
terminal. stdout carries only the product (sampled text, scores); progress, samples during training
and summaries go to stderr. Library errors (CharRNNError) become one ``Error: ...`` line on stderr and
the exit code the error carries; signals and failures to write stdout end as exits.py decides. Heavy
modules (numpy, tqdm, jieba) load inside the commands, so ``charrnn --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from charrnn import __version__, mpi_environment
from charrnn.cli.eval_command import eval_command
from charrnn.cli.exits import CharRNNGroup
from charrnn.cli.export_command import export_command
from charrnn.cli.fill_command import fill_command
from charrnn.cli.ls_command import ls_command
from charrnn.cli.options import option
from charrnn.cli.prepare_command import prepare_command
from charrnn.cli.info_command import info_command
from charrnn.cli.plot_command import plot_command
from charrnn.cli.sample_command import sample_command
from charrnn.cli.train_command import train_command


@click.group(cls=CharRNNGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="charrnn")
@option("-q", "--quiet", is_flag=True, help="No informational messages on stderr, for any command (as its own -q).")
def cli(quiet: bool) -> None:
    """Train character- and word-level RNN language models and sample text from them.

    \b
    Quick start (on the 300 Tang poems installed with charrnn):
      charrnn train --sample-corpus --steps 1000
      charrnn sample --seed 月

    Exit codes: 0 success, 1 failure while running, 2 bad usage or input,
    130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP (after saving a checkpoint; a
    signal ignored when charrnn starts stays ignored).

    Options can also be set in the environment as CHARRNN_<COMMAND>_<OPTION>, the
    option's long name (CHARRNN_TRAIN_HIDDEN_SIZE=256, CHARRNN_EVAL_JSON=1). Shell
    completion for bash: eval "$(_CHARRNN_COMPLETE=bash_source charrnn)".
    """


cli.add_command(train_command)
cli.add_command(sample_command)
cli.add_command(fill_command)
cli.add_command(eval_command)
cli.add_command(prepare_command)
cli.add_command(info_command)
cli.add_command(ls_command)
cli.add_command(export_command)
cli.add_command(plot_command)


# Every option can come from the environment: CHARRNN_<COMMAND>_<OPTION>, e.g. CHARRNN_TRAIN_HIDDEN_SIZE.
ENVVAR_PREFIX = "CHARRNN"
# OpenBLAS's idle threads spin for 2^THREAD_TIMEOUT cycles after each product before they sleep (2^28
# by default, a tenth of a second). Between the large products of a training step charrnn's own
# threads do the elementwise work, and spinning threads slow them down: 2^16 cycles made steps with
# a vocabulary of thousands about 10% faster on a 2-core machine (and small vocabularies 5% slower).
BLAS_SETTINGS = {"OPENBLAS_THREAD_TIMEOUT": "16"}


def configure_blas() -> None:
    """Apply BLAS_SETTINGS unless the user chose otherwise. Takes effect only before numpy is imported."""
    for name, value in BLAS_SETTINGS.items():
        os.environ.setdefault(name, value)


def configure_threads() -> None:
    """Under an MPI launcher, give this process its share of the node's cores (mpi_environment.py), as
    BLAS and numba read it once when they load: before numpy is imported."""
    os.environ.update(mpi_environment.thread_settings())


def main(*args: Any, **kwargs: Any) -> Any:
    """Console entry point."""
    configure_blas()  # this package imports numpy only inside commands, so this comes first
    configure_threads()
    kwargs.setdefault("auto_envvar_prefix", ENVVAR_PREFIX)
    if not mpi_environment.launched_by_mpi():
        return cli(*args, **kwargs)
    return _launched(*args, **kwargs)


def _launched(*args: Any, **kwargs: Any) -> Any:
    """``main`` in a process an MPI launcher started: ``train`` joins the job before reading its command
    line, so that a mistake there still ends every process of the job (cli/ranks.py)."""
    from charrnn.cli import ranks
    from charrnn.errors import CharRNNError

    try:
        launch = ranks.launch(args[0] if args else kwargs.get("args"))
    except CharRNNError as exc:  # mpi4py missing
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    if launch is None:
        return cli(*args, **kwargs)
    try:
        return cli(*args, obj=launch, **kwargs)
    except BaseException as exc:
        launch.end_before_start(exc)
        raise
