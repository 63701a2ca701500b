"""Averaging the candidate with the shipped model inside one exported graph (`promote.ensemble_with_shipped`):
the averaged model and its exports compute the mean of the members, and promote averages only with a shipped
model it may be compared with, and only when the average scores better on the validation faces."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from emotune import export, model_card, promotion
from emotune.data.splits import Validation
from emotune.ensemble import accuracy, averaged, networks
from emotune.model import build_model
from emotune.preprocess import to_model_input
from emotune.recognizer import EmotionRecognizer
from emotune.tta import with_flip_average

RECIPE = {"name": "small_cnn", "width": 0.25, "dense_units": 16, "channels": 1, "crop": 44}


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def network(seed: int) -> keras.Model:
    """A network of the bundled recipe's kind (a central crop before batch-normalised convolutions)."""
    keras.utils.set_random_seed(seed)
    return build_model(RECIPE, 48)


def linear(seed: int) -> keras.Model:
    """A one-layer network whose untrained answers vary from face to face and with the mirror image (those
    of an untrained deep one barely do, so they could not tell an average from its members)."""
    keras.utils.set_random_seed(seed)
    face = keras.Input(shape=(48, 48, 1), name="face")
    pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(face))
    init = keras.initializers.RandomNormal(stddev=0.05, seed=seed)
    return keras.Model(face, keras.layers.Dense(7, "softmax", kernel_initializer=init)(pixels), name="linear")


def test_the_average_and_its_exports_answer_the_mean_of_the_members(tmp_path):
    # two networks of one recipe (the same layer names), one behind the mirror-image average
    first, second = with_flip_average(network(1)), network(2)
    x = faces(6)
    expected = (
        first.predict(to_model_input(x), verbose=0) + second.predict(to_model_input(x), verbose=0)
    ) / 2
    assert not np.allclose(expected, second.predict(to_model_input(x), verbose=0), atol=1e-3)

    ensemble = averaged([first, second])
    np.testing.assert_allclose(ensemble.predict(to_model_input(x), verbose=0), expected, atol=1e-5)
    files = export.export_serving_files(ensemble, tmp_path, "float32")
    for name in ("emotune.onnx", "model.keras"):
        served = EmotionRecognizer.load(files[name])
        np.testing.assert_allclose(served.classify(x), expected, atol=1e-5)
        np.testing.assert_allclose(served.classify(x[2:3]), expected[2:3], atol=1e-5)  # alone as in a batch


def test_an_ensemble_needs_two_models_of_the_same_shapes():
    with pytest.raises(ValueError, match="at least two"):
        averaged([network(1)])
    other = build_model({**RECIPE, "crop": None}, 40)
    with pytest.raises(ValueError, match="differ in input or output shape"):
        averaged([network(1), other])


@pytest.fixture
def shipped(tmp_path) -> Path:
    """A tiny model in models/, its card saying: run `shipped-run`, data `abc`, validation faces `faces-1`."""
    models = tmp_path / "models"
    files = export.export_serving_files(linear(9), models, "float32")
    files.pop("reference").unlink()
    model_card.write_card(model_card.build_card(name="emotune-fer", precision="float32", files=files), models)
    card = json.loads((models / "model_card.json").read_text())
    card["data"].update(source_sha256="abc", synthetic="false")
    card["export_check"]["validation_set"] = "faces-1"
    card["mlflow"]["run_id"] = "shipped-run"
    (models / "model_card.json").write_text(json.dumps(card))
    return models


def candidate_run(run_id: str = "candidate", **tags: str) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id),
        data=SimpleNamespace(tags={"data_source_sha256": "abc", "data_synthetic": "false", **tags}),
    )


def test_the_networks_of_an_exported_model_are_found_through_its_wrappers(tmp_path):
    first, second = network(1), network(2)
    assert networks(first) == [first]
    found = networks(with_flip_average(averaged([with_flip_average(first), second])))
    assert [n.name for n in found] == [first.name, second.name]
    assert found[0] is first and found[1] is second
    files = export.export_serving_files(averaged([first, second]), tmp_path, "float32")
    reloaded = networks(keras.models.load_model(files["model.keras"], compile=False))
    x = to_model_input(faces(3))
    for original, saved in zip((first, second), reloaded, strict=True):
        np.testing.assert_allclose(saved.predict(x, verbose=0), original.predict(x, verbose=0), atol=1e-6)


