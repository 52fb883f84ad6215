"""Where a training run stands: the counters and averages every checkpoint stores.

Its own small module, because both the training loop and the checkpoint format need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

# Weight of the newest step in the smoothed loss; the average is bias-corrected (as in Adam) so the
# first steps report their real loss rather than a value dragged towards zero.
LOSS_SMOOTHING = 0.05


@dataclass
class Progress:
    """Where training stands; everything here is stored in the checkpoint."""

    step: int = 0
    tokens_seen: int = 0
    epoch: int = 0  # completed passes over the streams
    epochs: float = 0.0  # passes over the streams, counting the current one fractionally
    position: int = 0  # offset in each stream of the next chunk's first input token
    loss_ema: float = 0.0  # un-corrected exponential moving average of the step losses
    loss_ema_steps: int = 0  # steps folded into loss_ema (for the bias correction)
    val_step: Optional[int] = None  # step of the latest validation
    val_loss_nats: Optional[float] = None  # validation loss per token then
    val_bits_per_char: Optional[float] = None
    best_val_loss_nats: Optional[float] = None  # lowest validation loss so far (what best.npz holds)
    best_val_step: Optional[int] = None  # the step it was reached at (None in files from before it was kept)
    validations_since_best: int = 0  # validations in a row without a new best, for early stopping
    lr_reductions: int = 0  # times the learning rate was reduced on a plateau (TrainConfig.lr_reductions)
    anneal_fraction: float = 0.0  # how far the time-budget anneal has gone, 0 to 1 (optim.anneal_factor)

    @property
    def smoothed_loss_nats(self) -> float:
        """Bias-corrected moving average of the per-token training loss, in nats (NaN before step 1)."""
        if self.loss_ema_steps == 0:
            return math.nan
        return self.loss_ema / (1.0 - (1.0 - LOSS_SMOOTHING) ** self.loss_ema_steps)

    def record_loss(self, loss_nats: float) -> None:
        """Fold one step's loss into the moving average."""
        self.loss_ema = (1.0 - LOSS_SMOOTHING) * self.loss_ema + LOSS_SMOOTHING * loss_nats
        self.loss_ema_steps += 1
