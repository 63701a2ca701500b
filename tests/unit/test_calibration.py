"""Calibration to a resting face: the label-shift correction and the page's calibration state."""

from __future__ import annotations

import numpy as np
import pytest

from emotune.calibration import (
    DEFAULT_NEUTRAL,
    FLOOR,
    Calibration,
    neutral_reference,
    probability_vector,
    recalibrate,
    resting_summary,
)
from emotune.labels import EMOTIONS

NEUTRAL = np.array([0.08, 0.01, 0.07, 0.04, 0.14, 0.02, 0.64])  # a model's typical neutral reading
SAD_AT_REST = np.array([0.10, 0.01, 0.09, 0.02, 0.48, 0.01, 0.29])  # a face that reads sad when relaxed


def test_the_resting_face_reads_neutral_and_expressions_still_read_as_themselves():
    at_rest = recalibrate(SAD_AT_REST, SAD_AT_REST, NEUTRAL)
    assert EMOTIONS[int(np.argmax(at_rest))] == "neutral"
    sad = EMOTIONS.index("sad")
    tilt, left = SAD_AT_REST[sad] - NEUTRAL[sad], at_rest[sad] - NEUTRAL[sad]
    assert abs(left) < abs(tilt) / 2  # most of the resting tilt is gone
    smiling = np.array([0.02, 0.0, 0.02, 0.80, 0.08, 0.03, 0.05])
    assert EMOTIONS[int(np.argmax(recalibrate(smiling, SAD_AT_REST, NEUTRAL)))] == "happy"
    batch = recalibrate(np.stack([SAD_AT_REST, smiling]), SAD_AT_REST, NEUTRAL)
    assert batch.shape == (2, 7)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0)


def test_small_differences_from_the_neutral_reference_are_left_alone():
    """Within the dead band (~16%) a resting face is an ordinary neutral face: nothing changes."""
    near = NEUTRAL * np.array([1.1, 0.9, 1.1, 0.9, 1.1, 0.9, 1.0])
    p = np.random.default_rng(1).dirichlet(np.ones(7), size=20)
    np.testing.assert_allclose(recalibrate(p, near / near.sum(), NEUTRAL), p, atol=1e-12)


def test_resting_equal_to_the_neutral_reference_changes_nothing():
    p = np.random.default_rng(0).dirichlet(np.ones(7), size=50)
    np.testing.assert_allclose(recalibrate(p, NEUTRAL, NEUTRAL), p, atol=1e-12)


def test_factors_are_bounded_so_an_absent_class_cannot_take_over():
    resting = np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.5])  # the model never says disgust at rest
    out = recalibrate(np.full(7, 1 / 7), resting, NEUTRAL)
    assert np.isfinite(out).all()
    disgust, neutral = EMOTIONS.index("disgust"), EMOTIONS.index("neutral")
    assert out[disgust] / out[neutral] <= (1 + FLOOR) / FLOOR


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0.5, 0.5], "expected 7 probabilities"),
        ("0.1,0.2", "expected 7 comma-separated"),
        ("a,b,c,d,e,f,g", "not a number"),
        ([0.1, 0.1, 0.1, np.nan, 0.1, 0.1, 0.1], "finite"),
        ([0.1, 0.1, 0.1, -0.1, 0.1, 0.1, 0.1], "negative"),
        ([0, 0, 0, 0, 0, 0, 0], "all be zero"),
        ({"sleepy": 1.0}, "unknown emotion"),
        ([[0.1] * 7], "shape"),
    ],
)
def test_bad_resting_vectors_are_refused_with_the_reason(value, message):
    with pytest.raises(ValueError, match=message):
        probability_vector(value)


def test_resting_vectors_come_as_lists_strings_or_mappings_and_are_normalised():
    np.testing.assert_allclose(probability_vector("1,1,1,1,1,1,2"), np.array([1, 1, 1, 1, 1, 1, 2]) / 8)
    np.testing.assert_allclose(probability_vector({"happy": 3, "neutral": 1}), [0, 0, 0, 0.75, 0, 0, 0.25])
    np.testing.assert_allclose(probability_vector(SAD_AT_REST * 2), SAD_AT_REST / SAD_AT_REST.sum())


