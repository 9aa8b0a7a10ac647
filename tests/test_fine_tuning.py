"""The two-phase recipe on the tiny backbone: what reaches training, what each phase trains,
and what a run leaves for a resume."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
from conftest import make_multi_label_data, ram_files, write_image_folder

import tfresnet
from tfresnet import paths, training
from tfresnet.files import read_json
from tfresnet.finetune import main
from tfresnet.training.checkpoints import EpochLog, read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = {"backbone": "resnet-test", "weights": None, "verbose": 0}
COLOURS = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], dtype="float32")


def _data(counts=(8, 8, 8), *, val_split=0.25, batch_size=8, drop_remainder=False):
    """Classes of one colour each (a learnable signal) with noise, 32 px."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = COLOURS[labels][:, None, None, :] + rng.normal(0, 20, (len(labels), 32, 32, 3))
    return tfresnet.from_arrays(
        np.clip(images, 0, 255).astype("uint8"),
        labels,
        image_size=32,
        batch_size=batch_size,
        val_split=val_split,
        augmentation="none",
        drop_remainder=drop_remainder,
        seed=0,
    )


def _fresh_backbone(seed: int, num_classes: int):
    keras.utils.set_random_seed(seed)
    model = tfresnet.build_classifier(num_classes, backbone="resnet-test", weights=None, image_size=32)
    return model.get_layer("backbone")


def _same_weights(a: keras.layers.Layer, b) -> bool:
    """Whether layer `a` holds the weights of layer `b` (or of a list of arrays)."""
    b = [w.numpy() for w in b.weights] if isinstance(b, keras.layers.Layer) else b
    return all(np.array_equal(x.numpy(), y) for x, y in zip(a.weights, b))


def _recording_fit(monkeypatch) -> list[dict]:
    """Wraps `keras.Model.fit`; returns the list it appends each call's kwargs and end state to."""
    calls, fit = [], keras.Model.fit

    def recording(model, *args, **kwargs):
        history = fit(model, *args, **kwargs)
        optimizer = model.optimizer
        calls.append(
            {
                **kwargs,
                "iterations": int(optimizer.iterations),
                "final_learning_rate": float(optimizer.learning_rate),
                "schedule": optimizer._learning_rate,
                "backbone": {  # as the phase leaves it, before the best epoch is restored
                    layer.name: [weight.numpy() for weight in layer.weights]
                    for layer in model.get_layer("backbone").layers
                    if layer.weights
                },
            }
        )
        return history

    monkeypatch.setattr(keras.Model, "fit", recording)
    return calls


# === A head phase without a validation set, 3:1 classes ===

HEAD_RUN = dict(TINY, head_epochs=2, epochs=0, label_smoothing=0.2, class_weight="balanced", seed=3)


