"""The model a fresh clone serves: it loads (its hashes match its card), it stays within the size budget, and
on the development data it scores exactly what its card and the README say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotune.cli import main
from emotune.labels import EMOTIONS
from emotune.recognizer import EmotionRecognizer

MAX_BUNDLE_MB = 25


@pytest.fixture(scope="module")
def card(repo_root) -> dict:
    return json.loads((repo_root / "models" / "model_card.json").read_text())


def on_publictest(card: dict) -> dict:
    """The shipped file's PublicTest figures: promote's held-out measurement when the run validated on
    held-out training rows, else its export check, which then ran on PublicTest itself."""
    check = card["export_check"]
    return check["held_out"] if check["split"] == "holdout" else check


def test_the_bundled_model_loads_and_fits_the_budget(repo_root, card):
    recognizer = EmotionRecognizer.load(repo_root / "models")  # refuses files the card does not hash to
    assert recognizer.card == card and card["labels"] == list(EMOTIONS)
    onnx = repo_root / "models" / "emotune.onnx"
    assert onnx.stat().st_size <= MAX_BUNDLE_MB * 1e6
    assert card["files"]["emotune.onnx"]["bytes"] == onnx.stat().st_size
    # the export check compared the shipped file with the float32 network on the validation split
    assert card["export_check"]["accuracy_drop_points"] <= card["export_check"]["max_accuracy_drop"]


def test_the_readme_quotes_the_cards_accuracy(repo_root, card):
    readme = (repo_root / "README.md").read_text()
    float32 = card["metrics"]["test"]["test_accuracy"]
    exported = on_publictest(card)["accuracy_exported"]
    assert f"**{100 * float32:.1f}% on PublicTest**" in readme
    assert f"{100 * exported:.1f}% for the int8 file" in readme


@pytest.mark.slow
def test_the_bundled_model_scores_what_its_card_says(repo_root, card, shared_data, capsys):
    data = shared_data / "fer2013" / "fer2013.csv.gz"
    model = repo_root / "models" / "emotune.onnx"
    assert main(["evaluate", "--data", str(data), "--model", str(model), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "validation" and printed["n"] == 3589  # PublicTest: no PrivateTest rows here
    # the shipped file scores what the promote stage measured for it ...
    check = on_publictest(card)
    assert printed["accuracy"] == pytest.approx(check["accuracy_exported"], abs=1e-6)
    # ... within the allowed export loss of the float32 network the evaluate stage scored (with flip TTA
    # when the shipped graph has it inside)
    float32 = card["metrics"]["test"][
        "test_tta_accuracy" if card["model"].get("flip_tta") else "test_accuracy"
    ]
    assert check["accuracy_float32"] == pytest.approx(float32, abs=1e-6)
    assert 100 * (float32 - printed["accuracy"]) <= card["export_check"]["max_accuracy_drop"]


@pytest.mark.slow
def test_the_cards_neutral_reference_is_what_the_file_reads_on_neutral_validation_faces(
    repo_root, card, shared_data
):
    """calibration.neutral_mean: the shipped file's mean reading of the neutral faces among the rows that
    validated the run (held-out Training rows, recomputed here from the same split code and seed)."""
    from emotune.config import load_params
    from emotune.data.fer2013 import load_csv
    from emotune.data.splits import validation_faces
    from emotune.evaluation import load_predictor

    params = load_params(repo_root / "params.yaml")
    splits = load_csv(shared_data / "fer2013" / "fer2013.csv.gz", progress=False).splits()
    validation = validation_faces(splits, params.train.validation_holdout, int(params.seed))
    assert validation.describe()["fingerprint"] == card["export_check"]["validation_set"]
    neutral = validation.x[validation.y == EMOTIONS.index("neutral")]
    assert len(neutral) == card["calibration"]["faces"]
    mean = load_predictor(repo_root / "models" / "emotune.onnx")(neutral).mean(axis=0)
    np.testing.assert_allclose(card["calibration"]["neutral_mean"], mean, atol=2e-6)
