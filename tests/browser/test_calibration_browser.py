"""Calibration and the mood timeline in a real browser: headless Chromium against a real `bentoml serve`.

The fake camera loops a resting clip (12 s) and a smiling clip (5 s) of the same face. The served model is a
made-up one whose answer follows the brightness of the face crop, so the clips read as a chosen "sad at
rest" and "happy": the mood reads sad at rest until Calibrate, neutral at rest after it, and still happy for
the smile. The timeline chart appears and grows meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.browser import FPS, serve_page
from helpers.serving import fer_like_face, paste

from emotune.labels import EMOTIONS

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REST_S, SMILE_S = 12, 5
# What the made-up model answers for the two clips: a face that reads sad at rest, and a clear smile.
AT_REST = np.array([0.08, 0.01, 0.07, 0.04, 0.45, 0.02, 0.33])
SMILING = np.array([0.02, 0.01, 0.02, 0.85, 0.03, 0.02, 0.05])
NEUTRAL_MEAN = [0.06, 0.01, 0.05, 0.08, 0.15, 0.02, 0.63]  # the card's neutral reference


def clip(brightness: float) -> np.ndarray:
    face = np.clip(fer_like_face().astype(np.float32) * brightness, 0, 255).astype(np.uint8)
    frame, _ = paste(face, size=(480, 640), at=(240, 110), scale=3)
    return frame


def crop_mean(frame: np.ndarray) -> float:
    """The mean grey level of the face crop the recogniser makes from `frame` (what the model will see)."""
    from emotune.recognizer import EmotionRecognizer
    from emotune.vision import make_detector

    seen: list[float] = []

    class Probe:
        def predict(self, x: np.ndarray) -> np.ndarray:
            seen.append(float(x.mean()))
            return np.tile(np.full(7, 1 / 7, np.float32), (len(x), 1))

    analysis = EmotionRecognizer(Probe(), make_detector("haar")).analyze(frame)
    assert len(analysis.faces) == 1, "the clip's face must be found"
    return seen[-1]


def brightness_model(out: Path, dark: float, bright: float) -> Path:
    """A Keras model whose logits are linear in the mean grey level, through AT_REST at `dark` and SMILING at
    `bright`, exported by the promote stage's own code with a card that names its neutral reference."""
    import keras

    from emotune import export, model_card

    inputs = keras.Input((48, 48, 1))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(7, activation="softmax")(mean)
    model = keras.Model(inputs, outputs)
    slope = (np.log(SMILING) - np.log(AT_REST)) / (bright - dark)
    model.layers[-1].set_weights([slope[None, :].astype(np.float32), (np.log(AT_REST) - slope * dark)])
    files = export.export_serving_files(model, out, "float32")
    files.pop("reference").unlink()
    card = model_card.build_card(
        name="emotune-fer", precision="float32", files=files, calibration={"neutral_mean": NEUTRAL_MEAN}
    )
    model_card.write_card(card, out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("calibration")
    resting, smiling = clip(0.6), clip(1.25)
    model = brightness_model(tmp / "model", crop_mean(resting), crop_mean(smiling))
    with serve_page(
        tmp,
        [resting] * (REST_S * FPS) + [smiling] * (SMILE_S * FPS),
        "calibration-server.log",
        EMOTUNE_MODEL_DIR=str(model),
        EMOTUNE_OVERRIDES="ui.timeline.refresh_s=1",
    ) as served:
        yield served


def mood_is(page, mood: str, timeout_s: float) -> None:
    page.wait_for_selector(f"#mood .et-mood[data-mood='{mood}']", timeout=timeout_s * 1000)


def timeline_points(page) -> int:
    found = re.search(r'data-points="(\d+)"', page.inner_html("#timeline"))
    return int(found.group(1)) if found else 0


def test_calibrate_on_the_resting_face_then_a_smile_still_reads_happy(page):
    assert "press Calibrate" in page.inner_text("#calibration")
    page.click("#camera button:has-text('Click to Access Webcam')")
    page.click("#camera button.capture-button", timeout=15_000)  # Record: start streaming

    mood_is(page, "happy", 30)  # the smile; when it ends the resting clip starts over (12 s)
    mood_is(page, "sad", 10)  # uncalibrated, the resting face reads sad
    page.click("#calibrate")
    page.wait_for_selector("#calibration [data-state='calibrated']", timeout=8_000)
    assert "it read sad" in page.inner_text("#calibration")
    mood_is(page, "neutral", 8)  # the same resting face, calibrated
    mood_is(page, "happy", 20)  # the smile reads as itself
    first = timeline_points(page)
    assert first > 5
    page.wait_for_function(
        f"/data-points=\"(\\d+)\"/.exec(document.querySelector('#timeline').innerHTML)[1] > {first}",
        timeout=10_000,
    )
    assert len(page.query_selector_all("#timeline .et-band")) == len(EMOTIONS)
    assert page.query_selector("#timeline a[download='emotune-session.json']") is not None

    page.click("#calibrate-reset")
    page.wait_for_selector("#calibration [data-state='plain']", timeout=5_000)
    mood_is(page, "sad", 25)  # the model's own reading of the resting face again