def _imbalanced():
    keras.utils.set_random_seed(1)  # the same state as a fresh process, for the same-seed test
    return _data((12, 4), val_split=0)


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("head_run"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _recording_fit(monkeypatch)
        result = training.fine_tune(_imbalanced(), output_dir=output_dir, **HEAD_RUN)
    return types.SimpleNamespace(result=result, output_dir=output_dir, fit_calls=calls)


def test_a_run_without_validation_finishes_on_the_lowest_training_loss(head_run):
    history, output_dir = head_run.result.history, head_run.output_dir
    assert set(history) == {"loss", "accuracy", "phase"}
    assert history["phase"] == [1, 1]
    best = read_json(os.path.join(output_dir, "best.json"))
    assert best["monitor"] == "loss"
    assert best["value"] == min(history["loss"])
    assert best["epoch"] == {"phase": "head", "epoch": int(np.argmin(history["loss"]))}
    log = open(os.path.join(output_dir, "log_head.csv")).read()
    assert log.splitlines()[0] == "epoch,accuracy,loss" and "NA" not in log
    assert read_json(os.path.join(output_dir, "training_done.json"))["best_epoch"] == best["epoch"]
    assert not os.path.exists(os.path.join(output_dir, "backup"))

    saved = tfresnet.build_classifier(2, backbone="resnet-test", weights=None, image_size=32)
    saved.load_weights(os.path.join(output_dir, "best.weights.h5"))
    for expected, actual in zip(saved.weights, head_run.result.model.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())


def test_the_head_phase_leaves_the_backbone_untouched(head_run):
    trained = head_run.result.model
    assert _same_weights(_fresh_backbone(3, 2), trained.get_layer("backbone"))
    fresh_head = tfresnet.build_classifier(2, backbone="resnet-test", weights=None, image_size=32)
    assert not np.array_equal(fresh_head.layers[-1].kernel.numpy(), trained.layers[-1].kernel.numpy())


def test_class_weights_and_label_smoothing_reach_training(head_run):
    (call,) = head_run.fit_calls
    assert call["class_weight"] == pytest.approx({0: 16 / 24, 1: 2.0})
    assert head_run.result.model.loss.label_smoothing == pytest.approx(0.2)


def test_config_records_what_the_run_resolved(head_run):
    config = read_json(os.path.join(head_run.output_dir, "config.json"))
    assert config["jit_compile"] is False  # "auto" on a CPU
    assert config["strategy"] == "default"
    assert config["steps_per_epoch"] == 2
    assert config["class_weights"] == pytest.approx({"0": 16 / 24, "1": 2.0})
    assert config["label_smoothing"] == 0.2 and config["num_validation"] == 0
    assert config["best_epoch"] == read_json(os.path.join(head_run.output_dir, "best.json"))["epoch"]


def test_same_seed_same_result_with_or_without_an_output_dir(head_run):
    again = training.fine_tune(_imbalanced(), **HEAD_RUN)
    assert again.history == head_run.result.history
    for expected, actual in zip(head_run.result.model.weights, again.model.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())


# === Both phases, killed in the head phase and resumed; 10 images in 2 full batches ===

BOTH_PHASES = dict(TINY, head_epochs=2, epochs=2, freeze_until="conv5", warmup_epochs=0.5, seed=3)


def _full_batches():
    return _data((5, 5), val_split=0, batch_size=4, drop_remainder=True)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """Killed after the head phase's first epoch was backed up, before it was logged; resumed."""
    output_dir = str(tmp_path_factory.mktemp("resumed_run"))
    data = _full_batches()
    with pytest.MonkeyPatch.context() as monkeypatch:
        log_epoch = EpochLog.on_epoch_end

        def killed(self, epoch, logs=None):
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr(EpochLog, "on_epoch_end", killed)
        with pytest.raises(KeyboardInterrupt):
            training.fine_tune(data, output_dir=output_dir, **BOTH_PHASES)
        assert not os.path.exists(os.path.join(output_dir, "log_head.csv"))
        monkeypatch.setattr(EpochLog, "on_epoch_end", log_epoch)
        calls = _recording_fit(monkeypatch)
        result = training.fine_tune(data, output_dir=output_dir, resume=True, **BOTH_PHASES)
    return types.SimpleNamespace(result=result, output_dir=output_dir, fit_calls=calls, data=data)


def test_a_resumed_run_logs_every_epoch_once(resumed_run):
    head = read_log(os.path.join(resumed_run.output_dir, "log_head.csv"))
    fine_tune = read_log(os.path.join(resumed_run.output_dir, "log_fine_tune.csv"))
    assert [row["epoch"] for row in head] == [0, 1]
    assert [row["epoch"] for row in fine_tune] == [0, 1]
    assert resumed_run.result.history["phase"] == [1, 1, 2, 2]
    assert resumed_run.result.history["loss"] == [row["loss"] for row in head + fine_tune]
    head_fit, fine_tune_fit = resumed_run.fit_calls
    assert (head_fit["iterations"], fine_tune_fit["iterations"]) == (2 * 2, 2 * 2)  # 1 + 1 head epochs


def test_the_schedule_ends_at_zero_on_the_last_batch_run(resumed_run):
    assert training.steps_per_epoch(resumed_run.data) == 2  # 10 images, batches of 4, remainder dropped
    fine_tune_fit = resumed_run.fit_calls[-1]
    assert fine_tune_fit["iterations"] == 2 * 2
    assert fine_tune_fit["final_learning_rate"] == pytest.approx(0.0, abs=1e-12)
    assert float(fine_tune_fit["schedule"](2 * 2 - 1)) > 0
    assert read_json(os.path.join(resumed_run.output_dir, "config.json"))["steps_per_epoch"] == 2


def test_freeze_until_trains_the_given_stages_only(resumed_run):
    fresh, trained = _fresh_backbone(3, 2), resumed_run.fit_calls[-1]["backbone"]
    same = {layer.name: _same_weights(layer, trained[layer.name]) for layer in fresh.layers if layer.weights}
    assert same["conv1_conv"] and same["conv4_block1_3_conv"]
    assert not same["conv5_block1_1_conv"] and not same["conv5_block1_3_conv"]
    assert all(same[name] for name in same if name.endswith("_bn"))  # moving statistics included


def test_resuming_a_finished_run_trains_nothing(resumed_run, monkeypatch):
    logs = {
        name: open(os.path.join(resumed_run.output_dir, name)).read()
        for name in ("log_head.csv", "log_fine_tune.csv")
    }

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(keras.Model, "fit", no_fit)
    again = training.fine_tune(
        resumed_run.data, output_dir=resumed_run.output_dir, resume=True, **BOTH_PHASES
    )

    assert again.history == resumed_run.result.history
    for expected, actual in zip(resumed_run.result.model.weights, again.model.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    for name, text in logs.items():
        assert open(os.path.join(resumed_run.output_dir, name)).read() == text
    assert again.config["best_epoch"] == resumed_run.result.config["best_epoch"] is not None
    assert again.model.loss.label_smoothing == pytest.approx(0.1)  # compiled as after training


# === A run folder on a store (ram://, through tf.io.gfile) ===


def test_a_run_on_a_store_resumes_after_its_head_phase_and_finishes_there(ram_dir, monkeypatch):
    data, settings = _data((6, 6), val_split=0.25), dict(TINY, head_epochs=1, epochs=1, seed=0)
    log_epoch = EpochLog.on_epoch_end

    def killed_in_phase_2(self, epoch, logs=None):
        if "fine_tune" in self.path:
            raise KeyboardInterrupt("killed")
        log_epoch(self, epoch, logs)

    monkeypatch.setattr(EpochLog, "on_epoch_end", killed_in_phase_2)
    with pytest.raises(KeyboardInterrupt):
        training.fine_tune(data, output_dir=ram_dir, **settings)
    assert "head_phase.weights.h5" in ram_files(ram_dir)
    monkeypatch.setattr(EpochLog, "on_epoch_end", log_epoch)
    calls = _recording_fit(monkeypatch)
    result = training.fine_tune(data, output_dir=ram_dir, resume=True, **settings)

    assert [call["epochs"] for call in calls] == [1]  # the head phase was not trained again
    assert result.history["phase"] == [1, 2]
    assert {"config.json", "best.weights.h5", "training_done.json", "log_fine_tune.csv"} <= set(
        ram_files(ram_dir)
    )
    config = read_json(paths.join(ram_dir, "config.json"))
    assert config["images_per_worker"] == config["num_train"] == data.num_train
    finished = training.fine_tune(data, output_dir=ram_dir, resume=True, **settings)
    assert finished.history == result.history and len(calls) == 1


# === Recipe pieces ===


def test_class_weights_balance_the_classes():
    weights = training.class_weights([30, 10, 20])
    assert weights == pytest.approx({0: 60 / 90, 1: 2.0, 2: 1.0})
    assert training.class_weights([5, 5], "none") is None
    with pytest.raises(ValueError, match="class_weight must be one of"):
        training.class_weights([5, 5], "inverse")


def test_fine_tune_schedule_warms_up_then_decays():
    schedule = training.fine_tune_schedule(1e-3, steps=100, warmup_steps=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates[0] == pytest.approx(0.0)
    assert rates[1] == pytest.approx(5e-4, rel=1e-3)
    assert rates[2] == pytest.approx(1e-3, rel=1e-3)
    assert rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("drop_remainder, steps", [(True, 2), (False, 3)])
def test_steps_per_epoch_counts_the_batches_of_the_training_set(drop_remainder, steps):
    data = _data((5, 5), val_split=0, batch_size=4, drop_remainder=drop_remainder)
    assert training.steps_per_epoch(data) == steps


def test_ema_returns_the_moving_average_of_the_fine_tuning_steps(tmp_path, monkeypatch):
    kernels, fit = [], keras.Model.fit

    def recording(model, *args, **kwargs):
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: kernels.append(
                model.get_layer("predictions").kernel.numpy().copy()
            )
        )
        return fit(model, *args, **{**kwargs, "callbacks": [record, *kwargs["callbacks"]]})

    monkeypatch.setattr(keras.Model, "fit", recording)
    settings = dict(TINY, head_epochs=0, epochs=1, ema=True, ema_momentum=0.5, mixup=0.4, patience=None)
    result = training.fine_tune(_data(), output_dir=str(tmp_path), seed=2, **settings)

    # The first step's weights, then m * average + (1 - m) * weights, the momentum m warming up
    # as tf.train.ExponentialMovingAverage(num_updates=step) does: min(0.5, (1 + step) / (10 + step)).
    expected = kernels[0]
    for step, kernel in enumerate(kernels[1:], start=1):
        momentum = min(0.5, (1 + step) / (10 + step))
        expected = momentum * expected + (1 - momentum) * kernel
    final = result.model.get_layer("predictions").kernel.numpy()
    assert len(kernels) == 3 and not np.allclose(final, kernels[-1])
    np.testing.assert_allclose(final, expected, atol=1e-6)
    saved = tfresnet.build_classifier(3, backbone="resnet-test", weights=None, image_size=32)
    saved.load_weights(os.path.join(tmp_path, "best.weights.h5"))
    np.testing.assert_allclose(saved.get_layer("predictions").kernel.numpy(), expected, atol=1e-6)
    assert result.config["mixup"] == 0.4 and result.config["averaged_phase"] == "fine_tune"


@pytest.mark.slow
def test_ema_on_a_short_run_keeps_trained_weights_as_good_as_the_raw_ones(monkeypatch):
    """At the default momentum 0.999, a run of a few dozen steps: without the warm-up the
    average would hold the starting weights (and a model at chance)."""
    data = _data((16, 16, 16), val_split=0.25, batch_size=8)
    kernels, fit = [], keras.Model.fit

    def recording(model, *args, **kwargs):
        record = keras.callbacks.LambdaCallback(
            on_train_batch_begin=lambda batch, logs: kernels.append(
                model.get_layer("predictions").kernel.numpy().copy()
            )
        )
        return fit(model, *args, **{**kwargs, "callbacks": [record, *kwargs["callbacks"]]})

    monkeypatch.setattr(keras.Model, "fit", recording)
    settings = dict(TINY, head_epochs=0, epochs=4, learning_rate=1e-2, patience=None, seed=3)
    averaged = training.fine_tune(data, ema=True, **settings)
    start, trained = kernels[0], kernels[-1]
    plain = training.fine_tune(data, **settings)

    final = averaged.model.get_layer("predictions").kernel.numpy()
    assert np.abs(final - start).mean() > 0.5 * np.abs(trained - start).mean()
    accuracy = {
        name: tfresnet.evaluate(result.model, data.validation)["accuracy"]
        for name, result in (("ema", averaged), ("plain", plain))
    }
    assert accuracy["ema"] >= accuracy["plain"] - 2 / 12, accuracy  # 12 images: two is noise


class _Interrupted(Exception):
    pass


def test_a_resumed_ema_run_trains_on_from_the_trained_weights_not_the_average(tmp_path, monkeypatch):
    raw_kernels, fit = [], keras.Model.fit

    def kernel(model):
        return model.get_layer("predictions").kernel.numpy().copy()

    def interrupted_after_epoch_0(model, *args, **kwargs):
        def end(batch, logs):
            raw_kernels.append(kernel(model))

        def stop(epoch, logs):
            if epoch == 1:
                raise _Interrupted

        record = keras.callbacks.LambdaCallback(on_train_batch_end=end, on_epoch_begin=stop)
        return fit(model, *args, **{**kwargs, "callbacks": [*kwargs["callbacks"], record]})

    settings = dict(TINY, head_epochs=0, epochs=2, ema=True, ema_momentum=0.5, patience=None, seed=4)
    monkeypatch.setattr(keras.Model, "fit", interrupted_after_epoch_0)
    with pytest.raises(_Interrupted):
        training.fine_tune(_data(), output_dir=str(tmp_path), **settings)
    first_steps, resumed_start = [], []

    def resumed(model, *args, **kwargs):
        def begin(batch, logs):
            first_steps.append(batch)
            if len(first_steps) == 1:
                resumed_start.append(kernel(model))

        record = keras.callbacks.LambdaCallback(on_train_batch_begin=begin)
        return fit(model, *args, **{**kwargs, "callbacks": [*kwargs["callbacks"], record]})

    monkeypatch.setattr(keras.Model, "fit", resumed)
    training.fine_tune(_data(), output_dir=str(tmp_path), resume=True, **settings)

    # Epoch 0 was committed with the average in the model; epoch 1 trains on from its last step.
    assert len(first_steps) == 3  # one epoch of 3 steps: the second
    np.testing.assert_allclose(resumed_start[0], raw_kernels[-1], atol=1e-7)
    assert not np.allclose(raw_kernels[-1], raw_kernels[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head_epochs": 0, "epochs": 0}, "Nothing to train"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"head_epochs": True}, "head_epochs must be an integer >= 0"),
        ({"resume": True}, "resume=True needs the output_dir"),
        ({"freeze_until": 500}, "out of range"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"fine_tune_learning_rate": 0.0}, "fine_tune_learning_rate must be > 0"),
        ({"mixed_precision": "yes"}, "mixed_precision must be one of"),
        ({"mixup": -1}, "Received: mixup=-1"),
        ({"ema": True, "ema_momentum": 1.0}, r"ema_momentum must be in \(0, 1\)"),
    ],
)
def test_bad_settings_fail_before_training(kwargs, message, monkeypatch):
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: pytest.fail("trained with a bad setting"))
    with pytest.raises(ValueError, match=message):
        training.fine_tune(_data(), **{**TINY, **kwargs})


