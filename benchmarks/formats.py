"""Sizes, agreement and CPU speed of the exports: the SavedModel, LiteRT float32 / float16 /
dynamic-range / int8, and ONNX, all converted from the one SavedModel, in one process.

The model: `build_classifier(backbone)` at `--image-size`, trained end to end (every layer
but BatchNorm, which `tfresnet.freeze` keeps in inference mode) on a learnable set
(`tfresnet.examples`: each class a colour and a shape), so that its probabilities are
confident and agreement means something: on random weights every class is about as likely and
rounding decides the label. The machines here are offline, so `--weights none` is the default.

Every format is converted from the SavedModel folder (as `python -m tfresnet.export` does);
int8 is calibrated on 200 training images. On the validation images (evaluation transform) each
format is compared with the SavedModel: top-1 agreement, the largest absolute difference of
probabilities, accuracy. Speed: batch 1, the median (p50) latency of single calls; batch 32,
images per second over whole calls (the median call); calls go round-robin over the formats so
that a change of load hits all alike. LiteRT runs on every core (`num_threads`), ONNX Runtime
and TensorFlow with their default thread pools (every core).

`--backbones` instead converts each backbone kind (resnet50, resnet50v2, resnet50-torchvision
and a Hub module) at 32 px, random weights, to LiteRT float32 and ONNX, and reports their
largest difference of probabilities from the Keras model.

Usage:
    python benchmarks/formats.py              # resnet50, 224 px, 200 + 200 images (~15 min, 9 GB)
    python benchmarks/formats.py --quick      # resnet-tiny, 64 px, 60 + 60 images (~2 min)
    python benchmarks/formats.py --backbones  # every backbone kind converts (~3 min, 9 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from tfresnet.cli.quiet import quiet_terminal  # noqa: E402

with quiet_terminal():  # TensorFlow's start-up lines
    import keras
    import numpy as np
    from pipeline import describe_machine, load_average

    import tfresnet
    from tfresnet.data.examples import write_shapes_folder
    from tfresnet.export.formats import compare, predict_all
    from tfresnet.export.litert import export_litert
    from tfresnet.export.onnx_export import export_onnx
    from tfresnet.export.runtime import SavedModelRuntime, load_runtime

FORMATS = ("saved_model", "litert float32", "litert float16", "litert dynamic", "litert int8", "onnx")
QUANTIZATIONS = {
    "litert float32": "none",
    "litert float16": "float16",
    "litert dynamic": "dynamic",
    "litert int8": "int8",
}
CALIBRATION_IMAGES = 200
WARM_UP_CALLS = 3
BACKBONE_KINDS = ("resnet50", "resnet50v2", "resnet50-torchvision", "hub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="resnet-tiny at 64 px, few images and calls")
    parser.add_argument(
        "--backbones", action="store_true", help="only check that every backbone kind converts"
    )
    parser.add_argument("--backbone", default=None, help="default: resnet50 (resnet-tiny with --quick)")
    parser.add_argument("--weights", default="none", help="none or imagenet (downloaded once)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 (64 with --quick)")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=None, help="per class (default: 40; 12 quick)")
    parser.add_argument("--val-images", type=int, default=None, help="per class (default: 40; 12 quick)")
    parser.add_argument(
        "--calls", type=int, default=None, help="timed batch-1 calls per format (default: 50; 10 quick)"
    )
    parser.add_argument(
        "--batch-calls", type=int, default=None, help="timed batch-32 calls per format (default: 5; 2 quick)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="of end-to-end training (default: 4; 8 quick)"
    )
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser


def settings(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the defaults that depend on `--quick`."""
    quick = args.quick
    defaults = {
        "backbone": "resnet-tiny" if quick else "resnet50",
        "image_size": 64 if quick else 224,
        "train_images": 12 if quick else 40,
        "val_images": 12 if quick else 40,
        "calls": 10 if quick else 50,
        "batch_calls": 2 if quick else 5,
        "epochs": 8 if quick else 4,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# === The model ===


def learnable_sets(root: str, args) -> tuple:
    """Training and validation `ImageData` of the shapes set, evaluation transform, unshuffled."""
    source = round(args.image_size / 0.875)  # the central crop is then image_size
    for name, count, seed in (("train", args.train_images, 0), ("val", args.val_images, 1)):
        write_shapes_folder(
            os.path.join(root, name), num_classes=args.classes, images_per_class=count, size=source, seed=seed
        )
    options = {
        "image_size": args.image_size,
        "batch_size": 16,
        "val_split": 0,
        "augmentation": "none",
        "seed": 0,
    }
    return tuple(tfresnet.from_folder(os.path.join(root, name), **options) for name in ("train", "val"))


def trained_classifier(train, args) -> keras.Model:
    """The classifier trained end to end on `train`."""
    from tfresnet.models.classifier import compile_classifier, one_hot_labels

    weights = None if args.weights == "none" else args.weights
    keras.utils.set_random_seed(0)
    model = tfresnet.build_classifier(
        args.classes,
        backbone=args.backbone,
        weights=weights,
        image_size=args.image_size,
        dropout=0.0,
        freeze_until=0,
    )
    compile_classifier(model, learning_rate=args.learning_rate, jit_compile=False)
    model.fit(train.train.map(one_hot_labels(args.classes)), epochs=args.epochs, shuffle=False, verbose=0)
    return model


# === Measures ===


def convert_all(model_dir: str, root: str, calibration: np.ndarray) -> dict[str, tuple[str, float]]:
    """`{format: (path, conversion seconds)}`, every file converted from the SavedModel folder."""
    converted = {}
    for name, quantization in QUANTIZATIONS.items():
        start = time.perf_counter()
        path = export_litert(
            model_dir,
            os.path.join(root, f"{quantization}.tflite"),
            quantization=quantization,
            representative_data=calibration if quantization == "int8" else None,
        )
        converted[name] = (path, time.perf_counter() - start)
        print(f"  converted {name} in {converted[name][1]:.0f} s", flush=True)
    start = time.perf_counter()
    converted["onnx"] = (
        export_onnx(model_dir, os.path.join(root, "model.onnx")),
        time.perf_counter() - start,
    )
    print(f"  converted onnx in {converted['onnx'][1]:.0f} s", flush=True)
    return converted


def size_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names
    )