def test_the_shipped_model_joins_only_when_it_can_be_compared(shipped):
    partners, members, why = promotion.ensemble_partner(shipped, candidate_run(), "faces-1", 2)
    assert len(partners) == 1 and why == ""
    assert [m["run_id"] for m in members] == ["shipped-run"]

    def refused(run=None, faces="faces-1", max_passes=2, folder=shipped) -> str:
        partners, members, why = promotion.ensemble_partner(folder, run or candidate_run(), faces, max_passes)
        assert partners == [] and members == []
        return why

    assert "trained on other data" in refused(candidate_run(data_source_sha256="other"))
    assert "validated on other faces" in refused(faces="faces-2")
    assert "holds this run's network already" in refused(candidate_run("shipped-run"))
    assert "promote.max_network_passes=1" in refused(max_passes=1)
    card = json.loads((shipped / "model_card.json").read_text())
    card["model"]["ensemble"] = [{"run_id": "a"}, {"run_id": "b"}]  # the card says two networks ...
    (shipped / "model_card.json").write_text(json.dumps(card))
    assert "averages 2 network(s) already" in refused()
    assert "holds this run's network already" in refused(candidate_run("b"), max_passes=3)
    assert "holds 1 network(s), its card lists 2" in refused(max_passes=3)  # ... the file holds one
    (shipped / "model_card.json").write_text("{")
    assert "model card cannot be read" in refused()
    (shipped / "model.keras").unlink()
    assert "has no model.keras" in refused()


def settings(**values) -> SimpleNamespace:
    return SimpleNamespace(get=lambda key, default=None: values.get(key, default))


def test_the_average_ships_only_when_it_scores_better_on_validation(shipped, capsys):
    candidate = linear(3)
    (partner,) = networks(keras.models.load_model(shipped / "model.keras", compile=False))
    x = faces(60, seed=4)
    alone = candidate.predict(to_model_input(x), verbose=0).argmax(1)
    together = averaged([candidate, partner]).predict(to_model_input(x), verbose=0).argmax(1)
    assert (alone != together).any()  # the average changes some answers, so the labels below decide
    members = [{"run_id": "candidate"}]

    def choose(labels: np.ndarray, **pcfg):
        validation = Validation(x, labels, np.arange(0), "holdout", 0.1)
        return promotion.with_shipped_if_better(
            candidate, candidate, members, shipped, candidate_run(), "faces-1", validation, settings(**pcfg)
        )

    model, chosen, mirror = choose(together)  # labelled as the average answers: it scores 100%, alone less
    assert [m["run_id"] for m in chosen] == ["candidate", "shipped-run"] and mirror is False
    assert accuracy(model, x, together) == 1.0 and len(networks(model)) == 2
    assert "averaging with the shipped model (promote.ensemble_with_shipped)" in capsys.readouterr().out
    model, chosen, mirror = choose(alone)  # labelled as the candidate answers: alone it is better
    assert model is candidate and chosen == members and mirror is False
    out = capsys.readouterr().out
    assert "not averaging with the shipped model: validation accuracy (holdout, float32) alone 1.0000" in out

    # the mirror image is tried too when flip_tta allows it and the passes leave room for it: 2 x 2 here
    mirrored = with_flip_average(averaged([candidate, partner]))
    labels = mirrored.predict(to_model_input(x), verbose=0).argmax(1)
    capsys.readouterr()
    model, chosen, mirror = choose(labels, flip_tta=True, max_network_passes=4)
    assert mirror is True and accuracy(model, x, labels) == 1.0 and len(networks(model)) == 2
    assert "and the mirror image 1.0000" in capsys.readouterr().out
    choose(labels, flip_tta=True, max_network_passes=3)  # no room for the mirror image: the plain average
    assert "and the mirror image" not in capsys.readouterr().out