# === The command, as users run it ===

CLI = ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32", "--batch-size", "8"]
CLI += ["--augmentation", "none", "--seed", "0"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tfresnet.finetune", *CLI, *args]


def _cli(*args: str) -> subprocess.CompletedProcess:
    completed = subprocess.run(_command(*args), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _logs(output_dir) -> dict[str, list[dict]]:
    return {phase: read_log(os.path.join(output_dir, f"log_{phase}.csv")) for phase in ("head", "fine_tune")}


def test_the_command_without_a_validation_set_reports_on_the_training_images(tmp_path, capsys):
    write_image_folder(str(tmp_path / "images"), num_classes=2, images_per_class=6, size=32)
    output_dir = tmp_path / "run"
    run = ["--data-dir", str(tmp_path / "images"), "--val-split", "0", "--head-epochs", "1", "--epochs", "1"]
    assert main([*CLI, *run, "--output-dir", str(output_dir)]) == 0
    stdout = capsys.readouterr().out

    report = read_json(str(output_dir / "report.json"))
    assert report["evaluated_on"] == "training (evaluation transform)"
    assert report["num_images"] == 12
    assert json.loads(stdout.strip().splitlines()[-1])["evaluated_on"] == report["evaluated_on"]
    logs = _logs(output_dir)
    assert [len(logs["head"]), len(logs["fine_tune"])] == [1, 1]
    assert all(set(row) == {"epoch", "loss", "accuracy"} for rows in logs.values() for row in rows)
    assert read_json(str(output_dir / "best.json"))["monitor"] == "loss"


def _start(command: list[str], stderr_path) -> subprocess.Popen:
    with open(stderr_path, "w") as stderr:  # a file, not a pipe nobody reads while it runs
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)


def _kill_once(process: subprocess.Popen, done) -> None:
    """SIGKILLs `process` as soon as `done()` holds (it must not end before)."""
    deadline = time.monotonic() + 540
    while not done():
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill the run never came"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@pytest.mark.slow
def test_a_killed_command_resumes_and_keeps_its_best_epoch(tmp_path):
    images, killed_dir, reference_dir = (str(tmp_path / name) for name in ("images", "killed", "reference"))
    write_image_folder(images, images_per_class=10, size=32)
    run = ["--data-dir", images, "--val-split", "0.3", "--head-epochs", "2", "--epochs", "4"]
    run += ["--patience", "0"]
    reference = _start(_command(*run, "--output-dir", reference_dir), tmp_path / "reference.err")
    killed = _start(_command(*run, "--output-dir", killed_dir), tmp_path / "killed.err")
    _kill_once(killed, lambda: read_log(os.path.join(killed_dir, "log_fine_tune.csv")))
    at_kill = _logs(killed_dir)
    assert not os.path.exists(os.path.join(killed_dir, "training_done.json"))
    # The uninterrupted run is only needed up to the end of its training.
    _kill_once(reference, lambda: os.path.exists(os.path.join(reference_dir, "training_done.json")))

    completed = _cli(*run, "--output-dir", killed_dir, "--resume")

    logs, reference_logs = _logs(killed_dir), _logs(reference_dir)
    for phase, epochs in (("head", 2), ("fine_tune", 4)):  # every epoch once, those before the kill kept
        assert [row["epoch"] for row in logs[phase]] == list(range(epochs))
        assert logs[phase][: len(at_kill[phase])] == at_kill[phase]
    # Up to the kill, the run is the uninterrupted one, to the bit. The resumed process goes on
    # from the last epoch before the kill, but draws its batches in another order (a fresh
    # process starts the shuffle again), so its epochs come close to the uninterrupted ones only.
    assert at_kill["head"] == reference_logs["head"]
    assert at_kill["fine_tune"] == reference_logs["fine_tune"][: len(at_kill["fine_tune"])]
    first = len(at_kill["fine_tune"])  # the first epoch of the resumed process
    assert 1 <= first < 4
    resumed, before, uninterrupted = (
        logs["fine_tune"][first],
        logs["fine_tune"][first - 1],
        reference_logs["fine_tune"][first],
    )
    # A restart of the phase would fall back to the validation loss of its first epoch, well
    # above the next ones: the resumed epoch lands near the uninterrupted one instead.
    assert resumed["loss"] < 2 * before["loss"], "the resumed run did not go on from the kill"
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=0.1)

    scores = [(row["val_accuracy"], phase, row["epoch"]) for phase in logs for row in logs[phase]]
    best_score, phase, epoch = max(scores, key=lambda score: score[0])  # the first of the best
    assert read_json(os.path.join(killed_dir, "best.json"))["epoch"] == {"phase": phase, "epoch": epoch}
    report = read_json(os.path.join(killed_dir, "report.json"))
    assert report["accuracy"] == pytest.approx(best_score, abs=1e-6)
    assert (report["num_images"], report["evaluated_on"]) == (9, "validation")
    assert json.loads(completed.stdout.strip().splitlines()[-1])["accuracy"] == report["accuracy"]
    reference_scores = [row["val_accuracy"] for phase in reference_logs for row in reference_logs[phase]]
    assert read_json(os.path.join(reference_dir, "best.json"))["value"] == max(reference_scores)


