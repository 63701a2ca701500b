"""The prepare library: per-split arrays, report, plot; deterministic, atomic, and honest about splits."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emotune.data import DataValidationError, load_prepared, prepare, synthesize
from emotune.data.splits import SPLIT_NOTES, choose_split
from emotune.labels import EMOTIONS


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("raw") / "fer2013_synthetic.csv", rows=70, seed=3)


def test_prepare_writes_arrays_report_and_plot(tmp_path: Path, synthetic_csv: Path) -> None:
    out = tmp_path / "prepared"
    report = prepare(synthetic_csv, out, synthetic=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "class_distribution.png", "report.json", "test.npz", "train.npz", "validation.npz"
    ]  # fmt: skip
    splits = load_prepared(out)
    assert list(splits) == ["train", "validation", "test"]
    for x, y in splits.values():
        assert x.dtype == np.uint8 and x.shape[1:] == (48, 48) and y.dtype == np.uint8 and len(x) == len(y)
    with np.load(out / "train.npz") as npz:  # the contract: arrays named x and y
        assert sorted(npz.files) == ["x", "y"]
    assert json.loads((out / "report.json").read_text()) == report
    assert report["synthetic"] is True and report["source_format"] == "csv"
    assert report["counts"]["train"]["total"] == len(splits["train"][1]) == 56
    assert report["counts"]["test"] == {e: 1 for e in EMOTIONS} | {"total": 7}
    assert report["missing_splits"] == [] and report["evaluation_split"] == "test"
    assert report["source_sha256"] == hashlib.sha256(synthetic_csv.read_bytes()).hexdigest()
    assert (out / "class_distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert choose_split(load_prepared(out)) == ("test", SPLIT_NOTES["test"])
    assert report["notes"] == ["SYNTHETIC data (procedurally drawn faces): not a FER2013 result"]
    assert not list(tmp_path.glob(".prepared*"))  # no temp or backup directory left behind


def test_prepare_is_byte_for_byte_deterministic(tmp_path: Path, synthetic_csv: Path) -> None:
    prepare(synthetic_csv, tmp_path / "a", synthetic=True, progress=False)
    prepare(synthetic_csv, tmp_path / "b", synthetic=True, progress=False)
    first = digests(tmp_path / "a")
    assert first == digests(tmp_path / "b")
    prepare(synthetic_csv, tmp_path / "a", synthetic=True, progress=False)  # over the previous output
    assert digests(tmp_path / "a") == first


def test_bad_data_writes_nothing_and_keeps_the_previous_output(tmp_path: Path, synthetic_csv: Path) -> None:
    out = tmp_path / "prepared"
    prepare(synthetic_csv, out, synthetic=True, progress=False)
    before = digests(out)
    lines = synthetic_csv.read_text().splitlines()
    lines[5] = "9" + lines[5][1:]  # line 6 of the file gets label 9
    bad = tmp_path / "bad_synthetic.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"line 6: label 9 is not in 0\.\.6"):
        prepare(bad, out, synthetic=True, progress=False)
    assert digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_synthetic.csv", "prepared"]
    with pytest.raises(DataValidationError):
        prepare(bad, tmp_path / "fresh", synthetic=True, progress=False)
    assert not (tmp_path / "fresh").exists()


def test_missing_private_test_rows_means_no_test_file_and_an_explicit_fallback(
    tmp_path: Path, synthetic_csv: Path
) -> None:
    raw = tmp_path / "public_only_synthetic.csv"
    raw.write_text("".join(line for line in synthetic_csv.open() if "PrivateTest" not in line))
    out = tmp_path / "prepared"
    report = prepare(raw, out, synthetic=True, progress=False)
    assert not (out / "test.npz").exists()
    assert list(load_prepared(out)) == ["train", "validation"]
    assert report["missing_splits"] == ["test"] and report["evaluation_split"] == "validation"
    split, note = choose_split(load_prepared(out))
    assert split == "validation" and "no PrivateTest rows" in note and "optimistic" in note
    assert note in report["notes"]


def test_synthetic_data_must_be_flagged_and_missing_data_says_how_to_get_it(
    tmp_path: Path, synthetic_csv: Path
) -> None:
    with pytest.raises(ValueError, match=r"data\.synthetic is false"):
        prepare(synthetic_csv, tmp_path / "out", synthetic=False, progress=False)
    with pytest.raises(FileNotFoundError, match="emotune data download"):
        prepare(tmp_path / "nothing.csv.gz", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="run the prepare stage"):
        load_prepared(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def emotune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emotune.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_validate_prints_counts_or_errors(tmp_path: Path, synthetic_csv: Path) -> None:
    ok = emotune("data", "validate", "-q", str(synthetic_csv))
    assert ok.returncode == 0, ok.stderr
    table = ok.stdout.splitlines()
    assert table[1].split() == ["split", *EMOTIONS, "total"]
    assert table[2].split() == ["train", *["8"] * 7, "56"]
    assert table[4].split() == ["test", *["1"] * 7, "7"]
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")
    failed = emotune("data", "validate", "-q", str(bad))
    assert failed.returncode == 1
    assert "line 2: 3 pixel values, expected 2304" in failed.stderr


@pytest.mark.slow
def test_real_fer2013_from_shared(shared_data: Path, tmp_path: Path) -> None:
    """The development copy: 32,298 rows (Training + PublicTest), counts as its README lists them."""
    raw = shared_data / "fer2013" / "fer2013.csv.gz"
    if not raw.is_file():
        pytest.skip(f"{raw} not found")
    start = time.perf_counter()
    report = prepare(raw, tmp_path / "prepared", synthetic=False, progress=False)
    elapsed = time.perf_counter() - start
    print(f"\nprepare on the real FER2013 file ({report['rows']} rows): {elapsed:.1f} s")
    readme = {  # shared/data/fer2013/README.md, "Counts (verified)"
        "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
        "validation": [467, 56, 496, 895, 653, 415, 607],
    }
    for split, expected in readme.items():
        assert [report["counts"][split][e] for e in EMOTIONS] == expected
    assert report["counts"]["train"]["total"] == 28709 and report["counts"]["validation"]["total"] == 3589
    assert report["source_sha256"] == "2175e825f65181655b81fb44f6890332ad1e8edcfe5512fc473d283a0f687388"
    assert report["missing_splits"] == ["test"]
    assert report["evaluation_split"] == "validation"
    x, y = load_prepared(tmp_path / "prepared")["validation"]
    assert x.shape == (3589, 48, 48) and np.bincount(y).tolist() == readme["validation"]
