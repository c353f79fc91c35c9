"""One epoch loop for every model samprompt trains.

- :mod:`~samprompt.training.state`: the run's state as one value, saved and restored whole;
- :mod:`~samprompt.training.loop`: ``for epoch: train_epoch(); validate(); handlers`` and the
  epoch-end handlers (best epoch, early-stopping probe, checkpoint);
- :mod:`~samprompt.training.sam_step` and :mod:`~samprompt.training.unet_step`: what one epoch of
  SAM's mask decoder and of the U-Net baseline does: the only difference between the two.
"""

from samprompt.training.loop import TrainStep, run_epochs
from samprompt.training.records import EpochRecord, loss_function
from samprompt.training.state import RunState

__all__ = ["EpochRecord", "RunState", "TrainStep", "loss_function", "run_epochs"]