# === The evaluation crop ===


def test_the_run_records_the_datas_crop_for_the_export():
    images = np.random.default_rng(0).integers(0, 256, (12, 40, 40, 3), dtype=np.uint8)
    data = tfresnet.from_arrays(images, np.arange(12) % 3, image_size=32, val_split=0, crop_fraction=0.8)
    result = tfresnet.fine_tune(
        data, backbone="resnet-test", weights=None, head_epochs=1, epochs=0, seed=0, verbose=0
    )
    assert result.config["crop_fraction"] == 0.8


def test_pretrained_weights_evaluated_at_another_crop_are_warned_of(tmp_path):
    """torchvision's V2 weights were evaluated at 224 of 232 px; data at the default 224 of
    256 gets a warning that names the fix, before anything is built."""
    data = _data()
    fix = r"crop_fraction=tfresnet.eval_crop_fraction\('resnet50-torchvision'"
    with pytest.warns(UserWarning, match=fix):
        with pytest.raises((ValueError, OSError)):
            tfresnet.fine_tune(
                data,
                backbone="resnet50-torchvision",
                weights=str(tmp_path / "resnet50-11ad3fa6.pth"),  # V2's file name; no such file
                epochs=0,
                verbose=0,
            )


# === Multi-label ===


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("multi_label_run"))
    settings = dict(TINY, head_epochs=3, epochs=2, learning_rate=3e-3, label_smoothing=0.1, mixup=0.2, seed=0)
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _recording_fit(monkeypatch)
        result = training.fine_tune(_multi_label_data(), output_dir=output_dir, **settings)
    return types.SimpleNamespace(result=result, output_dir=output_dir, fit_calls=calls, settings=settings)


