"""Where a run computes: the strategy, who writes files, mixed precision, and two workers
training one model over loopback."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import free_ports, write_image_folder

from tfresnet.files import read_json
from tfresnet.training import distribute, run_files
from tfresnet.training.checkpoints import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strategy(cluster: dict | None, task_type: str | None = None, task_id: int = 0):
    """A stand-in for a strategy of a cluster: only its `cluster_resolver` is read."""
    if cluster is None:
        return types.SimpleNamespace()
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


WITH_CHIEF = {"chief": ["host0:1"], "worker": ["host1:1", "host2:1"]}
WORKERS_ONLY = {"worker": ["host0:1", "host1:1"]}


def test_resolve_strategy_without_a_cluster_is_the_default_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.resolve_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy)
    assert distribute.strategy_name(strategy) == "default"


def test_strategy_name_is_the_public_class_name():
    assert distribute.strategy_name(tf.distribute.MirroredStrategy(["/cpu:0"])) == "MirroredStrategy"
    assert distribute.strategy_name(tf.distribute.OneDeviceStrategy("/cpu:0")) == "OneDeviceStrategy"


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        (WITH_CHIEF, "chief", 0, True),
        (WITH_CHIEF, "worker", 0, False),
        (WITH_CHIEF, "worker", 1, False),
        (WORKERS_ONLY, "worker", 0, True),
        (WORKERS_ONLY, "worker", 1, False),
        (None, None, 0, True),
    ],
)
def test_is_chief(cluster, task_type, task_id, chief):
    """The chief when the cluster names one, else worker 0; a process outside a cluster is."""
    assert distribute.is_chief(_strategy(cluster, task_type, task_id)) is chief


def test_a_worker_resumes_from_a_private_copy_of_the_chief_state(tmp_path, monkeypatch):
    monkeypatch.setattr(run_files.tempfile, "tempdir", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    output_dir = str(tmp_path / "run")
    os.makedirs(os.path.join(output_dir, "backup", "head"))
    with open(os.path.join(output_dir, "backup", "head", "epoch.json"), "w") as file:
        json.dump({"epoch": 1, "weights": "epoch-1.weights.h5", "logs": {}}, file)
    worker = _strategy(WORKERS_ONLY, "worker", 1)
    with run_files.run_folder(output_dir, worker, resume=True) as private:
        assert private.startswith(str(tmp_path / "tmp")) and private != output_dir
        assert run_files.resume_point(private) == run_files.resume_point(output_dir) == [0, 0, 1, -1]
    with run_files.run_folder(output_dir, worker, resume=False) as fresh:
        assert run_files.resume_point(fresh) == [0, 0, -1, -1]
    assert os.listdir(tmp_path / "tmp") == []  # removed: a worker never reads state of its own
    assert sorted(os.listdir(output_dir)) == ["backup"]  # and never writes into the chief's folder


@pytest.mark.parametrize("value, expected", [("on", True), ("off", False), ("auto", False)])
def test_resolve_mixed_precision(value, expected):
    assert not tf.config.list_physical_devices("GPU")  # "auto" is on only with a GPU
    assert distribute.resolve_mixed_precision(value) is expected


def test_resolve_mixed_precision_names_the_choices():
    with pytest.raises(ValueError, match=r"mixed_precision must be one of .*Received: mixed_precision='yes'"):
        distribute.resolve_mixed_precision("yes")


def test_precision_policy_applies_inside_the_block_only():
    keras.mixed_precision.set_global_policy("float32")
    with distribute.precision_policy(True):
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert keras.layers.Dense(2).compute_dtype == "float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(RuntimeError), distribute.precision_policy(True):
        raise RuntimeError("failed inside")
    assert keras.mixed_precision.global_policy().name == "float32"


# === Two workers over loopback ===


def _event_file_pids(folder: str) -> set[int]:
    """The process ids in the names of TensorBoard's event files (`...tfevents.TIME.HOST.PID.N.v2`)."""
    return {
        int(name.split(".")[-3])
        for _, _, names in os.walk(folder)
        for name in names
        if name.startswith("events.out.tfevents")
    }


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """The command run by two workers of one cluster on this machine (worker 0 is the chief),
    both killed once the first fine-tuning epoch is committed, then run again with `--resume`
    by a new cluster, with the workers' temporary folders gone as on new machines."""
    root = tmp_path_factory.mktemp("two_workers")
    images, output_dir, temporary = (str(root / name) for name in ("images", "run", "tmp"))
    write_image_folder(images, images_per_class=10, size=32)  # 21 training, 9 validation images
    os.makedirs(temporary)
    command = [sys.executable, "-m", "tfresnet.finetune", "--data-dir", images, "--output-dir", output_dir]
    command += ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32", "--batch-size", "8"]
    command += ["--val-split", "0.3", "--augmentation", "none", "--head-epochs", "1", "--epochs", "2"]
    command += ["--patience", "0", "--seed", "0"]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    first = _start_workers(root, command, cluster, temporary, "first")
    committed = os.path.join(output_dir, "backup", "fine_tune", "epoch.json")
    deadline = time.monotonic() + 540
    while not os.path.exists(committed):
        assert all(worker.poll() is None for worker in first), (root / "first0.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for worker in first:
        worker.send_signal(signal.SIGKILL)
    killed = [worker.wait() for worker in first]
    done_at_kill = os.path.exists(os.path.join(output_dir, "training_done.json"))
    shutil.rmtree(temporary)  # whatever a worker kept on its machine is gone
    os.makedirs(temporary)

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    resumed = _start_workers(root, [*command, "--resume"], cluster, temporary, "resumed")
    for index, worker in enumerate(resumed):
        assert worker.wait(timeout=600) == 0, (root / f"resumed{index}.log").read_text()[-3000:]
    return types.SimpleNamespace(
        output_dir=output_dir,
        temporary=temporary,
        chiefs=[first[0].pid, resumed[0].pid],
        killed=killed,
        done_at_kill=done_at_kill,
        logs={run: [(root / f"{run}{i}.log").read_text() for i in range(2)] for run in ("first", "resumed")},
    )


@pytest.mark.slow
def test_two_workers_train_the_same_model_and_only_the_chief_writes(two_workers):
    output_dir = two_workers.output_dir
    for phase, epochs in (("head", 1), ("fine_tune", 2)):
        log = read_log(os.path.join(output_dir, f"log_{phase}.csv"))
        assert [row["epoch"] for row in log] == list(range(epochs))

    # The workers wrote nothing into the output folder: TensorBoard's files name their writer.
    assert _event_file_pids(output_dir) == set(two_workers.chiefs)
    leftovers = [name for _, _, names in os.walk(output_dir) for name in names if name.startswith(".")]
    assert leftovers == []
    assert os.listdir(two_workers.temporary) == []  # the worker's private folder went away
    assert read_json(os.path.join(output_dir, "report.json"))["evaluated_on"] == "validation"
    assert read_json(os.path.join(output_dir, "config.json"))["strategy"] == "MultiWorkerMirroredStrategy"


def _epoch_steps(log: str) -> list[str]:
    """The `step/steps` of the last progress line of each epoch in a worker's log (Keras's bar)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", log).replace("\r", "\n").splitlines()
    return [line.split()[0] for line in lines if re.match(r"\d+/\d+ .*val_loss", line)]


@pytest.mark.slow
def test_two_workers_each_read_half_the_images_in_the_steps_of_one_machine(two_workers):
    """21 training images in batches of 8: on one machine 3 steps an epoch, or 2 with the last
    partial batch dropped; two workers run as many, each on 11 images (its 10 or 11 files) in
    batches of 4."""
    config = read_json(os.path.join(two_workers.output_dir, "config.json"))
    steps = config["steps_per_epoch"]
    assert steps in (21 // 8, -(-21 // 8)) and config["num_train"] == 21
    assert config["images_per_worker"] == 11 and config["num_replicas"] == 2
    for first, resumed in zip(two_workers.logs["first"], two_workers.logs["resumed"]):
        # the head epoch and (unless the kill came before its last line) 1 fine-tuning epoch
        assert _epoch_steps(first) in ([f"{steps}/{steps}"] * 1, [f"{steps}/{steps}"] * 2)
        assert _epoch_steps(resumed) == [f"{steps}/{steps}"]  # the fine-tuning epoch left


@pytest.mark.slow
def test_the_report_of_two_workers_counts_every_validation_image(two_workers):
    report = read_json(os.path.join(two_workers.output_dir, "report.json"))
    assert report["num_images"] == 9


def _start_workers(
    root, command: list[str], cluster: dict, temporary: str, name: str
) -> list[subprocess.Popen]:
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        environment = {**os.environ, "TF_CONFIG": config, "TMPDIR": temporary}
        with open(root / f"{name}{index}.log", "w") as log:
            workers.append(subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=log))
    return workers


@pytest.mark.slow
def test_two_workers_killed_in_phase_2_resume_from_the_chief_state(two_workers):
    assert two_workers.killed == [-signal.SIGKILL] * 2 and not two_workers.done_at_kill
    output_dir = two_workers.output_dir
    epochs = [row["epoch"] for row in read_log(os.path.join(output_dir, "log_fine_tune.csv"))]
    assert epochs == list(range(2))  # each once, across the kill
    model = tf.saved_model.load(os.path.join(output_dir, "saved_model", "1"))
    image = tf.io.encode_png(tf.zeros([32, 32, 3], tf.uint8))
    served = model.signatures["serving_default"](image_bytes=tf.constant([image.numpy()]))
    assert np.isclose(float(tf.reduce_sum(served["probabilities"])), 1.0, atol=1e-4)
    assert served["labels"].numpy()[0, 0].decode() in ("blue", "green", "red")
