"""What ``charrnn info`` reports about a checkpoint: its model, size, vocabulary, progress and origin.

The parameter count is computed twice, from the textbook formula and from the arrays, and the two
must agree. For a layer reading D inputs with H hidden units and G gates (1 vanilla, 4 LSTM, 3 GRU):

    G·(D + H + 1)·H      input weights (D, G·H), recurrent weights (H, G·H), bias (G·H)
    + H                  GRU only: the recurrent bias b_hn of the candidate gate (see cells.py)

with D = H for the layers above the first, plus (H + 1)·V for the output layer. The first layer reads
D = V inputs (the one-hot token, so its W_xh is the embedding), or, with an embedding size E, D = E
inputs from an embedding table of V·E more parameters. A bidirectional model has every layer twice (a
right-to-left stack of its own weights) and output weights from both stacks' states, (2H + 1)·V; the
embedding table, if any, is shared. Nothing here prints; the command renders
``describe`` or ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from charrnn import files
from charrnn.checkpoints import checkpoint
from charrnn.model import network, optim
from charrnn.checkpoints.checkpoint import Checkpoint
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError

FIRST_TOKENS_SHOWN = 10

# Written out here rather than taken from cells.GATES, so the formula is an independent check of
# network.param_shapes and not the same table read twice.
_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
_EXTRA_BIASES = {"rnn": 0, "lstm": 0, "gru": 1}  # bias vectors of size H besides b_h (GRU: b_hn)


class ParameterCountError(CharRNNError):
    """The formula and the arrays disagree: a bug in charrnn, not in the user's input."""

    exit_code = 1


@dataclass(frozen=True)
class ParameterCount:
    """The model's parameter count by the formula, layer by layer, with the formula written out."""

    layers: tuple[int, ...]  # parameters of each recurrent layer, bottom first (of each direction's stack)
    output: int  # (H + 1)·V; (2H + 1)·V for a bidirectional model
    formula: str  # e.g. "(65 + 8 + 1)·8 + (8 + 1)·65"
    embedding: int = 0  # V·E with an embedding size E, else 0 (the first layer's W_xh is the embedding)
    directions: int = 1  # 2 for a bidirectional model: a second stack of layers like the first

    @property
    def total(self) -> int:
        """All parameters of the model."""
        return self.embedding + self.directions * sum(self.layers) + self.output


@dataclass(frozen=True)
class Summary:
    """The facts about one checkpoint file that ``charrnn info`` shows."""

    path: str
    file_size_bytes: int
    modified: str  # the file's modification time, ISO 8601 with offset; the checkpoint stores none
    checkpoint: Checkpoint
    parameters: ParameterCount
    epochs: Optional[float]  # passes over the training text, fractional; None when not derivable
    learning_rate: float  # the rate the next step would use, after decay


def parameter_count(config: ModelConfig) -> ParameterCount:
    """The textbook parameter count of ``config`` (see the module docstring)."""
    vocab, hidden, embed = config.vocab_size, config.hidden_size, config.embed_size
    gates, extra = _GATES[config.cell], _EXTRA_BIASES[config.cell]
    layers, terms = [], [f"{vocab}·{embed}"] if embed else []
    for layer in range(config.num_layers):
        inputs = (embed or vocab) if layer == 0 else hidden
        layers.append(gates * (inputs + hidden + 1) * hidden + extra * hidden)
        term = f"({inputs} + {hidden} + 1)·{hidden}"
        term = ("" if gates == 1 else f"{gates}·") + term + (f" + {hidden}" if extra else "")
        repeats = config.num_layers - 1
        if layer == 0 or repeats == 1:
            terms.append(f"[{term}]" if extra else term)
        elif layer == 1:  # the layers above the first are identical: written once, with a multiplier
            terms.append(f"{repeats}·[{term}]")
    if config.bidirectional:  # the right-to-left stack and its output weights V′ (H × V) besides
        stack = terms[1:] if embed else terms
        terms = terms[:1] if embed else []
        terms.append(f"2·({' + '.join(stack)})" if len(stack) > 1 else f"2·{stack[0]}")
        terms.append(f"(2·{hidden} + 1)·{vocab}")
        return ParameterCount(tuple(layers), (2 * hidden + 1) * vocab, " + ".join(terms), vocab * embed, 2)
    terms.append(f"({hidden} + 1)·{vocab}")
    return ParameterCount(tuple(layers), (hidden + 1) * vocab, " + ".join(terms), vocab * embed)


def checked_parameter_count(ckpt: Checkpoint) -> ParameterCount:
    """``parameter_count`` of the checkpoint's model, verified against its arrays.

    Raises ParameterCountError if they differ: the checkpoint's shapes were already checked against
    network.param_shapes on load, so a difference means the formula or the model is wrong.
    """
    counted = parameter_count(ckpt.model_config)
    actual = network.count_parameters(ckpt.params)
    if counted.total != actual:
        raise ParameterCountError(
            f"the model has {actual:,} parameters but the formula {counted.formula} gives {counted.total:,}; "
            "this is a bug in charrnn, please report it"
        )
    return counted


