"""Time to write a float32 LiteRT file: `tfresnet.export_litert` against Keras's
`model.export(format="litert")` converting the same model.

(a) `export_litert(model, path, class_names=...)`: the probabilities function saved once with
    `tf.saved_model.save` (the model's variables in a `tf.Module`), converted by TFLite's
    converter with builtin operators only, checked against the model on a probe batch, written
    with its labels and settings;
(b) `model.export(path, format="litert")`: the plain-Keras way, through Keras's `ExportArchive`
    (which traces the endpoint twice) and the same converter, the fair peer (no check, no
    labels: less work).
The two take turns, the order swapped every round; each export traces anew. Both files are
checked to compute the same probabilities. The flags, the rounds and the check are those of
`benchmarks/export.py` (`model_to_export`, `timed_exports`).

Usage: python benchmarks/litert_export.py [--quick | --backbone resnet-tiny --rounds 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from export import CLASSES, model_to_export, timed_exports  # noqa: E402
from pipeline import headline  # noqa: E402

from tfresnet import export_litert  # noqa: E402
from tfresnet.export.runtime import LiteRTRuntime  # noqa: E402

OURS, KERAS = "export_litert", 'model.export(format="litert")'


def probabilities(path: str, pixels: np.ndarray) -> np.ndarray:
    with open(path, "rb") as file:
        return LiteRTRuntime(content=file.read(), class_names=CLASSES).probabilities(pixels)


def main(argv: list[str] | None = None) -> int:
    args, model = model_to_export(argv, __doc__)
    kinds = {
        OURS: lambda path: export_litert(model, path, class_names=CLASSES),
        KERAS: lambda path: model.export(path, format="litert", verbose=False),
    }
    medians = timed_exports(
        kinds, probabilities, rounds=args.rounds, image_size=args.image_size, suffix=".tflite"
    )
    (wall_a, cpu_a), (wall_b, cpu_b) = medians[OURS], medians[KERAS]
    print(headline(OURS, f"{KERAS} ({args.image_size} px)", wall_b / wall_a, cpu_b / cpu_a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
