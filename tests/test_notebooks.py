"""Tests of notebooks/: stored clean, and run offline as CI runs them.

Each notebook's parameters cell holds its Colab defaults (ResNet50 or a Hub module, ImageNet
weights, real photos). As papermill does, the run inserts a cell after it that overrides them: the
tiny `"resnet-test"` backbone with random weights (the test network as a Hub-format
module, from `tests/conftest.py`, for `02_tfhub_backbone.ipynb`), 32 px, a tiny image folder from
`tfresnet.examples`, one epoch or less. Notebooks run with nbclient in a temporary folder, where
their files land, in a kernel of the Python running the tests; the first cell that raises fails
the test with that cell and its traceback. Each notebook runs once per module: the tests of what
it prints and writes read the same run.
"""

import ast
import base64
import csv
import json
import re
import sys
from pathlib import Path
from typing import Callable

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from tfresnet.data.examples import write_shapes_folder

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
COLAB = "https://colab.research.google.com/github/tfresnet/tfresnet/blob/main/notebooks/"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
TINY = {"backbone": "resnet-test", "weights": None, "image_size": 32, "batch_size": 8}
SHAPES = "shapes"  # written in the working directory of the notebook
SHAPES_CLASSES, SHAPES_PER_CLASS = 3, 8
HUB_MODULE = "hub:<the module of the conftest fixture tiny_hub_module_dir>"
# The overrides of each notebook's parameters in CI.
CI_PARAMETERS = {
    "01_quickstart.ipynb": {"image_folder": SHAPES, **TINY, "head_epochs": 1, "epochs": 0},
    "02_tfhub_backbone.ipynb": {
        "backbone": HUB_MODULE,
        "image_folder": SHAPES,
        "image_size": 32,
        "batch_size": 8,
        "unfreeze_last": 5,
        "head_epochs": 0,  # phase 2 alone: the partly unfrozen module trains
        "epochs": 1,
    },
    "03_hyperparameter_search.ipynb": {
        "image_folder": SHAPES,
        **TINY,
        "tuner": "random",
        "max_trials": 2,
        "tune_epochs": 1,
        "head_epochs": 1,
        "epochs": 0,
    },
    # Nothing there: the notebook exports its offline fallback.
    "04_serving.ipynb": {"export_dir": "models/offline/1", "backbone": "resnet-test", "image_size": 32},
}
# What the notebooks print and write, in their working directory.
DIFFERENCE = "max abs difference"  # between two routes to the same probabilities
TOLERANCE = 1e-5  # float32 round-off; a crop or a decoding that differs moves them by far more
SERVING_NOTEBOOKS = ["01_quickstart.ipynb", "02_tfhub_backbone.ipynb"]  # they serve a file's bytes
RUN_DIRS = {  # the output_dir of fine_tune
    "01_quickstart.ipynb": "runs/quickstart",
    "02_tfhub_backbone.ipynb": "runs/hub",
    "03_hyperparameter_search.ipynb": "runs/best",
}
MAX_TINY_EXPORT = 4 << 20  # bytes of a "resnet-test" classifier's variables; ResNet50's: 90 MiB
QUICKSTART_CSV = "labels.csv"  # the quickstart's CSV of the image folder, with a split column
QUICKSTART_GRID = "augmented_batch.png"  # its grid of augmented, mixed batches, in its run folder
# PNG images each notebook displays (the augmented batch, report figures, predictions, the trials' plot).
IMAGES_SHOWN = {
    "01_quickstart.ipynb": 5,
    "02_tfhub_backbone.ipynb": 2,
    "03_hyperparameter_search.ipynb": 1,
    "04_serving.ipynb": 0,
}
NOTEBOOKS = sorted(CI_PARAMETERS)


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def parameters_cells(notebook: nbformat.NotebookNode) -> list[int]:
    return [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]


def assigned_names(source: str) -> set[str]:
    tree = ast.parse(source)
    return {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets}


