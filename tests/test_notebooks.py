"""Tests of notebooks/: stored clean, and run offline as CI runs them.

Each notebook's parameters cell holds its Colab defaults (ImageNet weights, real photos). As
papermill does, the run inserts a cell after it that overrides them: random weights, 32 px, a
tiny image folder from `tfresnet.examples`, one epoch or less. Notebooks run with nbclient in
`tmp_path`, where their files land, in a kernel of the Python running the tests; the first cell
that raises fails the test with that cell and its traceback.
"""

import ast
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from tfresnet.examples import write_shapes_folder

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
COLAB = "https://colab.research.google.com/github/tfresnet/tfresnet/blob/main/notebooks/"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
TINY = {"weights": None, "image_size": 32, "batch_size": 8}
SHAPES = "shapes"  # written in tmp_path, the notebooks' working directory
HUB_MODULE = "hub:<the module of conftest.save_hub_feature_vector>"
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
    "04_serving.ipynb": {"export_dir": "models/offline/1", "image_size": 32},
}
# PNG images each notebook displays (report figures, predictions, the trials' plot).
IMAGES_SHOWN = {
    "01_quickstart.ipynb": 3,
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


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_offline(name, tmp_path, request):
    parameters = dict(CI_PARAMETERS[name])
    if parameters.get("backbone") == HUB_MODULE:
        parameters["backbone"] = "hub:" + request.getfixturevalue("hub_module_dir")
    if parameters.get("image_folder") == SHAPES:
        write_shapes_folder(str(tmp_path / SHAPES), num_classes=3, images_per_class=8, size=32)
    notebook = read(name)
    notebook.cells.insert(parameters_cells(notebook)[0] + 1, injected_parameters(parameters))
    notebook.cells.insert(0, new_code_cell(f"import sys\nassert sys.executable == {sys.executable!r}"))

    client = NotebookClient(
        notebook,
        km=this_python_kernel(),
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(cleanup_kc=True)  # raises CellExecutionError at the first error

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == IMAGES_SHOWN[name]