def time_round_robin(runtimes: dict, images: np.ndarray, calls: int) -> dict[str, list[float]]:
    """Seconds of each call of each runtime on `images`, the formats' order rotated every round."""
    names, seconds = list(runtimes), {name: [] for name in runtimes}
    for round_index in range(WARM_UP_CALLS + calls):
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            start = time.perf_counter()
            runtimes[name].probabilities(images)
            if round_index >= WARM_UP_CALLS:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def measure(args, root: str) -> dict:
    train, val = learnable_sets(os.path.join(root, "images"), args)
    print(
        f"training {args.backbone} at {args.image_size} px on {train.num_train} images, {args.epochs} epochs",
        flush=True,
    )
    model = trained_classifier(train, args)
    model_dir = tfresnet.export_saved_model(
        model, os.path.join(root, "saved_model", "1"), class_names=train.class_names
    )
    del model
    keras.backend.clear_session()
    calibration = predict_all(train.train_evaluation, {"images": lambda x: x})["images"]
    calibration = calibration[np.random.default_rng(0).permutation(len(calibration))[:CALIBRATION_IMAGES]]
    converted = {"saved_model": (model_dir, 0.0), **convert_all(model_dir, root, calibration)}
    runtimes = {
        name: SavedModelRuntime(model_dir) if name == "saved_model" else load_runtime(path)
        for name, (path, _) in converted.items()
    }
    outputs = predict_all(
        val.train_evaluation, {name: runtime.probabilities for name, runtime in runtimes.items()}
    )
    pixels = predict_all(val.train_evaluation.take(1), {"images": lambda x: x})["images"]
    single = time_round_robin(runtimes, pixels[:1], args.calls)
    batch = np.resize(pixels, (32, *pixels.shape[1:]))
    batched = time_round_robin(runtimes, batch, args.batch_calls)
    figures = {}
    for name, (path, seconds) in converted.items():
        figures[name] = {
            "size_bytes": size_bytes(path),
            **compare(outputs["saved_model"], outputs[name], outputs["labels"]),
            "latency_ms_p50": 1000 * float(np.median(single[name])),
            "images_per_s": 32 / float(np.median(batched[name])),
            "conversion_s": seconds,
        }
    return {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "val_images": len(outputs["labels"]),
        "formats": figures,
    }


