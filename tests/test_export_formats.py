"""LiteRT and ONNX exports: the same probabilities as the Keras model (float: 1e-4, float16:
1e-2, int8: the same top-1 labels), the SavedModel's interface, labels.txt beside each file,
conversion from a SavedModel folder, the export command, and bad input.

The int8 checks need a trained model (on random weights every class is about as likely, and
int8 rounding decides the label): a tiny ResNet trained for a few seconds on a learnable folder.
"""

import glob
import itertools
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import write_image_folder

import tfresnet
from tfresnet.export import __main__ as command
from tfresnet.export import litert, saved_model
from tfresnet.export import runtime as runtime_module
from tfresnet.export.formats import check_export_request, compare, export_formats, predict_all
from tfresnet.export.kinds import FILE_FORMATS, QUANTIZATIONS
from tfresnet.export.onnx_export import export_onnx
from tfresnet.export.runtime import LiteRTRuntime, OnnxRuntime, load_runtime
from tfresnet.files import current_umask
from tfresnet.models.classifier import compile_classifier, one_hot_labels

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`(model, class_names, folders, held-out data)`: a tiny ResNet trained on 3 x 20 images,
    and 3 x 10 images of the same classes it never saw."""
    root = tmp_path_factory.mktemp("formats")
    folders = {"train": str(root / "train"), "held_out": str(root / "held_out")}
    write_image_folder(folders["train"], images_per_class=20, size=40, seed=0)
    write_image_folder(folders["held_out"], images_per_class=10, size=40, seed=5)
    options = {"image_size": IMAGE_SIZE, "batch_size": 16, "val_split": 0, "augmentation": "none", "seed": 0}
    data = tfresnet.from_folder(folders["train"], **options)
    held_out = tfresnet.from_folder(folders["held_out"], **options)
    keras.utils.set_random_seed(0)
    model = tfresnet.build_classifier(
        3, backbone="resnet-tiny", weights=None, image_size=IMAGE_SIZE, dropout=0.0, freeze_until=0
    )
    compile_classifier(model, learning_rate=3e-3, jit_compile=False)
    model.fit(data.train.map(one_hot_labels(3)), epochs=6, shuffle=False, verbose=0)
    return model, data.class_names, folders, held_out


@pytest.fixture(scope="module")
def keras_exports(trained, tmp_path_factory):
    """`export_formats` of the trained model: float32 LiteRT and ONNX files, measured on the held-out set."""
    model, class_names, _, held_out = trained
    output_dir = str(tmp_path_factory.mktemp("run"))
    figures = export_formats(
        model,
        output_dir,
        ["saved_model", "litert", "onnx"],
        validation=held_out.train_evaluation,
        class_names=class_names,
    )
    return output_dir, figures


@pytest.fixture(scope="module")
def held_out_images(trained):
    """`(images, labels, Keras probabilities)` of the held-out set, evaluation transform."""
    model, _, _, held_out = trained
    outputs = predict_all(held_out.train_evaluation, {"keras": model.predict_on_batch, "images": lambda x: x})
    return outputs["images"], outputs["labels"], outputs["keras"]


@pytest.fixture(scope="module")
def saved_model_dir(trained, tmp_path_factory):
    model, class_names, _, _ = trained
    return saved_model.export_saved_model(
        model, str(tmp_path_factory.mktemp("saved") / "1"), class_names=class_names
    )


# === Float exports: the Keras model's probabilities and the SavedModel's interface ===


def test_litert_float32_computes_the_keras_probabilities_with_the_savedmodel_interface(
    keras_exports, held_out_images, trained
):
    output_dir, _ = keras_exports
    images, _, expected = held_out_images
    runtime = load_runtime(os.path.join(output_dir, "model.tflite"))
    np.testing.assert_allclose(runtime.probabilities(images), expected, atol=1e-4)
    np.testing.assert_allclose(runtime.probabilities(images[:1]), expected[:1], atol=1e-4)  # batch resized

    interpreter = runtime._interpreter
    assert list(interpreter.get_signature_list().values()) == [
        {"inputs": ["images"], "outputs": ["probabilities"]}
    ]
    (details,) = interpreter.get_input_details()
    assert details["dtype"] == np.float32
    assert list(details["shape_signature"]) == [-1, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert not {op for op in runtime.op_names() if op.startswith("Flex") or op == "CUSTOM"}
    assert runtime.class_names == trained[1]


def test_onnx_computes_the_keras_probabilities_with_the_savedmodel_interface(keras_exports, held_out_images):
    output_dir, _ = keras_exports
    images, _, expected = held_out_images
    runtime = load_runtime(os.path.join(output_dir, "model.onnx"))
    assert isinstance(runtime, OnnxRuntime)
    np.testing.assert_allclose(runtime.probabilities(images), expected, atol=1e-4)
    (image_input,), outputs = runtime._session.get_inputs(), runtime._session.get_outputs()
    assert (image_input.name, image_input.type) == ("images", "tensor(float)")
    assert image_input.shape == ["batch", IMAGE_SIZE, IMAGE_SIZE, 3]
    assert [(output.name, output.shape) for output in outputs] == [("probabilities", ["batch", 3])]


def test_export_formats_reports_agreement_with_the_keras_model(keras_exports, held_out_images, trained):
    output_dir, figures = keras_exports
    _, labels, expected = held_out_images
    assert set(figures) == {"litert", "onnx"}
    keras_accuracy = float(np.mean(expected.argmax(1) == labels))
    assert keras_accuracy >= 0.9  # the model learned: agreement means something
    for format, name in (("litert", "model.tflite"), ("onnx", "model.onnx")):
        entry = figures[format]
        assert entry["path"] == os.path.join(output_dir, name)
        assert entry["size_bytes"] == os.path.getsize(entry["path"])
        assert entry["quantization"] == "none"
        assert entry["agreement"] == 1.0 and entry["max_abs_difference"] <= 1e-4
        assert entry["reference_accuracy"] == pytest.approx(keras_accuracy)
    for name in ("model.tflite", "model.onnx"):
        with open(os.path.join(output_dir, f"{name}.labels.txt")) as file:
            assert file.read().splitlines() == trained[1]
    assert not os.path.exists(os.path.join(output_dir, "labels.txt"))
    mode = 0o666 & ~current_umask()  # the umask's, not mkstemp's owner-only 0600
    for name in ("model.tflite", "model.onnx", "model.tflite.labels.txt", "model.onnx.labels.txt"):
        assert os.stat(os.path.join(output_dir, name)).st_mode & 0o777 == mode, name


@pytest.mark.slow
@pytest.mark.parametrize("quantization, tolerance", [("float16", 1e-2), ("dynamic", None)])
def test_float16_and_dynamic_range(
    trained, held_out_images, keras_exports, quantization, tolerance, tmp_path
):
    model, class_names, _, _ = trained
    images, _, expected = held_out_images
    path = litert.export_litert(
        model, str(tmp_path / "model.tflite"), quantization=quantization, class_names=class_names
    )
    probabilities = load_runtime(path).probabilities(images)
    if tolerance is not None:
        np.testing.assert_allclose(probabilities, expected, atol=tolerance)
    assert compare(expected, probabilities)["agreement"] >= 0.95
    float_size = keras_exports[1]["litert"]["size_bytes"]
    # Far from the 0.5 and 0.25 of a full-size ResNet50: the tiny network's 175 layers weigh
    # little next to the file's own structure.
    assert os.path.getsize(path) < (0.7 if quantization == "float16" else 0.5) * float_size


# === From the SavedModel folder, with the command: int8 ===


def test_int8_from_the_savedmodel_by_command_agrees_and_is_integer_inside(
    saved_model_dir, trained, held_out_images, keras_exports, tmp_path, capfd
):
    """Calibrated on the training folder, measured on the held-out folder."""
    path, folders = str(tmp_path / "model.tflite"), trained[2]
    argv = [saved_model_dir, "--format", "litert", "--quantize", "int8", "--output", path]
    argv += ["--calibration-data", folders["train"], "--eval-data", folders["held_out"]]
    assert command.main(argv) == 0
    summary = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == path and summary["format"] == "litert" and summary["quantization"] == "int8"
    assert summary["size_bytes"] == os.path.getsize(path)
    assert summary["size_bytes"] < 0.5 * keras_exports[1]["litert"]["size_bytes"]

    images, labels, expected = held_out_images
    assert summary["eval_images"] == len(labels)
    assert summary["saved_model_accuracy"] == pytest.approx(float(np.mean(expected.argmax(1) == labels)))
    runtime = load_runtime(path)
    probabilities = runtime.probabilities(images)
    assert summary["agreement"] == pytest.approx(compare(expected, probabilities)["agreement"])
    assert summary["agreement"] >= 0.9
    assert summary["accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(1) == labels)))

    interpreter = runtime._interpreter
    assert interpreter.get_input_details()[0]["dtype"] == np.float32  # the interface stays float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    weights = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8 and len(t["shape"]) == 4]
    assert len(weights) >= 50  # the convolutions' kernels are int8
    assert {"QUANTIZE", "DEQUANTIZE"} <= runtime.op_names()
    with open(f"{path}.labels.txt") as file:
        assert file.read().splitlines() == trained[1]


@pytest.mark.slow
def test_onnx_from_the_savedmodel_by_the_command_as_users_run_it(
    saved_model_dir, trained, held_out_images, tmp_path
):
    """A fresh process, with TensorFlow's logging left at its default: only the JSON line shows."""
    path = str(tmp_path / "model.onnx")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfresnet.export",
            saved_model_dir,
            "--format",
            "onnx",
            "--output",
            path,
            "--eval-data",
            trained[2]["held_out"],
        ],
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr == ""
    (line,) = completed.stdout.splitlines()
    summary = json.loads(line)
    assert summary["agreement"] == 1.0 and summary["max_abs_difference"] <= 1e-4
    assert summary["accuracy"] == summary["saved_model_accuracy"]
    images, _, expected = held_out_images
    np.testing.assert_allclose(load_runtime(path).probabilities(images), expected, atol=1e-4)


