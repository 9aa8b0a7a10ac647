"""Training: the two-phase fine-tuning, its run folder and callbacks, where it computes, and
the learning-rate finder.

`fine_tuning` holds `fine_tune` (the recipe's two phases); `settings` what a run trains
(`RunSettings`); `run_files` the files of a run and their lock, `run_identity` what makes a
resumed run the same run, `checkpoints` the callbacks that make it resumable, `distribute` the
strategy and mixed precision, `lr_finder` `find_lr`.

Example:
    from tfresnet import training
    result = training.fine_tune(data, epochs=2, output_dir="runs/flowers")
"""

from tfresnet.training.distribute import resolve_strategy
from tfresnet.training.fine_tuning import (
    FineTuneResult,
    fine_tune,
    training_batches,
)
from tfresnet.training.lr_finder import find_lr
from tfresnet.training.settings import (
    CLASS_WEIGHTS,
    RunSettings,
    check_recipe,
    class_weights,
    fine_tune_schedule,
    steps_per_epoch,
)

__all__ = [
    "CLASS_WEIGHTS",
    "FineTuneResult",
    "RunSettings",
    "check_recipe",
    "class_weights",
    "fine_tune",
    "fine_tune_schedule",
    "find_lr",
    "resolve_strategy",
    "steps_per_epoch",
    "training_batches",
]
