"""Images per second of the tfresnet training pipeline against two references.

(a) `tfresnet.data.from_folder(..., augmentation="standard")`: random resized crop decoded
    from the JPEG crop window, flip, batches of raw [0, 255] pixels;
(b) `keras.utils.image_dataset_from_directory` (resized to 256 px) followed by Keras
    preprocessing layers: `RandomCrop` to the image size, `RandomFlip`, and the ResNet50
    normalisation a model would apply (Keras has no random-resized-crop layer: a fixed
    resize then a random crop is its nearest recipe);
(c) bare `tf.io.decode_jpeg` of the same files in a parallel map: the decode ceiling.

Usage:
    python benchmarks/pipeline.py            # 1,000 JPEGs of 500x375 px
    python benchmarks/pipeline.py --quick    # 200 JPEGs
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from tfresnet.data import from_folder  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 images (well under 3 minutes on 2 cores)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="JPEG files to generate (default: 1000; 200 with --quick)")
    parser.add_argument("--image-size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the generated JPEGs")
    parser.add_argument("--classes", type=int, default=4, help="class sub-folders")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3,
                        help="timed epochs after one warm-up epoch")
    return parser


def write_photos(root: str, *, num_images: int, classes: int, width: int, height: int) -> None:
    """Writes photo-like JPEGs (smooth gradients plus noise, quality 90) in class folders."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(num_images):
        folder = os.path.join(root, f"class{index % classes}")
        os.makedirs(folder, exist_ok=True)
        a, b, c = rng.uniform(0.005, 0.05, 3)
        base = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y), np.sin(c * (x + y))], -1)
        pixels = 127 + 100 * base + rng.normal(0, 12, base.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        image.save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)


def tfresnet_pipeline(root: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    return from_folder(root, image_size=image_size, batch_size=batch_size, val_split=0,
                       augmentation="standard", seed=0).train


def keras_pipeline(root: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    dataset = keras.utils.image_dataset_from_directory(
        root, image_size=(round(image_size / 0.875),) * 2, batch_size=batch_size, seed=0,
        verbose=False,
    )
    augment = keras.Sequential([
        keras.layers.RandomCrop(image_size, image_size, seed=0),
        keras.layers.RandomFlip("horizontal", seed=0),
    ])

    def transform(images, labels):
        images = augment(images, training=True)
        return keras.applications.resnet50.preprocess_input(images), labels

    return dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def decode_pipeline(root: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    paths = sorted(tf.io.gfile.glob(os.path.join(root, "*", "*.jpg")))
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # Batch only what decodes to one shape; the photos all have one size.
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def time_epochs(pipelines: dict[str, tf.data.Dataset], epochs: int) -> dict[str, tuple]:
    """Times each pipeline over `epochs` epochs after one warm-up epoch.

    Epochs of the pipelines alternate, so a load change on a shared machine hits them alike.

    Returns:
        For each pipeline, (median images per wall-clock second over the epochs, images per
        CPU-second of this process). CPU time counts the work done, whatever other
        processes take from the machine.
    """
    for dataset in pipelines.values():
        for _ in dataset:
            pass
    wall = {name: [] for name in pipelines}
    cpu = dict.fromkeys(pipelines, 0.0)
    images = dict.fromkeys(pipelines, 0)
    for _ in range(epochs):
        for name, dataset in pipelines.items():
            count = 0
            start, start_cpu = time.perf_counter(), time.process_time()
            for batch in dataset:
                count += int(tf.nest.flatten(batch)[0].shape[0])
            wall[name].append(count / (time.perf_counter() - start))
            cpu[name] += time.process_time() - start_cpu
            images[name] += count
    return {name: (float(np.median(wall[name])), images[name] / cpu[name]) for name in pipelines}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other processes sharing the CPUs show here."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    num_images = args.num_images or (200 if args.quick else 1000)
    epochs = args.epochs
    width, height = args.photo_size
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs")
    print(f"{num_images} JPEGs of {width}x{height} px, {args.image_size} px out, batch "
          f"{args.batch_size}, 1 warm-up + {epochs} timed epochs")
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, num_images=num_images, classes=args.classes, width=width,
                     height=height)
        start = time.perf_counter()
        pipelines = {"(a) tfresnet from_folder, standard": tfresnet_pipeline(
            root, args.image_size, args.batch_size)}
        print(f"from_folder setup (listing, file check, graph building): "
              f"{time.perf_counter() - start:.2f} s")
        pipelines["(b) Keras image_dataset_from_directory + layers"] = keras_pipeline(
            root, args.image_size, args.batch_size)
        pipelines["(c) bare tf.io.decode_jpeg (ceiling)"] = decode_pipeline(
            root, args.image_size, args.batch_size)
        rates = time_epochs(pipelines, epochs)
    print(f"load average after: {load_average()}")
    print(f"\n{'pipeline':<50} {'images/s':>10} {'images/CPU-s':>13}")
    for name, (per_second, per_cpu_second) in rates.items():
        print(f"{name:<50} {per_second:>10.1f} {per_cpu_second:>13.1f}")
    (a, a_cpu), (b, b_cpu), (c, c_cpu) = rates.values()
    print(f"\n(a)/(b) = {a / b:.2f}x wall, {a_cpu / b_cpu:.2f}x CPU")
    print(f"(a)/(c) = {a / c:.2f}x wall, {a_cpu / c_cpu:.2f}x CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