def _modified_iso(mtime: float) -> str:
    return datetime.datetime.fromtimestamp(mtime).astimezone().isoformat(timespec="seconds")


def summarize(path: str) -> Summary:
    """Load the checkpoint at ``path`` and gather its facts; raises CheckpointError if it cannot be read."""
    ckpt = checkpoint.load(path)
    stat = os.stat(path)
    return Summary(
        path=path,
        file_size_bytes=stat.st_size,
        modified=_modified_iso(stat.st_mtime),
        checkpoint=ckpt,
        parameters=checked_parameter_count(ckpt),
        # Checkpoints before fractional epochs were recorded report whole epochs only.
        epochs=ckpt.progress.epochs if ckpt.progress.epochs or not ckpt.progress.epoch else None,
        learning_rate=optim.learning_rate_at(
            ckpt.train_config, ckpt.progress.epoch, ckpt.progress.lr_reductions, ckpt.progress.anneal_fraction
        ),
    )


def _train_loss(ckpt: Checkpoint) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(nats/token, bits/token, bits/char) of the smoothed training loss; bits/char for characters only.

    A word model's characters per token depend on the text, which the checkpoint does not hold.
    """
    nats = files.finite_or_none(ckpt.progress.smoothed_loss_nats)
    bits = None if nats is None else nats / math.log(2)
    return nats, bits, bits if ckpt.tokenizer.kind == "char" else None


def to_dict(summary: Summary) -> dict[str, Any]:
    """Plain data for ``--json``: every value finite or None, every key stable."""
    ckpt = summary.checkpoint
    progress = ckpt.progress
    loss_nats, bits_per_token, bits_per_char = _train_loss(ckpt)
    return {
        "path": summary.path,
        "file_size_bytes": summary.file_size_bytes,
        "modified": summary.modified,
        "contents": ckpt.contents,
        "format_version": ckpt.format_version,
        "format_version_current": checkpoint.FORMAT_VERSION,
        "migrated": ckpt.format_version != checkpoint.FORMAT_VERSION,
        "charrnn_version": ckpt.charrnn_version,
        "backend": ckpt.backend,
        "model": dataclasses.asdict(ckpt.model_config),
        "direction": direction(ckpt.model_config),
        "train": dataclasses.asdict(ckpt.train_config),
        "tokenizer": {
            "kind": ckpt.tokenizer.kind,
            "vocab_size": ckpt.tokenizer.vocab_size,
            "first_tokens": list(ckpt.tokenizer.vocab[:FIRST_TOKENS_SHOWN]),
        },
        "parameters": {
            "total": summary.parameters.total,
            "embedding": summary.parameters.embedding,
            "layers": list(summary.parameters.layers),
            "output": summary.parameters.output,
            "directions": summary.parameters.directions,
            "formula": summary.parameters.formula,
        },
        "progress": {
            "step": progress.step,
            "tokens_seen": progress.tokens_seen,
            "epochs_completed": progress.epoch,
            "epochs": files.finite_or_none(summary.epochs),
            "position": progress.position,
        },
        "train_loss_nats": loss_nats,
        "train_bits_per_token": bits_per_token,
        "train_bits_per_char": bits_per_char,
        "validation": {
            "held_out": describe_held_out(ckpt),
            "step": progress.val_step,
            "loss_nats": files.finite_or_none(progress.val_loss_nats),
            "bits_per_char": files.finite_or_none(progress.val_bits_per_char),
            "best_loss_nats": files.finite_or_none(progress.best_val_loss_nats),
            "best_step": progress.best_val_step,
            "validations_since_best": progress.validations_since_best,
        },
        "learning_rate": files.finite_or_none(summary.learning_rate),
        "corpus": dataclasses.asdict(ckpt.corpus),
    }


def direction(config: ModelConfig) -> str:
    """How the model reads text: "left-to-right" (it generates: charrnn sample), or "bidirectional" (it fills
    blanks from both sides: charrnn fill)."""
    return "bidirectional" if config.bidirectional else "left-to-right"
def describe_held_out(ckpt: checkpoint.Checkpoint) -> str:
    """Which text the model is validated on: a file, a spread or tail fraction of its corpus, or none."""
    config = ckpt.train_config
    if ckpt.corpus.val_paths:
        return f"the file{'s' if len(ckpt.corpus.val_paths) > 1 else ''} {', '.join(ckpt.corpus.val_paths)}"
    if config.val_fraction == 0:
        return "none"
    if config.val_split == "tail":
        return f"the last {config.val_fraction:.0%} of the corpus (--val-split tail)"
    blocks = f" of about {config.val_block_tokens:,} tokens" if config.val_block_tokens else ""
    return (f"{config.val_fraction:.0%} of the corpus in blocks{blocks} of whole lines spread across it "
            f"(--val-split spread, seed {config.val_seed})")


def _describe_validation(summary: Summary) -> str:
    ckpt = summary.checkpoint
    progress = ckpt.progress
    if not ckpt.corpus.val_paths and ckpt.train_config.val_fraction == 0:
        return "off (no held-out text)"
    if progress.val_step is None or progress.val_loss_nats is None:
        return "not run yet"
    best = "" if progress.best_val_loss_nats is None else f"; best {progress.best_val_loss_nats:.4f}"
    if progress.best_val_step is not None:
        best += f" at step {progress.best_val_step:,}"
    bits = "" if progress.val_bits_per_char is None else f", {progress.val_bits_per_char:.4f} bits/char"
    return f"{progress.val_loss_nats:.4f} nats/token{bits} at step {progress.val_step:,}{best}"


def _describe_learning_rate(summary: Summary) -> str:
    config, progress = summary.checkpoint.train_config, summary.checkpoint.progress
    changes = []
    if config.lr_decay != 1.0:
        changes.append(f"×{config.lr_decay:g} per epoch after epoch {config.lr_decay_after:g}")
    if progress.lr_reductions:
        changes.append(f"reduced {progress.lr_reductions} of {config.lr_reductions} times on a plateau, "
                       f"×{config.lr_reduction_factor:g} each")
    if progress.anneal_fraction:
        changes.append(f"annealed over {progress.anneal_fraction:.0%} of a time budget")
    if not changes:
        return f"{config.learning_rate:g}"
    return f"{summary.learning_rate:g} now (base {config.learning_rate:g}, {'; '.join(changes)})"


def describe(summary: Summary) -> list[str]:
    """The human-readable report, one fact per line."""
    ckpt = summary.checkpoint
    config, train_config, progress, corpus = ckpt.model_config, ckpt.train_config, ckpt.progress, ckpt.corpus
    cell = f"{config.cell} ({config.activation})" if config.cell == "rnn" else config.cell
    if config.embed_size:
        cell = f"embedding {config.embed_size}, {cell}"
    layers = f"{config.num_layers} layer{'s' if config.num_layers > 1 else ''}"
    dropout = f", dropout {config.dropout:g}" if config.dropout else ""
    shown = ", ".join(repr(t) for t in ckpt.tokenizer.vocab[:FIRST_TOKENS_SHOWN])
    more = ", ..." if ckpt.tokenizer.vocab_size > FIRST_TOKENS_SHOWN else ""
    loss_nats, bits_per_token, bits_per_char = _train_loss(ckpt)
    if loss_nats is None:
        train_loss = "none yet"
    else:
        unit = "bits/char" if bits_per_char is not None else "bits/token"
        train_loss = f"{loss_nats:.4f} nats/token, {bits_per_token:.4f} {unit}"
    epochs = f", epoch {summary.epochs:.2f}" if summary.epochs is not None else f", {progress.epoch} full epochs"
    sources = ", ".join(corpus.paths) or "unknown"
    val_files = f"; validation files {', '.join(corpus.val_paths)}" if corpus.val_paths else ""
    migrated = (f" (migrated to format {checkpoint.FORMAT_VERSION} when loaded)"
                if ckpt.format_version != checkpoint.FORMAT_VERSION else "")
    return [
        f"checkpoint: {summary.path} ({summary.file_size_bytes:,} bytes)",
        f"cell: {cell}, {layers}, hidden {config.hidden_size}{dropout}, {config.dtype}",
        "direction: " + ("bidirectional: a right-to-left stack too; predicts each token from both sides "
                         f"(charrnn fill; look-ahead {train_config.look_ahead} tokens)" if config.bidirectional
                         else "left to right: predicts the next token (charrnn sample)"),
        f"parameters: {summary.parameters.total:,} (= {summary.parameters.formula})",
        f"vocabulary: {ckpt.tokenizer.vocab_size:,} tokens ({ckpt.tokenizer.kind}), e.g. {shown}{more}",
        f"corpus: {sources}, {corpus.num_tokens:,} tokens{val_files}",
        f"encoding: {', '.join(dict.fromkeys(corpus.encodings)) or 'unknown'}",
        f"trained: step {progress.step:,}, {progress.tokens_seen:,} tokens seen{epochs}",
        f"train loss (smoothed): {train_loss}",
        f"validation: {_describe_validation(summary)}",
        f"validation text: {describe_held_out(ckpt)}",
        f"optimizer: {train_config.optimizer}, clip ±{train_config.clip:g}, batch {train_config.batch_size} "
        f"streams × {train_config.seq_length} steps, rng seed {train_config.rng_seed}",
        f"learning rate: {_describe_learning_rate(summary)}",
        f"saved: {summary.modified} (the file's modification time; checkpoints store no timestamps)",
        "contents: " + ("the model, its optimizer state and its streams' state (resumable)" if ckpt.resumable
                        else "the model only, for sampling and scoring (exported; cannot be resumed)"),
        f"format version: {ckpt.format_version}{migrated}",
        f"charrnn version: {ckpt.charrnn_version or 'unknown'}",
        f"backend: {ckpt.backend or 'not recorded'} (the kernels of the run that wrote it)",
    ]