def injected_parameters(parameters: dict) -> nbformat.NotebookNode:
    lines = ["# Injected by tests/test_notebooks.py: an offline run on tiny data"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def this_python_kernel() -> KernelManager:
    """A manager of ipykernel's built-in `python3` kernel, which runs `sys.executable`.

    Without other kernel directories, no kernelspec installed elsewhere on the machine (in
    ~/.local/share/jupyter, say) can start the notebooks in another Python.
    """
    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


# === Stored notebooks ===


def test_every_notebook_runs_in_ci():
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_starts_with_the_colab_badge(name):
    first = read(name).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.splitlines()[0] == f"[![Open In Colab]({BADGE_IMAGE})]({COLAB}{name})"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    notebook = read(name)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {cell.id} of {name} has outputs: clear them"
            assert cell.execution_count is None, f"cell {cell.id} of {name} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_has_one_parameters_cell_naming_what_ci_overrides(name):
    notebook = read(name)
    found = parameters_cells(notebook)
    assert len(found) == 1, f"{name} has {len(found)} cells tagged 'parameters'"
    assert set(CI_PARAMETERS[name]) <= assigned_names(notebook.cells[found[0]].source)


def test_notebooks_run_in_this_python():
    command = this_python_kernel().format_kernel_cmd()
    assert command[0] == sys.executable


# === Offline runs ===


def execute(name: str, folder: Path, hub_module_dir: Callable[[], str]) -> nbformat.NotebookNode:
    """Runs notebook `name` in `folder` with CI's parameters; returns it with its outputs.

    `hub_module_dir()` gives the folder of the Hub-format module, built only when needed.
    """
    parameters = dict(CI_PARAMETERS[name])
    if parameters.get("backbone") == HUB_MODULE:
        parameters["backbone"] = "hub:" + hub_module_dir()
    if parameters.get("image_folder") == SHAPES:
        write_shapes_folder(
            str(folder / SHAPES), num_classes=SHAPES_CLASSES, images_per_class=SHAPES_PER_CLASS, size=32
        )
    notebook = read(name)
    notebook.cells.insert(parameters_cells(notebook)[0] + 1, injected_parameters(parameters))
    notebook.cells.insert(0, new_code_cell(f"import sys\nassert sys.executable == {sys.executable!r}"))
    client = NotebookClient(
        notebook,
        km=this_python_kernel(),
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(cleanup_kc=True)  # raises CellExecutionError at the first error
    return notebook


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    """`run(name)` -> `(notebook with outputs, its working folder)`, each notebook run once.

    A run that raised raises again for every test of that notebook, without running it again.
    """
    runs = {}

    def run_once(name: str) -> tuple[nbformat.NotebookNode, Path]:
        if name not in runs:
            folder = tmp_path_factory.mktemp(Path(name).stem)
            try:
                runs[name] = (
                    execute(name, folder, lambda: request.getfixturevalue("tiny_hub_module_dir")),
                    folder,
                )
            except Exception as error:  # kept, raised again below
                runs[name] = error
        if isinstance(runs[name], Exception):
            raise runs[name]
        return runs[name]

    return run_once


def outputs_of(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def stdout(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.text
        for output in outputs_of(notebook)
        if output.output_type == "stream" and output.name == "stdout"
    )


def printed(notebook: nbformat.NotebookNode, name: str) -> list[str]:
    """The values of the stdout lines `<name>: <value>`, in order."""
    return re.findall(rf"^{re.escape(name)}: (.*)$", stdout(notebook), flags=re.MULTILINE)


def shown_images(notebook: nbformat.NotebookNode) -> list[bytes]:
    """The PNG files the notebook displayed, in order."""
    return [
        base64.b64decode(output.data["image/png"])
        for output in outputs_of(notebook)
        if "image/png" in output.get("data", {})
    ]


def read_json(path: Path) -> dict:
    with open(path) as file:
        return json.load(file)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_offline(name, run):
    notebook, _ = run(name)
    assert not [output for output in outputs_of(notebook) if output.output_type == "error"]
    assert len(shown_images(notebook)) == IMAGES_SHOWN[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVING_NOTEBOOKS)
def test_notebook_serves_an_image_file_as_the_model_in_memory_predicts_it(name, run):
    notebook, folder = run(name)
    class_names = read_json(folder / RUN_DIRS[name] / "config.json")["class_names"]
    assert printed(notebook, "true label") == [class_names[0]]  # the first photo of the first class
    (served,) = printed(notebook, "served label")
    assert [served] == printed(notebook, "model label")
    (difference,) = printed(notebook, DIFFERENCE)
    assert float(difference) < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUN_DIRS))
def test_notebook_trains_the_backbone_of_its_parameters(name, run, request):
    _, folder = run(name)
    expected = CI_PARAMETERS[name]["backbone"]
    if expected == HUB_MODULE:
        expected = "hub:" + request.getfixturevalue("tiny_hub_module_dir")
    assert read_json(folder / RUN_DIRS[name] / "config.json")["backbone"] == expected


@pytest.mark.slow
def test_quickstart_loads_the_same_images_from_its_csv_file(run):
    notebook, folder = run("01_quickstart.ipynb")
    # The folder route's counts, then the CSV route's.
    (folder_train, folder_validation), (csv_train, csv_validation) = (
        (int(train), int(validation))
        for train, validation in re.findall(
            r"^(\d+) training and (\d+) validation images$", stdout(notebook), flags=re.MULTILINE
        )
    )
    assert csv_train + csv_validation == folder_train + folder_validation == SHAPES_CLASSES * SHAPES_PER_CLASS
    folder_classes, csv_classes = printed(notebook, "classes")
    assert csv_classes == folder_classes
    assert len(ast.literal_eval(csv_classes)) == SHAPES_CLASSES
    with open(folder / QUICKSTART_CSV, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == SHAPES_CLASSES * SHAPES_PER_CLASS
    assert csv_validation == sum(row["split"] == "validation" for row in rows) > 0  # its split column


@pytest.mark.slow
def test_quickstart_shows_the_grid_of_augmented_batches_it_writes(run):
    notebook, folder = run("01_quickstart.ipynb")
    grid = (folder / RUN_DIRS["01_quickstart.ipynb"] / QUICKSTART_GRID).read_bytes()
    assert grid.startswith(b"\x89PNG")
    assert grid in shown_images(notebook)


@pytest.mark.slow
def test_quickstart_evaluates_with_test_time_augmentation(run):
    notebook, _ = run("01_quickstart.ipynb")
    (validation_accuracy,) = printed(notebook, "validation accuracy")
    (accuracy,) = printed(notebook, "accuracy")
    (accuracy_tta,) = printed(notebook, "accuracy with test-time augmentation")
    assert accuracy == validation_accuracy  # the report's, without test-time augmentation
    assert 0 <= float(accuracy_tta) <= 1


@pytest.mark.slow
def test_serving_notebook_gets_the_same_probabilities_from_bytes_and_pixels(run):
    notebook, folder = run("04_serving.ipynb")
    (difference,) = printed(notebook, DIFFERENCE)
    assert float(difference) < TOLERANCE
    export_dir = folder / CI_PARAMETERS["04_serving.ipynb"]["export_dir"]
    assert read_json(export_dir / "tfresnet_config.json")["image_size"] == 32
    variables = sum(path.stat().st_size for path in (export_dir / "variables").iterdir())
    assert variables < MAX_TINY_EXPORT  # the stand-in is built on the backbone parameter


@pytest.mark.slow
def test_search_notebook_trains_and_exports_the_best_values(run):
    notebook, folder = run("03_hyperparameter_search.ipynb")
    (best,) = printed(notebook, "best")
    best = ast.literal_eval(best)
    assert best == read_json(folder / "runs/search/best_hyperparameters.json")
    trained = read_json(folder / "runs/best/config.json")
    assert {key: trained[key] for key in best} == best
    exported = read_json(folder / "models/best/1/tfresnet_config.json")
    assert {key: exported[key] for key in best} == best


@pytest.mark.slow
def test_quickstart_trains_a_multi_label_model_and_predicts_label_sets_with_its_thresholds(run):
    notebook, folder = run("01_quickstart.ipynb")
    (thresholds,) = printed(notebook, "thresholds")
    thresholds = ast.literal_eval(thresholds)
    assert len(thresholds) == 4 and all(0 < value < 1 for value in thresholds.values())
    exported = read_json(next(folder.rglob("tags/1/tfresnet_config.json")))
    assert exported["thresholds"] == pytest.approx(list(thresholds.values()), abs=1e-3)
    predictions = re.findall(
        r"^images/\d+\.jpg: given \[(.*)\], predicted (\[.*\])$", stdout(notebook), re.MULTILINE
    )
    assert len(predictions) == 4
    assert all(set(ast.literal_eval(found)) <= set(thresholds) for _, found in predictions)
