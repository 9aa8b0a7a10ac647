"""Images per second of the tfresnet training pipeline against three references.

(a) `tfresnet.data.from_folder(..., augmentation="standard")`: a random resized crop (8% to
    100% of the area, aspect 3/4 to 4/3) decoded only inside the JPEG crop window, an
    antialiased bilinear resize, a random flip; batches of raw [0, 255] pixels;
(b) `keras.utils.image_dataset_from_directory` (every image resized to 256 px square,
    its aspect ratio ignored) followed by Keras preprocessing layers: `RandomCrop` to the
    image size, `RandomFlip`, and the ResNet50 normalisation a model would apply. Keras has
    no random-resized-crop layer, and Keras 3's `RandomCrop` draws one offset per batch: a
    weaker augmentation than (a), shown because it is the recipe Keras's guides give;
(c) bare `tf.io.decode_jpeg` of the same files in a parallel map: the decode ceiling;
(d) the like-for-like peer: a plain `tf.data` map doing what (a) does, the ordinary way:
    `tf.io.decode_jpeg` of the whole file, `tf.image.sample_distorted_bounding_box` with
    (a)'s area and aspect ranges (`RANDOM_CROP_AREA`, `RANDOM_CROP_ASPECT`), crop, the same
    antialiased bilinear resize, a random flip; shuffled file list, batched, prefetched;
(e) `tfresnet.data.from_folder(..., augmentation="randaugment")`: (a), then Keras's
    `RandAugment` (two operations per image at magnitude factor 0.5) on each image.

One warm-up epoch of each, then timed epochs taken in turn (the order rotated every round),
so that a change of load on a shared machine hits all five alike. Wall: images per second,
the median over the timed epochs. CPU: images per CPU-second of this process (all threads)
over the timed epochs: the work done, whatever other processes take from the machine.

Then, alone, a few training steps of `keras.applications.ResNet50(weights=None)` on random
batches of the same image size and batch size (one warm-up step, then timed steps): whether
the RandAugment pipeline (e) produces images faster than the model consumes them, and what
share of the CPU time per image it would take.

Usage:
    python benchmarks/pipeline.py            # 2,000 JPEGs of 500x375 px, 5 timed epochs, 5 ResNet50 steps
    python benchmarks/pipeline.py --quick    # 400 JPEGs, 3 timed epochs, 2 ResNet50 steps
    python benchmarks/pipeline.py --num-images 300 --photo-size 2000 1500   # large photos
"""

from __future__ import annotations

import argparse
import contextlib
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
from tfresnet.data.transforms import RANDOM_CROP_AREA, RANDOM_CROP_ASPECT, RANDOM_CROP_ATTEMPTS  # noqa: E402

PIPELINES = {
    "a": "(a) tfresnet from_folder, standard",
    "b": "(b) image_dataset_from_directory + Keras layers",
    "c": "(c) bare tf.io.decode_jpeg (ceiling)",
    "d": "(d) tf.data decode + distorted box + crop + resize + flip",
    "e": "(e) tfresnet from_folder, randaugment",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="400 images, 3 timed epochs (under a minute on 2 cores)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="JPEG files to generate (default: 2000; 400 with --quick)")
    parser.add_argument("--image-size", type=int, default=224, help="output side in pixels")
    parser.add_argument("--photo-size", type=int, nargs=2, default=(500, 375),
                        metavar=("WIDTH", "HEIGHT"), help="size of the generated JPEGs")
    parser.add_argument("--classes", type=int, default=4, help="class sub-folders")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs after one warm-up epoch (default: 5; 3 with --quick)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="timed ResNet50 training steps after one warm-up step "
                             "(default: 5; 2 with --quick)")
    return parser


# === Shared by the benchmarks ===


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other processes sharing the CPUs show here."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min)"