def test_the_neutral_reference_comes_from_the_card_or_the_default():
    card = {"calibration": {"neutral_mean": NEUTRAL.tolist()}}
    np.testing.assert_allclose(neutral_reference(card), NEUTRAL / NEUTRAL.sum())
    np.testing.assert_allclose(neutral_reference({}), DEFAULT_NEUTRAL / DEFAULT_NEUTRAL.sum())
    with pytest.raises(ValueError, match=r"calibration\.neutral_mean"):
        neutral_reference({"calibration": {"neutral_mean": [1, 2]}})


def test_calibration_collects_a_window_then_reads_relative_to_it():
    cal = Calibration(NEUTRAL, seconds=3.0, min_frames=4)
    assert cal.resting is None  # not calibrated: the page reads faces as the model does
    cal.start(now=10.0)
    assert cal.active
    for i in range(5):
        assert cal.add(SAD_AT_REST, now=10.0 + 0.5 * i) is None  # still collecting
    assert cal.add(SAD_AT_REST, now=13.1) == "Calibrated to your resting face"
    assert not cal.active
    np.testing.assert_allclose(cal.resting, SAD_AT_REST)
    assert EMOTIONS[int(np.argmax(recalibrate(SAD_AT_REST, cal.resting, cal.neutral)))] == "neutral"
    assert resting_summary(cal.resting).startswith("sad 48%, neutral 29%")
    cal.reset()
    assert cal.resting is None


def test_too_few_faces_keep_the_previous_state_and_say_why():
    cal = Calibration(NEUTRAL, seconds=3.0, min_frames=4)
    cal.start(now=0.0)
    for t in (0.0, 0.5, 1.0, 1.5, 2.0):
        cal.add(SAD_AT_REST, now=t)
    cal.add(None, now=3.0)
    assert cal.resting is not None  # 5 faces in 6 frames: calibrated
    first = cal.resting.copy()
    cal.start(now=10.0)
    for t in (10.0, 11.0, 12.0):
        cal.add(None, now=t)
    message = cal.add(NEUTRAL, now=13.0)
    assert "found in 1 of 4 frames" in message and "kept the previous calibration" in message
    np.testing.assert_allclose(cal.resting, first)
    fresh = Calibration(NEUTRAL, seconds=1.0, min_frames=4)
    fresh.start(now=0.0)
    assert "not calibrated" in fresh.add(None, now=2.0)
    assert fresh.resting is None
    assert fresh.add(SAD_AT_REST, now=3.0) is None  # not calibrating: frames are not collected


def test_the_simulated_people_gain_from_calibration_and_an_unbiased_one_loses_little():
    """benchmarks.calibration on a made-up model: right 70% of the time, some neutral faces read as sad."""
    from benchmarks.calibration import PEOPLE, simulate, softmax

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 3000)
    logits = rng.normal(0, 1, (3000, 7))
    logits[np.arange(3000), labels] += 2.0
    neutral_rows = np.flatnonzero(labels == EMOTIONS.index("neutral"))
    logits[neutral_rows[:120], EMOTIONS.index("sad")] += 3.0  # faces that look sad at rest
    logits[neutral_rows, EMOTIONS.index("angry")] -= 10.0  # and none that looks angry
    probs = softmax(logits)
    reference = probs[neutral_rows].mean(axis=0)
    rows = {r["person"]: r for r in simulate(probs, labels, reference, draws=5)}
    unbiased, sad = rows[PEOPLE[0].label], rows[PEOPLE[1].label]
    assert sad["accuracy plain"] < unbiased["accuracy plain"] - 0.02  # the tilt costs accuracy...
    assert sad["accuracy calibrated"] > sad["accuracy plain"] + 0.02  # ... calibration wins it back
    assert sad["neutral recall calibrated"] > sad["neutral recall plain"]
    assert abs(unbiased["accuracy calibrated"] - unbiased["accuracy plain"]) < 0.01
    assert "only" in rows[PEOPLE[2].label]["note"]  # no neutral face reads angry here
