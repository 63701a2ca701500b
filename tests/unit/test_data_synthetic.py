"""The synthetic FER2013 generator: a valid Kaggle CSV, reproducible per seed, faces that show their class."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from emotune.data import load_csv, synthesize
from emotune.data.synthetic import generate
from emotune.labels import NUM_CLASSES


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_writes_a_valid_kaggle_csv_with_every_class_in_all_three_splits(tmp_path: Path) -> None:
    path = synthesize(tmp_path / "fer2013_synthetic.csv", rows=70, seed=1)
    assert path.read_text().splitlines()[0] == "emotion,pixels,Usage"
    data = load_csv(path, progress=False)
    counts = data.counts()
    assert list(counts) == ["train", "validation", "test"]
    assert {s: c["total"] for s, c in counts.items()} == {"train": 56, "validation": 7, "test": 7}
    for split in counts.values():  # balanced: every class in every split
        assert all(n > 0 for k, n in split.items() if k != "total")
    assert data.x.std() > 20  # faces, not a flat image


def test_deterministic_per_seed_and_different_across_seeds(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a_synthetic.csv", rows=28, seed=7)
    b = synthesize(tmp_path / "b_synthetic.csv", rows=28, seed=7)
    c = synthesize(tmp_path / "c_synthetic.csv", rows=28, seed=8)
    assert md5(a) == md5(b) != md5(c)
    gz1 = synthesize(tmp_path / "d_synthetic.csv.gz", rows=28, seed=7)
    gz2 = synthesize(tmp_path / "e_synthetic.csv.gz", rows=28, seed=7)
    assert md5(gz1) == md5(gz2)  # no timestamp in the gzip header
    assert gzip.decompress(gz1.read_bytes()) == a.read_bytes()


def nearest_mean_accuracy(features: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    means = np.stack([features[train & (y == c)].mean(axis=0) for c in range(NUM_CLASSES)])
    distances = np.linalg.norm(features[~train][:, None] - means[None], axis=2)
    return float((distances.argmin(axis=1) == y[~train]).mean())


def test_faces_carry_their_class() -> None:
    # HOG features (edge directions: brows, eyes, mouth shape) + nearest class mean recognise held-out faces;
    # with shuffled training labels the same method is near chance: the class is in the drawing, not noise.
    x, y, usage = generate(1050, seed=5)
    hog = cv2.HOGDescriptor((48, 48), (16, 16), (8, 8), (8, 8), 9)
    features = np.stack([hog.compute(face).ravel() for face in x])
    train = usage == 0
    accuracy = nearest_mean_accuracy(features, y, train)
    shuffled = y.copy()
    shuffled[train] = np.random.default_rng(0).permutation(y[train])
    chance = nearest_mean_accuracy(features, shuffled, train)
    assert accuracy > 0.75, accuracy
    assert chance < 0.3, chance


def test_faces_vary_within_a_class() -> None:
    x, y, _ = generate(2 * NUM_CLASSES * 3, seed=0)
    happy = x[y == 3].astype(int)
    assert np.abs(happy[0] - happy[1]).mean() > 5  # jittered pose/lighting/noise, not copies


def test_refuses_unlabelled_names_and_too_few_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must say so in its file name"):
        synthesize(tmp_path / "fer2013.csv", rows=70)
    assert not (tmp_path / "fer2013.csv").exists()
    with pytest.raises(ValueError, match="at least 21 rows"):
        generate(20)


def test_synthetic_votes_line_up_with_the_synthetic_training_rows(tmp_path: Path) -> None:
    """`synthesize --votes`: FER+-format votes, row for row with the faces, that soft labels accept."""
    from emotune.data.ferplus import load_votes, soft_targets
    from emotune.data.synthetic import synthesize_votes

    data = load_csv(synthesize(tmp_path / "faces_synthetic.csv", rows=70, seed=4), progress=False)
    votes_path = synthesize_votes(tmp_path / "ferplus_synthetic.csv", rows=70, seed=4)
    votes = load_votes(votes_path, usage="Training")
    labels = data.splits()["train"][1]
    assert votes.shape == (len(labels), NUM_CLASSES)
    np.testing.assert_array_equal(votes.sum(axis=1), 10)  # ten annotators, every vote for one of the seven
    np.testing.assert_array_equal(votes.argmax(axis=1), labels)  # the majority is the face's own label
    assert (votes.max(axis=1) < 10).any()  # ... and some faces have a dissenting vote
    targets = soft_targets(labels, votes, 0.5)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    shifted = synthesize_votes(tmp_path / "other_synthetic.csv", rows=70, seed=5)  # another file's order
    with pytest.raises(ValueError, match="does not line up"):
        soft_targets(labels, load_votes(shifted, usage="Training"), 0.5)
    with pytest.raises(ValueError, match="must say so"):
        synthesize_votes(tmp_path / "votes.csv", rows=70)