def describe_machine() -> str:
    """The machine in two lines: CPU model, cores, memory, GPUs; TensorFlow, Keras, Python versions.

    Example:
    >>> print(describe_machine())
    machine: CPU AMD EPYC, 2 cores (2 usable), 23.5 GiB RAM, no GPU
    software: TensorFlow 2.21.0, Keras 3.15.1, Python 3.11.7, Linux-6.1-x86_64
    """
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as file:
            cpu = next((line.split(":", 1)[1].strip() for line in file
                        if line.startswith("model name")), cpu)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = "RAM unknown"
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as file:
            kib = next(int(line.split()[1]) for line in file if line.startswith("MemTotal:"))
        memory = f"{kib / 2**20:.1f} GiB RAM"
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    gpu = f"{len(gpus)} GPU: {', '.join(names)}" if gpus else "no GPU"
    return (f"machine: CPU {cpu}, {os.cpu_count()} cores ({usable} usable), {memory}, {gpu}\n"
            f"software: TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
            f"{platform.python_version()}, {platform.platform(terse=True)}")


def headline(top: str, bottom: str, wall: float, cpu: float) -> str:
    """The last line of every benchmark: `top / bottom: N.Nx wall, N.Nx CPU`, wall clock first.

    Both ratios are speeds (images per wall-clock second, images per CPU-second): above 1
    means `top` is faster.
    """
    return f"{top} / {bottom}: {wall:.1f}x wall, {cpu:.1f}x CPU"


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


# === The pipelines ===


def tfresnet_pipeline(root: str, image_size: int, batch_size: int,
                      augmentation: str = "standard") -> tf.data.Dataset:
    return from_folder(root, image_size=image_size, batch_size=batch_size, val_split=0,
                       augmentation=augmentation, seed=0).train


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


def listed_files(root: str) -> tuple[list[str], list[int]]:
    paths = sorted(tf.io.gfile.glob(os.path.join(root, "*", "*.jpg")))
    classes = sorted({os.path.basename(os.path.dirname(path)) for path in paths})
    return paths, [classes.index(os.path.basename(os.path.dirname(path))) for path in paths]


