"""The training loop: truncated BPTT over parallel streams, clipping and an optimizer step. Prints nothing.

The token ids are cut into B contiguous streams (corpus.split_streams); each step trains on the next
T tokens of every stream, carrying each stream's hidden trainee into the next step, and starts every
stream over (trainee reset to zero) when the next chunk would run past its end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np

from charrnn.model import bidirectional, network, optim
from charrnn.model.backend import NUMPY, Kernels
from charrnn.progress import Progress
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import TrainingError
from charrnn.model.workspace import Workspace

@dataclass
class Trainee:
    """A model under training: its shape, and everything that changes as it trains (arrays in place)."""

    model_config: ModelConfig
    params: network.Params
    optimizer_state: optim.OptimizerState
    hidden: network.Hidden  # (B, H) per layer and trainee kind, carried between chunks
    progress: Progress
    rng: np.random.Generator  # initialisation, then dropout masks
    workspace: Workspace = field(default_factory=Workspace)  # scratch buffers and threads, never saved
    kernels: Kernels = NUMPY  # the implementation of the hot loops (backend.py), never saved
    # Data-parallel training (distributed.py), never saved: the streams of the batch this process trains
    # (``hidden`` holds theirs), and what turns this process's gradient and loss into the mean over all.
    rows: slice = field(default_factory=lambda: slice(None))
    combine: Optional[Callable[[network.Grads, float], tuple[network.Grads, float]]] = None


@dataclass(frozen=True)
class StepResult:
    """What one step reports."""

    step: int
    epochs: float  # passes over the data so far, fractional
    loss_nats: float  # this step's mean loss per token
    smoothed_loss_nats: float
    tokens: int  # tokens trained on in this step (T·B)
    tokens_seen: int  # in the model's life, this step included
    seconds: float  # wall time of this step
    learning_rate: float  # the rate this step used

    @property
    def tokens_per_s(self) -> float:
        """Throughput of this step."""
        return self.tokens / self.seconds if self.seconds > 0 else math.inf


def new_trainee(model_config: ModelConfig, train_config: TrainConfig, kernels: Kernels = NUMPY) -> Trainee:
    """A freshly initialised model and optimizer, seeded by ``train_config.rng_seed``, trained with ``kernels``."""
    rng = np.random.default_rng(train_config.rng_seed)
    params = network.init_params(model_config, rng, *train_config.initial_scales(model_config))
    return Trainee(
        model_config=model_config,
        params=params,
        optimizer_state=optim.init_state(train_config.optimizer, params, train_config.adagrad_initial_accumulator),
        hidden=network.initial_hidden(model_config, train_config.batch_size),
        progress=Progress(),
        rng=rng,
        kernels=kernels,
    )


def steps_per_epoch(streams: np.ndarray, seq_length: int) -> int:
    """Number of T-token chunks in one pass over streams of shape (B, L)."""
    return (streams.shape[1] - 1) // seq_length


def epochs_done(progress: Progress, streams: np.ndarray, seq_length: int) -> float:
    """Completed passes over the data, counting the current pass fractionally."""
    return progress.epoch + progress.position / (steps_per_epoch(streams, seq_length) * seq_length)


def is_finished(progress: Progress, streams: np.ndarray, config: TrainConfig) -> bool:
    """True once the step or epoch limit in ``config`` is reached (whichever comes first)."""
    if config.max_steps is not None and progress.step >= config.max_steps:
        return True
    if config.max_epochs is not None:
        # Round so that an epoch limit is reached on the step that completes it, despite float error.
        return round(epochs_done(progress, streams, config.seq_length), 9) >= config.max_epochs
    return False


def train_step(trainee: Trainee, streams: np.ndarray, config: TrainConfig) -> StepResult:
    """Train on the next (T, B) chunk of ``streams`` (B, L) and advance ``trainee``.

    Raises TrainingError, before any parameter changes, if the loss is not finite.
    """
    started = time.perf_counter()
    seq_length = config.seq_length
    progress = trainee.progress
    start = progress.position
    chunk = streams[trainee.rows, start : start + seq_length + 1].T  # (T + 1, B), B of this process's streams
    inputs = np.ascontiguousarray(chunk[:-1])
    targets = np.ascontiguousarray(chunk[1:])
    # In a run on several processes (distributed.py) this process trains ``rows`` of the batch; the dropout
    # masks are drawn for the whole batch and cut, so that they are the ones one process would draw.
    dropout_rows = None if trainee.combine is None else (streams.shape[0], trainee.rows)
    # A diverging model overflows somewhere; that is reported below as one clear error, not as
    # warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        if trainee.model_config.bidirectional:
            # The look-ahead tokens after the window, as many as the stream still has (bidirectional.py).
            ahead = np.ascontiguousarray(
                streams[trainee.rows, start + seq_length + 1 : start + seq_length + 1 + config.look_ahead].T
            )
            result = bidirectional.loss_and_grads(
                trainee.params, trainee.model_config, inputs, targets, trainee.hidden, trainee.rng, trainee.workspace,
                trainee.kernels, ahead, dropout_rows,
            )
        else:
            result = network.loss_and_grads(
                trainee.params, trainee.model_config, inputs, targets, trainee.hidden, trainee.rng, trainee.workspace,
                trainee.kernels, dropout_rows,
            )
    grads, loss_nats = result.grads, result.loss_nats
    if trainee.combine is not None:
        grads, loss_nats = trainee.combine(grads, loss_nats)  # the same numbers in every process from here on
    if not math.isfinite(loss_nats):
        raise TrainingError(
            f"the loss became {loss_nats} at step {progress.step + 1}; the last checkpoint is "
            "kept; try a lower --learning-rate or a smaller --clip"
        )
    # A config built without a rate trains at the default for this model's size (config.default_learning_rate).
    learning_rate = optim.learning_rate_at(
        config.settled(trainee.model_config), progress.epoch, progress.lr_reductions, progress.anneal_fraction
    )
    trainee.kernels.optimizer_update(
        config.optimizer, trainee.params, grads, trainee.optimizer_state,
        learning_rate=learning_rate, clip=config.clip, run_blocks=trainee.workspace.run_blocks,
    )

    tokens = seq_length * streams.shape[0]  # the whole batch's, every process's streams together
    progress.step += 1
    progress.tokens_seen += tokens
    progress.record_loss(loss_nats)
    progress.position = start + seq_length
    if progress.position + seq_length + 1 > streams.shape[1]:
        progress.position = 0
        progress.epoch += 1
        trainee.hidden = {key: np.zeros_like(value) for key, value in trainee.hidden.items()}
    else:
        trainee.hidden = result.hidden_last
    progress.epochs = epochs_done(progress, streams, seq_length)
    return StepResult(
        step=progress.step,
        epochs=progress.epochs,
        loss_nats=loss_nats,
        smoothed_loss_nats=progress.smoothed_loss_nats,
        tokens=tokens,
        tokens_seen=progress.tokens_seen,
        seconds=time.perf_counter() - started,
        learning_rate=learning_rate,
    )


class DivergenceWatch:
    """Stops a run whose loss has exploded, or stays worse than a uniform guess, as training diverged.

    A model that guesses uniformly among V tokens costs ln V nats per token, and a fresh model starts
    there. Healthy runs go above it only briefly (Adagrad's first steps move every weight by the full
    learning rate; measured at hidden 128–256 with the rate 0.1 the smoothed loss stayed above ln V + 1
    for at most 182 steps and peaked at 4.5 × ln V). So a smoothed loss above 10 × ln V for 20 steps
    in a row, or above ln V + 1 for 250 steps in a row, means the run has diverged: it would otherwise
    train to the end and save a model worse than knowing nothing.
    """

    EXPLODED_TIMES_GUESS = 10.0
    EXPLODED_STEPS = 20
    NOT_LEARNING_MARGIN_NATS = 1.0
    NOT_LEARNING_STEPS = 250

    def __init__(self, vocab_size: int) -> None:
        self.guess_nats = math.log(vocab_size)
        self.exploded_for = 0
        self.not_learning_for = 0

    def observe(self, progress: Progress) -> None:
        """Count one step; raise TrainingError once the loss says the run has diverged."""
        loss = progress.smoothed_loss_nats
        exploded = self.EXPLODED_TIMES_GUESS * self.guess_nats
        not_learning = self.guess_nats + self.NOT_LEARNING_MARGIN_NATS
        self.exploded_for = self.exploded_for + 1 if loss > exploded else 0
        self.not_learning_for = self.not_learning_for + 1 if loss > not_learning else 0
        if self.exploded_for >= self.EXPLODED_STEPS:
            bound, steps = f"{self.EXPLODED_TIMES_GUESS:g} × ln V = {exploded:.2f}", self.exploded_for
        elif self.not_learning_for >= self.NOT_LEARNING_STEPS:
            bound, steps = f"ln V + {self.NOT_LEARNING_MARGIN_NATS:g} = {not_learning:.2f}", self.not_learning_for
        else:
            return
        raise TrainingError(
            f"training diverged: the smoothed loss is {loss:,.2f} nats/token at step {progress.step}, above "
            f"{bound} (a uniform guess costs ln V = {self.guess_nats:.2f}) for {steps} steps; nothing was saved "
            "after the last checkpoint; try a lower --learning-rate"
        )


def train_steps(
    trainee: Trainee,
    streams: np.ndarray,
    config: TrainConfig,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[StepResult]:
    """Train until ``config``'s limit or until ``should_stop()`` is true, yielding after every step.

    ``should_stop`` is checked between steps only, so a stop never leaves a half-applied update.
    Raises TrainingError when the loss stops being finite or the run diverges (DivergenceWatch).
    """
    watch = DivergenceWatch(trainee.model_config.vocab_size)
    while not is_finished(trainee.progress, streams, config) and not should_stop():
        result = train_step(trainee, streams, config)
        watch.observe(trainee.progress)
        yield result