def test_a_multi_label_run_trains_a_sigmoid_per_label_on_weighted_binary_crossentropy(multi_label_run):
    result, data = multi_label_run.result, _multi_label_data()
    assert tfresnet.models.is_multi_label(result.model)
    assert set(result.history) == {
        "loss",
        "mean_average_precision",
        "val_loss",
        "val_mean_average_precision",
        "phase",
    }
    assert all(call["class_weight"] is None for call in multi_label_run.fit_calls)
    loss = result.model.loss
    assert type(loss).__name__ == "LabelWeightedCrossentropy" and loss.label_smoothing == pytest.approx(0.1)
    counts = np.array(data.class_counts)
    np.testing.assert_allclose(loss.positive_weights, data.num_train / (2 * counts))
    probabilities = result.model.predict(next(iter(data.validation))[0], verbose=0)
    assert probabilities.shape == (8, 3) and not np.allclose(probabilities.sum(axis=1), 1)


def test_a_multi_label_run_keeps_its_best_validation_map_epoch_and_its_thresholds(multi_label_run):
    result, output_dir = multi_label_run.result, multi_label_run.output_dir
    best = read_json(os.path.join(output_dir, "best.json"))
    scores = result.history["val_mean_average_precision"]
    assert best["monitor"] == "val_mean_average_precision" and best["value"] == pytest.approx(max(scores))
    config = read_json(os.path.join(output_dir, "config.json"))
    assert config["multi_label"] is True and config["thresholds"] == result.thresholds
    assert len(result.thresholds) == 3 and all(0 < t < 1 for t in result.thresholds)
    assert result.thresholds == training.targets.run_thresholds(result.model, _multi_label_data())


def test_a_finished_multi_label_run_resumes_to_the_same_model_and_thresholds(multi_label_run):
    again = training.fine_tune(
        _multi_label_data(), output_dir=multi_label_run.output_dir, resume=True, **multi_label_run.settings
    )
    assert again.thresholds == multi_label_run.result.thresholds
    for expected, actual in zip(multi_label_run.result.model.weights, again.model.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())


def _multi_label_data():
    return make_multi_label_data()