# === Bad input ===


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "litert", "--quantize", "int8"], "--quantize int8 needs --calibration-data"),
        (["--format", "onnx", "--quantize", "dynamic"], "--quantize dynamic applies to --format litert"),
        (["--format", "tflite"], "invalid choice: 'tflite'"),
        (["--format", "onnx", "--missing"], "Model not found"),
        (["--format", "onnx", "--output-suffix", ".tflite"], "--output must end with .onnx"),
        (["--format", "onnx", "--eval-data", "wrong-classes"], "has classes the model does not know"),
        (["--format", "onnx", "--no-variables"], "has no variables/ (its weights)"),
        (["--format", "litert", "--cut-variables"], "files are damaged or incomplete"),
    ],
)
def test_command_bad_input_exits_2_with_one_line_and_writes_nothing(
    saved_model_dir, make_image_folder, tmp_path, capfd, flags, message
):
    model, output = saved_model_dir, str(tmp_path / "out" / "model.onnx")
    if "--missing" in flags:
        flags, model = flags[:-1], str(tmp_path / "absent")
    if flags[-1] in ("--no-variables", "--cut-variables"):
        damage, flags, model = flags[-1], flags[:-1], str(tmp_path / "damaged")
        shutil.copytree(saved_model_dir, model)
        if damage == "--no-variables":
            shutil.rmtree(os.path.join(model, "variables"))
        else:
            (data,) = glob.glob(os.path.join(model, "variables", "variables.data-*"))
            os.truncate(data, os.path.getsize(data) // 2)
        output = output.replace(".onnx", FILE_FORMATS[flags[1]].suffix)
    if "--output-suffix" in flags:
        flags, output = flags[:-2], str(tmp_path / "out" / "model.tflite")
    if "wrong-classes" in flags:
        flags = [*flags[:-1], make_image_folder(num_classes=2, images_per_class=2)]
        os.rename(os.path.join(flags[-1], "green"), os.path.join(flags[-1], "purple"))
    try:
        code = command.main([model, *flags, "--output", output])
    except SystemExit as exit:  # argparse
        code = exit.code
    lines = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not os.path.exists(output) and not os.path.exists(f"{output}.labels.txt")


def test_a_model_the_converter_refuses_is_said_in_one_line(saved_model_dir, tmp_path, capfd, monkeypatch):
    reason = "<unknown>:0: error: 'tf.Foo' op is neither a custom op nor a flex op"

    def refuse(*args, **kwargs):
        raise RuntimeError(f"Conversion failed.\n{reason}\nnote: see the MLIR dump")

    monkeypatch.setattr(litert, "export_litert", refuse)
    output = str(tmp_path / "model.tflite")
    code = command.main([saved_model_dir, "--format", "litert", "--output", output])
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert code == 1 and line.endswith(f"to litert: {reason}")
    assert os.listdir(tmp_path) == []


def test_library_bad_input_writes_nothing(trained, tmp_path):
    model, class_names, _, _ = trained
    path = str(tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="quantization='int8' needs representative_data"):
        litert.export_litert(model, path, quantization="int8", class_names=class_names)
    with pytest.raises(ValueError, match="quantization must be one of .* Received: quantization='int4'"):
        litert.export_litert(model, path, quantization="int4", class_names=class_names)
    with pytest.raises(ValueError, match="class_names is required to export a Keras model"):
        litert.export_litert(model, path)
    with pytest.raises(ValueError, match="There are 2 class names but the model predicts 3 classes"):
        export_onnx(model, str(tmp_path / "model.onnx"), class_names=["a", "b"])
    with pytest.raises(ValueError, match="must end with .onnx"):
        export_onnx(model, path, class_names=class_names)
    with pytest.raises(ValueError, match=r"images of shape \(32, 32, 3\)"):
        litert.export_litert(
            model,
            path,
            quantization="int8",
            representative_data=np.zeros((4, 40, 40, 3)),
            class_names=class_names,
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "formats, quantize, message",
    [
        (["saved_model", "tflite"], "none", r"Unknown export formats \['tflite'\]"),
        (["saved_model", "onnx"], "int8", "applies to the LiteRT export: add litert"),
        (["litert"], "int4", "quantize must be one of"),
    ],
)
def test_export_requests_are_checked_before_training(formats, quantize, message):
    with pytest.raises(ValueError, match=message):
        check_export_request(formats, quantize)


def test_a_missing_runtime_names_the_extra_to_install(monkeypatch):
    assert check_export_request(["saved_model", "litert", "litert"], "int8") == ["saved_model", "litert"]
    monkeypatch.setitem(
        runtime_module.RUNTIME_PACKAGES, "litert", ("no_such_litert", "pip install 'tfresnet[litert]'")
    )
    with pytest.raises(
        ImportError, match=r"Running litert models needs no_such_litert: pip install 'tfresnet\[litert\]'"
    ):
        check_export_request(["litert"])


def test_calibration_images_come_from_arrays_or_labelled_batches(trained):
    _, _, _, held_out = trained
    images = litert.calibration_images(held_out.train_evaluation, IMAGE_SIZE, limit=20)
    assert images.shape == (20, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.float32
    first = next(iter(held_out.train_evaluation))[0].numpy()
    np.testing.assert_array_equal(images[:16], first)
    assert litert.calibration_images(first[0], IMAGE_SIZE).shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_a_conversion_that_computes_something_else_is_refused_and_nothing_replaced(
    keras_exports, trained, tmp_path, monkeypatch
):
    """What TFLite writes for a model saved without its weights (NaN) or another model's file
    must never replace an export: the probe batch catches it."""
    output_dir, _ = keras_exports
    with open(os.path.join(output_dir, "model.tflite"), "rb") as file:
        trained_file = file.read()
    other = tfresnet.build_classifier(3, backbone="resnet-tiny", weights=None, image_size=IMAGE_SIZE)
    target = tmp_path / "model.tflite"
    target.write_bytes(b"previous export")
    monkeypatch.setattr(litert, "convert", lambda *args, **kwargs: trained_file)
    with pytest.raises(
        RuntimeError, match="differs from the model by .* on a probe batch; nothing was written"
    ):
        litert.export_litert(other, str(target), class_names=trained[1])
    assert target.read_bytes() == b"previous export" and sorted(os.listdir(tmp_path)) == ["model.tflite"]


def test_the_commands_choices_are_the_librarys():
    """Both commands take their formats and quantizations from the one table the exporters
    and the runtimes read."""
    from tfresnet.cli.finetune_flags import build_parser as finetune_parser

    def export_flags(format, quantize):
        return ["models/1", "--format", format, "--quantize", quantize, "--output", "x"]

    for format, quantize in itertools.product(FILE_FORMATS, QUANTIZATIONS):
        assert command.build_parser().parse_args(export_flags(format, quantize)).quantize == quantize
        assert finetune_parser().parse_args(["--data-dir", "d", "--quantize", quantize]).quantize == quantize
    for flags in (export_flags("tflite", "none"), export_flags("onnx", "int4")):
        with pytest.raises(SystemExit):
            command.build_parser().parse_args(flags)
    assert list(FILE_FORMATS) == ["litert", "onnx"]
    assert runtime_module.SUFFIXES == {".tflite": "litert", ".onnx": "onnx"}
    with pytest.raises(ValueError, match="quantization must be one of"):
        litert.export_litert("unused", "unused.tflite", quantization="int4")


def test_the_exports_are_public():
    import tfresnet.export

    assert tfresnet.export_litert is tfresnet.export.export_litert is litert.export_litert
    assert tfresnet.export_onnx is tfresnet.export.export_onnx is export_onnx


# === Every backbone kind ===


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["resnet50-torchvision", "hub"])
def test_real_backbones_convert_to_litert(backbone, hub_module_dir, tmp_path):
    """Full-size networks with random weights at 32 px: torchvision's explicit padding, a Hub
    module's restored functions. (ONNX of each is measured by `benchmarks/formats.py --backbones`.)"""
    name = f"hub:{hub_module_dir}" if backbone == "hub" else backbone
    model = tfresnet.build_classifier(3, backbone=name, weights=None, image_size=IMAGE_SIZE)
    path = litert.export_litert(model, str(tmp_path / "model.tflite"), class_names=["a", "b", "c"])
    images = np.random.default_rng(0).uniform(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    runtime = LiteRTRuntime(path)
    np.testing.assert_allclose(runtime.probabilities(images), model.predict(images, verbose=0), atol=1e-4)
    assert not {op for op in runtime.op_names() if op.startswith("Flex") or op == "CUSTOM"}


def test_two_files_in_one_folder_keep_their_own_names_written_after_the_model(
    keras_exports, trained, tmp_path, monkeypatch
):
    """Two exports in one folder never share names, and a kill between the model and its names
    leaves a model without names (said on loading), never old names beside a new model."""
    output_dir, _ = keras_exports
    with open(os.path.join(output_dir, "model.tflite"), "rb") as file:
        content = file.read()
    from tfresnet.export import common

    common.write_model_and_labels(str(tmp_path / "a.tflite"), content, ["x", "y", "z"])
    common.write_model_and_labels(str(tmp_path / "b.tflite"), content, ["p", "q", "r"])
    assert load_runtime(tmp_path / "a.tflite").class_names == ["x", "y", "z"]
    assert load_runtime(tmp_path / "b.tflite").class_names == ["p", "q", "r"]

    written = []
    write_atomically = common.write_atomically

    def killed_after_the_model(path, write):
        if path.endswith(".labels.txt"):
            raise KeyboardInterrupt  # the kill, once the model is in place
        write_atomically(path, write)
        written.append(path)

    monkeypatch.setattr(common, "write_atomically", killed_after_the_model)
    with pytest.raises(KeyboardInterrupt):
        common.write_model_and_labels(str(tmp_path / "a.tflite"), content, ["new1", "new2", "new3"])
    assert written == [str(tmp_path / "a.tflite")]
    with pytest.raises(FileNotFoundError, match=r"a\.tflite\.labels\.txt"):
        load_runtime(tmp_path / "a.tflite")