def report(result: dict) -> None:
    figures = result["formats"]
    float_size = figures["litert float32"]["size_bytes"]
    reference = figures["saved_model"]
    print(f"\n{result['backbone']} at {result['image_size']} px, {result['val_images']} validation images")
    print(
        f"{'format':<16}{'size MB':>9}{'x float':>9}{'agreement':>11}{'max |dp|':>10}{'accuracy':>10}"
        f"{'p50 ms':>9}{'img/s @32':>11}{'x SM':>7}"
    )
    for name, entry in figures.items():
        print(
            f"{name:<16}{entry['size_bytes'] / 1e6:>9.1f}{entry['size_bytes'] / float_size:>9.3f}"
            f"{100 * entry['agreement']:>10.1f}%{entry['max_abs_difference']:>10.1e}"
            f"{100 * entry['accuracy']:>9.1f}%"
            f"{entry['latency_ms_p50']:>9.1f}{entry['images_per_s']:>11.1f}"
            f"{entry['images_per_s'] / reference['images_per_s']:>7.2f}"
        )
    for name in FORMATS[1:]:
        if figures[name]["images_per_s"] < reference["images_per_s"]:
            print(f"note: {name} is slower than the SavedModel at batch 32 on this CPU")
    int8 = figures["litert int8"]
    print(
        f"litert int8: {int8['size_bytes'] / float_size:.2f}x size, "
        f"{int8['images_per_s'] / reference['images_per_s']:.1f}x throughput, "
        f"{100 * int8['agreement']:.1f}% agreement with the SavedModel"
    )


# === Every backbone kind ===


def check_backbones(root: str) -> list[dict]:
    """Each backbone kind at 32 px, random weights, to LiteRT float32 and ONNX: differences."""
    from conftest import save_hub_feature_vector

    rows = []
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    for kind in BACKBONE_KINDS:
        name = kind
        if kind == "hub":
            name = "hub:" + save_hub_feature_vector(os.path.join(root, "hub_module"))
        model = tfresnet.build_classifier(3, backbone=name, weights=None, image_size=32)
        expected = model.predict(images, verbose=0)
        row = {"backbone": kind}
        for format, export in (("litert", export_litert), ("onnx", export_onnx)):
            path = os.path.join(root, f"{kind}.{'tflite' if format == 'litert' else 'onnx'}")
            start = time.perf_counter()
            export(model, path, class_names=["a", "b", "c"])
            runtime = load_runtime(path)
            row[format] = {
                "max_abs_difference": float(np.abs(runtime.probabilities(images) - expected).max()),
                "size_bytes": os.path.getsize(path),
                "conversion_s": time.perf_counter() - start,
            }
            if format == "litert":
                row[format]["flex_ops"] = sorted(op for op in runtime.op_names() if op.startswith("Flex"))
            del runtime
        rows.append(row)
        litert, onnx = row["litert"], row["onnx"]
        print(
            f"{kind:<22} litert {litert['max_abs_difference']:.1e} ({litert['conversion_s']:.0f} s, "
            f"Flex ops: {litert['flex_ops'] or 'none'}), onnx {onnx['max_abs_difference']:.1e} "
            f"({onnx['conversion_s']:.0f} s)",
            flush=True,
        )
        del model
        keras.backend.clear_session()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = settings(build_parser().parse_args(argv))
    print(describe_machine())
    print(f"load average before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tfresnet-formats-") as root, quiet_terminal():
        result = {"backbones": check_backbones(root)} if args.backbones else measure(args, root)
    print(f"load average after: {load_average()}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    if args.backbones:
        print("every backbone kind converts: " + ", ".join(row["backbone"] for row in result["backbones"]))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
