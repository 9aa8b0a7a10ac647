"""Label issues: out-of-fold probabilities, the images a run's report suspects, the check that
finds planted flipped labels (in Python and as users run the command), and the fixes fed back
as a labels CSV that trains."""

import csv
import json
import os
import subprocess
import sys

import keras_tuner
import numpy as np
import pytest
from conftest import FLIPPED, exit_code

import tfresnet
from tfresnet.check import main as check_main
from tfresnet.insight import label_fixes, label_issues
from tfresnet.tuning.hypermodels import HeadHyperModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--backbone", "resnet-test", "--weights", "none", "--image-size", "32"]


@pytest.fixture(scope="module")
def checked(flipped_folder, tmp_path_factory) -> str:
    """The command run as a user runs it (`--label-issues`): the folder of its report."""
    output = tmp_path_factory.mktemp("check")
    completed = subprocess.run(
        [sys.executable, "-m", "tfresnet.check", flipped_folder, "--label-issues", *TINY, "--seed", "0"]
        + ["--output", str(output / "dataset_report.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert "label issues" in completed.stdout
    return str(output)


def _issues(folder: str) -> list[dict]:
    with open(os.path.join(folder, label_fixes.ISSUES_FILE), newline="") as file:
        return list(csv.DictReader(file))


def test_the_check_finds_the_flipped_labels_and_suggests_their_class(checked):
    report = json.loads(open(os.path.join(checked, "dataset_report.json")).read())
    found = report["label_issues"]
    suspected = {issue["path"]: issue for issue in found["issues"]}
    assert set(FLIPPED) <= set(suspected)
    assert len(suspected) <= len(FLIPPED) + 2  # a few doubtful images at most besides
    for path, source in FLIPPED.items():
        assert suspected[path]["suggested"] == source
        assert suspected[path]["given"] == path.split("/")[0]
    probabilities = [issue["probability"] for issue in found["issues"]]
    assert probabilities == sorted(probabilities) and max(probabilities) < 0.5
    assert found["num_images"] == 42 and found["out_of_fold_accuracy"] > 0.8
    # The features went to the cache beside the report, under the search's key.
    assert [name for name in os.listdir(checked) if name.startswith("features-")]
    rows = _issues(checked)
    assert [row["path"] for row in rows] == [issue["path"] for issue in found["issues"]]
    assert list(rows[0]) == list(label_fixes.ISSUE_COLUMNS) and {row["action"] for row in rows} == {""}


def test_fixes_fed_back_make_a_labels_csv_that_trains(checked, flipped_folder, tmp_path, capsys):
    rows = _issues(checked)
    for row in rows:
        row["action"] = "relabel" if row["path"] in FLIPPED else "keep"
    rows[-1]["action"] = "drop" if rows[-1]["path"] not in FLIPPED else rows[-1]["action"]
    dropped = {row["path"] for row in rows if row["action"] == "drop"}
    issues_csv = os.path.join(checked, label_fixes.ISSUES_FILE)
    with open(issues_csv, "w", newline="") as file:
        writer = csv.DictWriter(file, label_fixes.ISSUE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    labels_csv = str(tmp_path / "fixed" / "labels.csv")
    # No DATA_DIR: the dataset is the one the check's report beside the file names.
    assert exit_code(check_main, ["--apply-fixes", issues_csv, "--output", labels_csv]) == 0
    assert f"{42 - len(dropped)} images: 3 relabelled, {len(dropped)} dropped" in capsys.readouterr().out
    data = tfresnet.from_csv(
        labels_csv, image_size=32, batch_size=8, val_split=0, augmentation="none", seed=0
    )
    assert data.num_train == 42 - len(dropped)
    with open(labels_csv, newline="") as file:
        folder = os.path.dirname(labels_csv)
        written = {
            os.path.relpath(os.path.join(folder, row["path"]), flipped_folder): row["label"]
            for row in csv.DictReader(file)
        }
    assert not dropped & set(written)
    for path, source in FLIPPED.items():
        assert written[path] == source  # relabelled to the class it came from
    kept = {path for path in written if path not in FLIPPED}
    assert all(written[path] == path.split("/")[0] for path in kept)
    result = tfresnet.fine_tune(
        data, backbone="resnet-test", weights=None, head_epochs=1, epochs=0, seed=0, verbose=0
    )
    assert np.isfinite(result.history["loss"]).all()


def test_the_python_call_on_a_set_without_a_split(flipped_folder):
    data = tfresnet.from_folder(flipped_folder, image_size=32, val_split=0, augmentation="none", seed=0)
    found = label_issues.find_label_issues(data, backbone="resnet-test", weights=None, folds=3)
    assert found["num_images"] == 42 and found["folds"] == 3
    assert set(FLIPPED) <= {os.path.relpath(issue["path"], flipped_folder) for issue in found["issues"]}


def test_out_of_fold_probabilities_come_from_heads_that_never_saw_the_image():
    """On noise with random labels a head learns its training images by heart: out of fold,
    its predictions are no better than chance."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 256)).astype(np.float32)
    labels = rng.integers(0, 3, 60)
    probabilities = label_issues.out_of_fold_probabilities(features, labels, 3, folds=5, steps=300)
    assert probabilities.shape == (60, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).mean() < 0.6
    # The same head given every image learns them by heart.
    hypermodel = HeadHyperModel(3, feature_dim=256, reuse_models=True, steps_per_execution=25)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hypermodel.fit(
        hp, model, np.tile(features, (300, 1)), np.tile(labels, 300), batch_size=64, epochs=1, verbose=0
    )
    assert (model.predict(features, verbose=0).argmax(axis=1) == labels).mean() > 0.9


def test_folds_are_stratified():
    labels = np.repeat([0, 1, 2], [10, 7, 3])
    fold = label_issues.stratified_folds(labels, 5, seed=3)
    for label in range(3):
        counts = np.bincount(fold[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(fold).max() - np.bincount(fold).min() <= 1


def test_a_run_suspects_the_labels_it_contradicts_with_confidence():
    probabilities = np.array(
        [
            [0.90, 0.05, 0.05],  # cat, right
            [0.80, 0.10, 0.10],  # cat, right
            [0.05, 0.92, 0.03],  # given cat, confidently a dog: suspected
            [0.10, 0.85, 0.05],  # dog, right
            [0.02, 0.97, 0.01],  # given fox, confidently a dog: suspected, first (fox at 0.01)
            [0.45, 0.10, 0.45],  # given fox, cat as likely: not confident
            [0.10, 0.60, 0.30],  # given fox, a dog at 0.60, under the dogs' mean of 0.78: not confident
        ]
    )
    labels = np.array([0, 0, 0, 1, 2, 2, 2])
    paths = [f"{i}.jpg" for i in range(7)]
    found = label_issues.suspected_label_errors(probabilities, labels, ["cat", "dog", "fox"], paths=paths)
    assert [(item["path"], item["given"], item["predicted"]) for item in found] == [
        ("4.jpg", "fox", "dog"),
        ("2.jpg", "cat", "dog"),
    ]
    assert found[0]["score"] == pytest.approx(0.97) and found[0]["given_probability"] == pytest.approx(0.01)
    assert label_issues.suspected_label_errors(probabilities[:2], labels[:2], ["cat", "dog", "fox"]) == []


def test_without_cleanlab_one_line_and_exit_2_before_any_work(flipped_folder, tmp_path):
    blocker = tmp_path / "site" / "cleanlab"  # an environment where importing cleanlab fails
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'cleanlab'\")\n")
    search_path = [str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    output = tmp_path / "report.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfresnet.check",
            flipped_folder,
            "--label-issues",
            *TINY,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "python -m tfresnet.check: error: Finding label issues needs the cleanlab package: "
        "pip install 'tfresnet[cleanlab]'"
    ]
    assert not output.exists() and completed.stdout == ""


def test_a_search_on_the_same_data_starts_from_the_checks_features(checked, flipped_folder, monkeypatch):
    from tfresnet.tuning import features

    cached = [name for name in os.listdir(checked) if name.startswith("features-")]
    monkeypatch.setattr(features, "_feature_extractor", lambda *args, **kwargs: pytest.fail("computed again"))
    data = tfresnet.from_folder(flipped_folder, image_size=32, seed=0, augmentation="standard")
    found = features.extract_features(data, backbone="resnet-test", weights=None, seed=0, cache_dir=checked)
    assert [name for name in os.listdir(checked) if name.startswith("features-")] == cached
    assert len(found.train_labels) + len(found.validation_labels) == 42


def test_multi_label_data_is_refused_in_one_line(multi_label_data):
    with pytest.raises(ValueError, match=r"^The search for label issues is single-label only") as caught:
        label_issues.find_label_issues(multi_label_data, backbone="resnet-test", weights=None)
    assert "\n" not in str(caught.value)
