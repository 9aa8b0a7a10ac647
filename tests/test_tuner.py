"""Tests of tfresnet.tuning.tuner: a shared search's roles from keras-tuner's environment variables."""

import warnings

import pytest

from tfresnet.tuning import tuner as tuner_module


@pytest.mark.parametrize(
    "present",
    [
        ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_PORT"),
        ("KERASTUNER_TUNER_ID",),
        ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"),
    ],
)
def test_a_shared_search_needs_all_three_variables_or_none(monkeypatch, present):
    values = {
        "KERASTUNER_TUNER_ID": "tuner0",
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": "8000",
    }
    for name in values:
        monkeypatch.delenv(name, raising=False)
    assert tuner_module.role() == "local"
    for name in present:
        monkeypatch.setenv(name, values[name])
    missing = sorted(set(values) - set(present))
    with pytest.raises(ValueError, match=" and ".join(missing)):
        tuner_module.role()


@pytest.mark.parametrize("address, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_a_chief_listening_on_every_interface_is_warned(monkeypatch, address, warned):
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", address)
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert tuner_module.role() == "chief"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner_module.warn_if_exposed()
    assert [str(w.message).startswith("The chief's oracle listens on every interface") for w in caught] == (
        [True] if warned else []
    )


def test_mean_average_precision_is_maximised_by_the_oracle_and_picks_the_best_epoch():
    oracle = tuner_module.make_oracle(
        "random", objective="val_mean_average_precision", max_trials=2, tune_epochs=3, seed=0
    )
    assert (oracle.objective.name, oracle.objective.direction) == ("val_mean_average_precision", "max")
    history = {"val_mean_average_precision": [0.5, 0.8, 0.7], "val_loss": [0.9, 0.7, 0.6]}
    assert tuner_module._best_epoch(history, oracle.objective) == {
        "val_mean_average_precision": 0.8,
        "val_loss": 0.7,
    }
