"""A run's settings as one typed object: `RunSettings`, what `fine_tune` is asked to train, and
the pieces of the recipe that follow from them and the data (class weights, the schedule).

Its fields are `fine_tune`'s keyword arguments besides the data and where things go, with
their defaults: `fine_tune`'s signature, the command's flags and the search take their defaults
from here. A run records its settings in `config.json` (with what it learned of the data and
the machine) and reads them back when it resumes: what changed since is said, and a finished
run is compiled and reported as it was trained.

Example:
>>> settings = RunSettings(epochs=5, ema=True)
>>> settings.fine_tune_rate, settings.averaged_phase
(0.0001, 'fine_tune')
>>> RunSettings.from_json(settings.to_json()) == settings
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import keras

from tfresnet.data.augment import check_mixing
from tfresnet.models.classifier import (
    HEAD_DROPOUT,
    LABEL_SMOOTHING,
    check_ema_momentum,
    check_label_smoothing,
)

if TYPE_CHECKING:
    from tfresnet.data import ImageData

# The two phases of a run, in order: the head alone, then the backbone too.
PHASES = ("head", "fine_tune")
CLASS_WEIGHTS = ("balanced", "none")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a run trains: the model, the recipe, the precision and the seed.

    Attributes are `fine_tune`'s keyword arguments of the same names (see there).
    """

    backbone: str = "resnet50"
    weights: str | None = "imagenet"
    head_units: int | None = None
    dropout: float = HEAD_DROPOUT
    head_epochs: int = 3
    epochs: int = 10
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float | None = None
    freeze_until: int | str = 0
    warmup_epochs: float = 1.0
    label_smoothing: float = LABEL_SMOOTHING
    class_weight: str = "balanced"
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: bool = False
    ema_momentum: float = 0.999
    mixed_precision: str = "auto"
    jit_compile: bool | str = "auto"
    patience: int | None = 5
    seed: int | None = None

    def check(self) -> None:
        """Raises a ValueError naming the first bad setting of the recipe (before any training).

        Example:
        >>> RunSettings(head_epochs=0, epochs=0).check()
        Traceback (most recent call last):
        ValueError: Nothing to train: head_epochs and epochs are both 0. Set one of them above 0.
        """
        check_recipe(
            head_epochs=self.head_epochs,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            fine_tune_learning_rate=self.fine_tune_learning_rate,
            label_smoothing=self.label_smoothing,
            mixup=self.mixup,
            cutmix=self.cutmix,
            ema_momentum=self.ema_momentum if self.ema else None,
        )
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}. Received: class_weight={self.class_weight!r}"
            )

    @property
    def fine_tune_rate(self) -> float:
        """The peak learning rate of phase 2: `fine_tune_learning_rate`, or a tenth of phase 1's."""
        return self.fine_tune_learning_rate or self.learning_rate / 10

    @property
    def averaged_phase(self) -> str | None:
        """The phase whose weights are averaged with `ema`: the last one that trains (None without)."""
        if not self.ema:
            return None
        return PHASES[1] if self.epochs else PHASES[0]

    @property
    def model(self) -> dict[str, Any]:
        """`build_classifier`'s keyword arguments for this run's network."""
        return {
            "backbone": self.backbone,
            "weights": self.weights,
            "head_units": self.head_units,
            "dropout": self.dropout,
        }

    def to_json(self) -> dict[str, Any]:
        """The settings as the JSON object `config.json` starts with."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RunSettings:
        """The settings a `config.json` recorded (its other keys, facts of the run, left out).

        `config.json` holds what `"auto"` became on the machine that ran (mixed precision on or
        off, XLA or not); those come back as the settings `"on"`/`"off"`, True/False.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        settings = {key: item for key, item in value.items() if key in names}
        if isinstance(settings.get("mixed_precision"), bool):
            settings["mixed_precision"] = "on" if settings["mixed_precision"] else "off"
        return cls(**settings)

    def changes(self, recorded: RunSettings) -> list[str]:
        """What differs from `recorded`, one `name: recorded -> now` each; a setting that is
        `"auto"` now is not compared with what a machine resolved it to.

        Example:
        >>> RunSettings(epochs=20).changes(RunSettings())
        ['epochs: 10 -> 20']
        """
        return [
            f"{field.name}: {getattr(recorded, field.name)!r} -> {getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            # "auto" is not compared with what a machine resolved it to.
            if getattr(self, field.name) not in ("auto", getattr(recorded, field.name))
        ]


def class_weights(class_counts: list[int], mode: str = "balanced") -> dict[int, float] | None:
    """Weights that make every class count as much as the others in the loss.

    Args:
        class_counts: Training images per class.
        mode: `"balanced"` (weight `n / (k * count)`) or `"none"`.

    Example:
    >>> class_weights([30, 10])
    {0: 0.6666666666666666, 1: 2.0}
    """
    if mode not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}. Received: class_weight={mode!r}")
    if mode == "none":
        return None
    total, k = sum(class_counts), len(class_counts)
    return {i: total / (k * count) for i, count in enumerate(class_counts) if count}


def fine_tune_schedule(
    learning_rate: float, *, steps: int, warmup_steps: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """A linear warm-up from 0 to `learning_rate`, then a cosine decay to 0 at `steps`.

    Example:
        schedule = fine_tune_schedule(1e-4, steps=100, warmup_steps=10)
        float(schedule(10)), float(schedule(100))
        # (0.0001, 0.0)
    """
    warmup_steps = min(warmup_steps, max(steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(steps - warmup_steps, 1),
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def steps_per_epoch(data: ImageData) -> int:
    """Training steps in one epoch, as the training set batches (a dropped remainder included).

    Example:
        steps_per_epoch(tfresnet.from_folder("flowers/", batch_size=32))
        # 8
    """
    steps = int(data.train.cardinality())
    if steps > 0:
        return steps
    batch_size = data.batch_size or next(iter(data.train))[0].shape[0]
    return max(math.ceil(data.num_train / batch_size), 1)


def check_recipe(
    *,
    head_epochs,
    epochs,
    learning_rate,
    fine_tune_learning_rate=None,
    label_smoothing=LABEL_SMOOTHING,
    mixup=0.0,
    cutmix=0.0,
    ema_momentum=None,
):
    """Raises a ValueError naming the first bad setting of the recipe (before any training).

    Example:
    >>> check_recipe(head_epochs=0, epochs=0, learning_rate=1e-3)
    Traceback (most recent call last):
    ValueError: Nothing to train: head_epochs and epochs are both 0. Set one of them above 0.
    """
    for name, value in (("head_epochs", head_epochs), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0. Received: {name}={value!r}")
    if head_epochs + epochs == 0:
        raise ValueError("Nothing to train: head_epochs and epochs are both 0. Set one of them above 0.")
    for name, value in (
        ("learning_rate", learning_rate),
        ("fine_tune_learning_rate", fine_tune_learning_rate),
    ):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0. Received: {name}={value!r}")
    check_label_smoothing(label_smoothing)
    check_mixing(mixup, cutmix)
    check_ema_momentum(ema_momentum)
