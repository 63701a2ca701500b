"""`emotune data download` without credentials or without network: a fast failure that says what to do.

These run the real command in a subprocess. On this machine there is no internet, so with (dummy)
credentials the connectivity check fails; on a machine with internet Kaggle rejects the dummy key. Either
way the command must fail fast with the manual instructions and write nothing.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers.network import unreachable

from emotune.data.download import DownloadError, find_csv, install_csv, install_image_folder
from emotune.kaggle import credentials as kaggle_credentials

# The real command, and then whether it got as far as importing kagglehub, which alone takes seconds to import
# and retries for long offline: failing fast means failing before it. (The subprocess timeout catches a hang.)
DOWNLOAD = """
import sys
from emotune.cli import main
code = main(["data", "download", "--timeout", "2"])
print("kagglehub imported" if "kagglehub" in sys.modules else "kagglehub not imported")
sys.exit(code)
"""


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    return env | {"HOME": str(home)} | extra


def download(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DOWNLOAD], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def assert_fails_with_instructions(done: subprocess.CompletedProcess, cwd: Path, reason: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert reason in done.stderr
    assert "data/fer2013/fer2013.csv.gz" in done.stderr and "dvc add data" in done.stderr
    assert not (cwd / "data").exists()


def test_without_credentials_fails_fast_with_instructions(tmp_path: Path) -> None:
    done = download(tmp_path, clean_env(tmp_path))
    assert_fails_with_instructions(done, tmp_path, "no Kaggle credentials")
    assert "kagglehub not imported" in done.stdout


def test_with_dummy_credentials_but_offline_fails_fast(tmp_path: Path) -> None:
    env = clean_env(tmp_path, KAGGLE_USERNAME="nobody", KAGGLE_KEY="0" * 32)
    done = download(tmp_path, env)
    # Offline: "cannot reach"; online: Kaggle refuses the dummy key. Both are clear failures.
    assert_fails_with_instructions(done, tmp_path, "download")
    if "cannot reach" in done.stderr:  # offline: found out before kagglehub is imported
        assert "kagglehub not imported" in done.stdout
    else:
        assert "kagglehub could not download" in done.stderr


def test_with_dummy_credentials_and_a_network_that_drops_packets_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The offline branch of the test above on every machine, online or not: one connection attempt with the
    given timeout, then "cannot reach", before kagglehub (slow to import, retries for long offline)."""
    from emotune.cli import main

    for name in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)  # KAGGLE_API_ENDPOINT too: the check must aim at kaggle.com
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kaggle/kaggle.json of the user's
    monkeypatch.setenv("KAGGLE_USERNAME", "nobody")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    monkeypatch.chdir(tmp_path)
    timeouts = unreachable(monkeypatch, socket)
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # importing it fails the command (exit 2 or raise)
    code = main(["data", "download", "--timeout", "2"])
    err = capsys.readouterr().err
    assert_fails_with_instructions(subprocess.CompletedProcess([], code, "", err), tmp_path, "cannot reach")
    assert "www.kaggle.com:443" in err
    assert timeouts == [2], timeouts  # one attempt, no retry, with the --timeout given


@pytest.mark.parametrize("timeout", ["0", "-1", "inf", "nan"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_before_any_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    from emotune.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAGGLE_USERNAME", "nobody")
    monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    connections = unreachable(monkeypatch, socket)
    assert main(["data", "download", "--timeout", timeout]) == 1
    assert (
        f"the timeout must be a positive number of seconds, got {float(timeout):g}" in capsys.readouterr().err
    )
    assert connections == [] and not (tmp_path / "data").exists()


def test_credentials_lookup_follows_kagglehub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert kaggle_credentials() is None
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    assert kaggle_credentials() is None  # a user name alone is not enough
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle_credentials() == "KAGGLE_USERNAME/KAGGLE_KEY"
    monkeypatch.delenv("KAGGLE_KEY")
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert kaggle_credentials() == str(tmp_path / ".kaggle" / "kaggle.json")


def kaggle_csv_text(rows: int = 3) -> str:
    px = " ".join(["128"] * 2304)
    return "emotion,pixels,Usage\n" + "".join(f"{i % 7},{px},PrivateTest\n" for i in range(rows))


def test_competition_download_layout_is_unpacked_validated_and_gzipped(tmp_path: Path) -> None:
    # What kagglehub leaves for the competition: fer2013.tar.gz holding fer2013/fer2013.csv.
    inner = tmp_path / "fer2013" / "fer2013.csv"
    inner.parent.mkdir()
    inner.write_text(kaggle_csv_text())
    download_dir = tmp_path / "kaggle"
    download_dir.mkdir()
    with tarfile.open(download_dir / "fer2013.tar.gz", "w:gz") as tar:
        tar.add(inner, arcname="fer2013/fer2013.csv")
    found = find_csv(download_dir)
    assert found.read_text() == kaggle_csv_text()
    dest = install_csv(found, tmp_path / "data" / "fer2013" / "fer2013.csv.gz")
    assert gzip.decompress(dest.read_bytes()).decode() == kaggle_csv_text()
    with pytest.raises(DownloadError, match=r"no fer2013\.csv"):
        find_csv(tmp_path / "data" / "fer2013")  # only the .gz there: not a download layout


def test_install_refuses_an_invalid_csv(tmp_path: Path) -> None:
    from emotune.data import DataValidationError

    bad = tmp_path / "fer2013.csv"
    bad.write_text(kaggle_csv_text().replace("PrivateTest", "Secret", 1))
    with pytest.raises(DataValidationError, match="line 2: unknown Usage 'Secret'"):
        install_csv(bad, tmp_path / "out" / "fer2013.csv.gz")
    assert not (tmp_path / "out").exists()


def _image_folders(root: Path, split: str = "train") -> Path:
    import cv2
    import numpy as np

    for i, emotion in enumerate(("happy", "sad")):
        (root / split / emotion).mkdir(parents=True)
        assert cv2.imwrite(str(root / split / emotion / f"{i}.png"), np.full((48, 48), 40 * i, np.uint8))
    return root


def test_image_folders_replace_the_old_copy_only_when_valid(tmp_path: Path) -> None:
    from emotune.data import DataValidationError

    dest = tmp_path / "data" / "fer2013" / "images"
    install_image_folder(_image_folders(tmp_path / "first"), dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png")) == [
        "train/happy/0.png",
        "train/sad/1.png",
    ]
    install_image_folder(_image_folders(tmp_path / "second", split="test"), dest)
    assert sorted(p.relative_to(dest).parts[0] for p in dest.rglob("*.png")) == ["test", "test"]

    bad = _image_folders(tmp_path / "bad")
    (bad / "train" / "bored").mkdir()  # not one of the 7 emotions
    (bad / "train" / "bored" / "x.png").write_bytes(b"")
    with pytest.raises(DataValidationError, match="bored"):
        install_image_folder(bad, dest)
    assert sorted(p.relative_to(dest).parts[0] for p in dest.rglob("*.png")) == ["test", "test"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["images"]  # no temporary or old folder left
