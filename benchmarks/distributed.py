"""Two workers on loopback against one machine: the images each worker decodes an epoch, and
the epoch time.

Three runs of one training (`resnet-tiny`, weights=None, whole network trained, image size 64,
batch 32, `augmentation="standard"`: a random crop decoded from each file every epoch), on a
generated folder of JPEGs (`tfresnet.data.examples.write_shapes_folder`), 20% held out:

(one) `tfresnet.fine_tune` on one machine (one process, no `TF_CONFIG`);
(two) `tfresnet.fine_tune` on two workers of one cluster on this machine (two processes, each
      with `TF_CONFIG`, `MultiWorkerMirroredStrategy`): each worker reads its share of the
      training files;
(keras) the plain-Keras peer on the same two workers: the same model, compiled by
      `compile_classifier`, given the same file-list dataset (`from_folder(...).train`,
      one-hot) to `model.fit`, which shards it with Keras's and TensorFlow's defaults
      (`AutoShardPolicy.AUTO`, which falls back to DATA for a list of file names).

Each process measures its own epochs with a callback (added to `fine_tune`'s fits by wrapping
`keras.Model.fit`), over the training steps only (from the epoch's start to the start of its
validation): wall-clock seconds, process CPU seconds, and the bytes the process read through
`read()` (`rchar` of `/proc/self/io`): the image files, read whole by `tf.io.read_file`, and
decoded as read. Images read = bytes read / the mean size of a training file. The first epoch
(tracing) is left out; the figures are medians over the timed epochs. A cluster's epoch time is
its slower worker's.

Usage:
    python benchmarks/distributed.py              # 2,900 JPEGs of 96 px, 1 warm-up + 3 timed epochs
    python benchmarks/distributed.py --quick      # 800 JPEGs, 1 warm-up + 1 timed epoch
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

RUNS = {
    "one": "(one) tfresnet, one machine",
    "two": "(two) tfresnet, two workers",
    "keras": "(keras) plain Keras fit, two workers",
}
IMAGE_SIZE, BATCH_SIZE, VAL_SPLIT = 64, 32, 0.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="800 images, 1 timed epoch")
    parser.add_argument("--num-images", type=int, default=None, help="default: 2900; 800 with --quick")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs (default: 3; 1 with --quick)")
    parser.add_argument("--photo-size", type=int, default=96, help="side of the generated JPEGs")
    parser.add_argument("--classes", type=int, default=4)
    # The role of one process of a run (the script starts itself with these).
    parser.add_argument("--role", choices=("tfresnet", "keras"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


# === One process of a run ===


def read_chars() -> int:
    """Bytes this process has read through `read()` so far (`rchar` of `/proc/self/io`)."""
    with open("/proc/self/io") as file:
        return next(int(line.split()[1]) for line in file if line.startswith("rchar:"))


def epoch_meter():
    """A Keras callback that keeps, for each epoch's training steps (up to its validation), the
    wall-clock seconds, process CPU seconds and bytes read."""
    import keras

    class EpochMeter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []
            self._start, self._steps = None, 0

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._steps = (time.perf_counter(), time.process_time(), read_chars()), 0

        def on_train_batch_end(self, batch, logs=None):
            self._steps += 1

        def _stop(self):
            if self._start is not None:
                wall, cpu, chars = self._start
                self.epochs.append(
                    {
                        "wall": time.perf_counter() - wall,
                        "cpu": time.process_time() - cpu,
                        "bytes": read_chars() - chars,
                        "steps": self._steps,
                    }
                )
                self._start = None

        def on_test_begin(self, logs=None):
            self._stop()

        def on_epoch_end(self, epoch, logs=None):
            self._stop()

    return EpochMeter()


def run_process(args) -> None:
    """Trains as `args.role` says, in this process (one worker, or the one machine), and writes
    what it measured to `args.result`."""
    import keras
    import tensorflow as tf

    from tfresnet import build_classifier, fine_tune, from_folder
    from tfresnet.models.classifier import compile_classifier
    from tfresnet.training.distribute import resolve_strategy, work_around_multi_worker_fit
    from tfresnet.training.targets import loss_labels

    strategy = resolve_strategy()  # before any other TensorFlow work
    data = from_folder(args.folder, image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, val_split=VAL_SPLIT, seed=0)
    meter, epochs = epoch_meter(), 1 + args.epochs
    result = {
        "num_train": data.num_train,
        "train_bytes": sum(os.path.getsize(p) for p in data.files["train"]),
    }
    if args.role == "tfresnet":
        fit = keras.Model.fit

        def fit_measured(model, *fit_args, callbacks=None, **kwargs):
            return fit(model, *fit_args, callbacks=[*(callbacks or []), meter], **kwargs)

        with mock.patch.object(keras.Model, "fit", fit_measured):
            trained = fine_tune(
                data,
                backbone="resnet-tiny",
                weights=None,
                head_epochs=0,
                epochs=epochs,
                freeze_until=0,
                learning_rate=1e-2,
                seed=0,
                strategy=strategy,
                verbose=0,
            )
        result.update(
            val_accuracy=trained.history["val_accuracy"][-1],
            val_loss=trained.history["val_loss"][-1],
            steps_per_epoch=trained.config["steps_per_epoch"],
            images_per_worker=trained.config["images_per_worker"],
        )
    else:
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_classifier(
                len(data.class_names),
                backbone="resnet-tiny",
                weights=None,
                image_size=IMAGE_SIZE,
                freeze_until=0,
            )
            compile_classifier(model, learning_rate=1e-3)
            if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                work_around_multi_worker_fit(model)  # Keras 3 needs it there (keras-team/keras#20585)
            model.fit(loss_labels(data.train, data), epochs=epochs, verbose=0, callbacks=[meter])
    result["epochs"] = meter.epochs
    with open(args.result, "w") as file:
        json.dump(result, file)


# === The runs ===


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def run(role: str, workers: int, folder: str, root: str, name: str, epochs: int) -> list[dict]:
    """Runs `role` in `workers` processes (a cluster of them on loopback when 2); returns each
    process's measures, the chief's first."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    processes, results = [], []
    for index in range(workers):
        result = os.path.join(root, f"{name}{index}.json")
        command = [sys.executable, __file__, "--role", role, "--folder", folder, "--result", result]
        command += ["--epochs", str(epochs)]
        environment = dict(os.environ)
        environment.pop("TF_CONFIG", None)
        if workers > 1:
            environment["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
        log = open(os.path.join(root, f"{name}{index}.log"), "w")
        processes.append((subprocess.Popen(command, env=environment, stdout=log, stderr=log), log))
        results.append(result)
    for index, (process, log) in enumerate(processes):
        if process.wait() != 0:
            log.close()
            tail = open(os.path.join(root, f"{name}{index}.log")).read()[-3000:]
            raise RuntimeError(f"{name} process {index} failed:\n{tail}")
        log.close()
    found = []
    for path in results:
        with open(path) as file:
            found.append(json.load(file))
    return found


def summary(processes: list[dict]) -> dict:
    """A run's medians over the timed epochs: each process's images read, CPU seconds, and the
    slowest process's wall seconds (the cluster waits for it at every step)."""
    mean_file = processes[0]["train_bytes"] / processes[0]["num_train"]
    timed = [process["epochs"][1:] for process in processes]
    return {
        "wall": float(np.median([max(epoch["wall"] for epoch in epochs) for epochs in zip(*timed)])),
        "cpu": [float(np.median([epoch["cpu"] for epoch in epochs])) for epochs in timed],
        "images": [float(np.median([epoch["bytes"] / mean_file for epoch in epochs])) for epochs in timed],
        "per_epoch": timed,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.epochs = args.epochs or (1 if args.quick else 3)
    if args.role:
        run_process(args)
        return 0
    from pipeline import describe_machine, load_average

    from tfresnet.data.examples import write_shapes_folder

    num_images = args.num_images or (800 if args.quick else 2900)
    print(describe_machine())
    print(
        f"{num_images} JPEGs of {args.photo_size} px in {args.classes} classes, {VAL_SPLIT:.0%} held out; "
        f"resnet-tiny (weights=None, all trained), {IMAGE_SIZE} px, batch {BATCH_SIZE} (global), "
        f"augmentation 'standard'; 1 warm-up + {args.epochs} timed epochs each; runs in this order: "
        f"{', '.join(RUNS)}"
    )
    print(
        f"NOTE: the two workers run on this one machine ({os.cpu_count()} cores): they share its CPUs "
        f"and talk over loopback, so their wall time is not what two machines would give"
    )
    print(f"load average before: {load_average()}", flush=True)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "images")
        write_shapes_folder(
            folder,
            num_classes=args.classes,
            images_per_class=num_images // args.classes,
            size=args.photo_size,
        )
        for name, role, workers in (("one", "tfresnet", 1), ("two", "tfresnet", 2), ("keras", "keras", 2)):
            start = time.perf_counter()
            processes = run(role, workers, folder, root, name, args.epochs)
            results[name] = {"processes": processes, **summary(processes)}
            print(
                f"{RUNS[name]}: {time.perf_counter() - start:.0f} s, start-up and warm-up included",
                flush=True,
            )
    print(f"load average after: {load_average()}; {time.perf_counter() - started:.0f} s in all")
    report(results)
    return 0


def report(results: dict) -> None:
    """Prints every figure, then the headline."""
    one = results["one"]
    chief = one["processes"][0]
    num_train, reference = chief["num_train"], one["images"][0]
    print(
        f"\n{num_train} training images, {chief['steps_per_epoch']} steps an epoch on one machine; "
        f"mean file {chief['train_bytes'] / num_train / 1024:.1f} KiB"
    )
    print(f"\n{'run':<38} {'process':>7} {'images read':>12} {'share':>6} {'CPU s':>7} {'wall s':>7}")
    for name, result in results.items():
        for index, (images, cpu) in enumerate(zip(result["images"], result["cpu"])):
            print(
                f"{RUNS[name]:<38} {index:>7} {images:>12.0f} {images / reference:>6.2f} {cpu:>7.1f} "
                f"{result['wall']:>7.1f}"
            )
    print("(medians over the timed epochs; share: images read against one machine's)")
    for name in ("one", "two"):
        processes = results[name]["processes"]
        chief_of_run = processes[0]
        print(
            f"{RUNS[name]}: steps per epoch {chief_of_run['steps_per_epoch']}, images per worker "
            f"(config) {chief_of_run['images_per_worker']}, final validation accuracy "
            f"{chief_of_run['val_accuracy']:.3f}, loss {chief_of_run['val_loss']:.4f}"
        )
    print("per epoch (wall s, CPU s, images read, steps) of each process:")
    for name, result in results.items():
        for index, epochs in enumerate(result["per_epoch"]):
            mean_file = chief["train_bytes"] / num_train
            figures = "; ".join(
                f"{epoch['wall']:.1f}, {epoch['cpu']:.1f}, {epoch['bytes'] / mean_file:.0f}, {epoch['steps']}"
                for epoch in epochs
            )
            print(f"  {RUNS[name]:<38} {index}: {figures}")

    two, keras_way = results["two"], results["keras"]
    # Speed ratios, as every headline in RESULTS.md (above 1: two workers are faster): one
    # machine's epoch time over the two workers', and one machine's CPU time an epoch over each
    # worker's (above 1: each worker does less work than one machine).
    wall = one["wall"] / two["wall"]
    cpu = one["cpu"][0] / float(np.mean(two["cpu"]))
    share = max(two["images"]) / reference
    keras_share = max(keras_way["images"]) / reference
    print(f"(keras) plain Keras fit, two workers / one: {one['wall'] / keras_way['wall']:.1f}x wall")
    print(
        f"two workers / one: {wall:.1f}x wall, {cpu:.1f}x CPU per worker; each worker decodes "
        f"{share:.2f} of one machine's images an epoch (plain Keras fit: {keras_share:.2f})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