def decode_pipeline(root: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    paths, _ = listed_files(root)
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    # Batch only what decodes to one shape; the photos all have one size.
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def plain_tf_data_pipeline(root: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    """(d): (a)'s augmentation written the plain tf.data way, decoding every whole file."""
    paths, labels = listed_files(root)

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            min_object_covered=RANDOM_CROP_AREA[0], aspect_ratio_range=RANDOM_CROP_ASPECT,
            area_range=RANDOM_CROP_AREA, max_attempts=RANDOM_CROP_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        return tf.image.random_flip_left_right(image), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.shuffle(len(paths), seed=0, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# === Timing ===


def resnet50_training_rate(image_size: int, batch_size: int, steps: int,
                           classes: int = 4) -> tuple[float, float]:
    """Images per second and per CPU-second of `keras.applications.ResNet50(weights=None)`
    training steps (Adam, BatchNormalization in training mode) on one random batch, fed from
    memory, after one warm-up step that traces the step.

    Example:
    >>> resnet50_training_rate(64, 32, steps=3)
    (118.2, 61.0)
    """
    model = keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3),
                                        classes=classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, classes, batch_size)
    model.train_on_batch(images, labels)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    images_done = steps * batch_size
    return images_done / (time.perf_counter() - start), images_done / (time.process_time() - start_cpu)


def one_epoch(dataset: tf.data.Dataset) -> tuple[int, float, float]:
    """Images, wall-clock seconds and process CPU seconds of one pass over `dataset`."""
    count = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for batch in dataset:
        count += int(tf.nest.flatten(batch)[0].shape[0])
    return count, time.perf_counter() - start, time.process_time() - start_cpu


def time_epochs(pipelines: dict[str, tf.data.Dataset], epochs: int) -> dict[str, dict]:
    """Times each pipeline over `epochs` epochs after one warm-up epoch, the pipelines in turn.

    Returns:
        For each pipeline, `rates` (images per wall-clock second of each timed epoch), `wall`
        (their median) and `cpu` (images per CPU-second over all timed epochs).
    """
    for dataset in pipelines.values():
        one_epoch(dataset)
    names = list(pipelines)
    rates = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    images = dict.fromkeys(names, 0)
    for epoch in range(epochs):
        shift = epoch % len(names)  # so that no pipeline always runs right after the same one
        for name in names[shift:] + names[:shift]:
            count, seconds, cpu_seconds = one_epoch(pipelines[name])
            rates[name].append(count / seconds)
            cpu[name] += cpu_seconds
            images[name] += count
    return {name: {"rates": rates[name], "wall": float(np.median(rates[name])),
                   "cpu": images[name] / cpu[name]} for name in names}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    num_images = args.num_images or (400 if args.quick else 2000)
    epochs = args.epochs or (3 if args.quick else 5)
    train_steps = args.train_steps or (2 if args.quick else 5)
    width, height = args.photo_size
    print(describe_machine())
    print(f"{num_images} JPEGs of {width}x{height} px, {args.image_size} px out, batch "
          f"{args.batch_size}, 1 warm-up + {epochs} timed epochs each, in turn; then 1 warm-up + "
          f"{train_steps} timed ResNet50 training steps")
    print(f"load average before: {load_average()}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, num_images=num_images, classes=args.classes, width=width,
                     height=height)
        start = time.perf_counter()
        pipelines = {"a": tfresnet_pipeline(root, args.image_size, args.batch_size)}
        print(f"from_folder setup (listing, file check, graph building): "
              f"{time.perf_counter() - start:.2f} s")
        pipelines["b"] = keras_pipeline(root, args.image_size, args.batch_size)
        pipelines["c"] = decode_pipeline(root, args.image_size, args.batch_size)
        pipelines["d"] = plain_tf_data_pipeline(root, args.image_size, args.batch_size)
        pipelines["e"] = tfresnet_pipeline(root, args.image_size, args.batch_size, "randaugment")
        results = time_epochs(pipelines, epochs)
    train_wall, train_cpu = resnet50_training_rate(args.image_size, args.batch_size, train_steps,
                                                   args.classes)
    print(f"load average after: {load_average()}; {time.perf_counter() - started:.0f} s in all")

    print(f"\n{'pipeline':<58} {'images/s per epoch':>26} {'median':>8} {'images/CPU-s':>13}")
    for name, result in results.items():
        per_epoch = " ".join(f"{rate:.1f}" for rate in result["rates"])
        print(f"{PIPELINES[name]:<58} {per_epoch:>26} {result['wall']:>8.1f} {result['cpu']:>13.1f}")

    def ratios(top: str, bottom: str) -> tuple[float, float]:
        return results[top]["wall"] / results[bottom]["wall"], results[top]["cpu"] / results[bottom]["cpu"]

    print()
    print(f"(a)/(c) {headline('tfresnet', 'bare decode_jpeg', *ratios('a', 'c'))}")
    print(f"(a)/(b) {headline('tfresnet', 'image_dataset_from_directory + Keras layers', *ratios('a', 'b'))}")
    print(f"(e)/(a) {headline('randaugment', 'standard', *ratios('e', 'a'))}")
    wall, cpu = results["e"]["wall"], results["e"]["cpu"]
    # CPU-seconds per image: 1/cpu for the pipeline, 1/train_cpu for the training step.
    share = (1 / cpu) / (1 / cpu + 1 / train_cpu)
    verdict = "keeps ahead" if wall > train_wall else "does NOT keep ahead"
    print(f"(e) randaugment pipeline {wall:.1f} images/s against ResNet50 training "
          f"{train_wall:.1f} images/s ({args.image_size} px, batch {args.batch_size}, "
          f"{train_steps} steps, each measured alone): {wall / train_wall:.1f}x wall, "
          f"{cpu / train_cpu:.1f}x CPU; the pipeline {verdict}, at {share:.0%} of the CPU time "
          f"per image when both share the CPUs")
    print(headline("tfresnet", "like-for-like tf.data peer", *ratios("a", "d")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
