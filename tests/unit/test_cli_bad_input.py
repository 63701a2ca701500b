"""Bad input on the command line: a clear error and exit status 2, never a traceback, and nothing started."""

from __future__ import annotations

import os

import pytest
from helpers.serving import encode, photo_rgb

from emotune.cli import main
from emotune.config import REPO_ROOT


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """argparse's refusal of `argv`: it exits with status 2 before the command runs; its message."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def clear_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err, err
    return err


@pytest.fixture
def picture(tmp_path):
    """A photo with one face, as a PNG file."""
    path = tmp_path / "photo.png"
    path.write_bytes(encode(photo_rgb()))
    return path


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting bentoml or uvicorn fails the test: bad input must be refused before either."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a server was started")

    monkeypatch.setattr(os, "execvpe", refuse)
    monkeypatch.setattr("uvicorn.run", refuse)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["serve", "--port", "70000"], "argument --port: 70000 is out of range"),
        (["serve", "--workers", "0"], "argument --workers: 0 is out of range"),
        (["serve", "--threads", "-1"], "argument --threads: -1 is out of range"),
        (["ui", "--port", "0"], "argument --port: 0 is out of range"),
        (["analyze", "x.png", "-k", "0"], "argument -k: 0 is out of range"),
        (["analyze", "x.png", "--strategy", "sideways"], "argument --strategy: invalid choice"),
        (["evaluate", "--data", "x.csv", "--batch-size", "0"], "argument --batch-size: 0 is out of range"),
        (["serve", "--port", "eighty"], "argument --port: 'eighty' is not a whole number"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(capsys, no_server, argv, words):
    assert words in usage_error(capsys, argv)


def test_analyze_a_missing_path(capsys, tmp_path):
    err = clear_error(capsys, ["analyze", str(tmp_path / "none.jpg"), "--no-music"])
    assert f"emotune analyze: error: {tmp_path / 'none.jpg'}: no such file or folder" in err


def test_analyze_a_missing_model_or_a_bad_override(capsys, tmp_path, picture):
    err = clear_error(capsys, ["analyze", str(picture), "--no-music", "--model", str(tmp_path / "none")])
    assert "no model in" in err
    err = clear_error(capsys, ["analyze", str(picture), "serve.no_such_key=1", "--no-music"])
    assert "serve.no_such_key" in err


def test_analyze_refuses_more_tracks_than_the_service_allows(capsys, picture):
    # a face in the picture: without the check, its recommendations would fail
    overrides = ["music.max_k=5", "music.k=3"]
    err = clear_error(
        capsys, ["analyze", str(picture), *overrides, "--model", str(REPO_ROOT / "models"), "-k", "6"]
    )
    assert "-k 6: at most 5 tracks (music.max_k)" in err


def test_ui_with_a_missing_model_or_a_bad_override(capsys, no_server, tmp_path):
    assert "no model in" in clear_error(capsys, ["ui", "--model", str(tmp_path / "none")])
    assert "ui.no_such_key" in clear_error(capsys, ["ui", "ui.no_such_key=1"])


def test_gpu_pack_without_params_or_into_a_full_folder(capsys, tmp_path):
    missing = tmp_path / "params.yaml"
    err = clear_error(capsys, ["gpu", "pack", "--out", str(tmp_path / "b"), "--params", str(missing)])
    assert f"gpu pack: {missing} not found" in err
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    params = str(REPO_ROOT / "params.yaml")
    err = clear_error(capsys, ["gpu", "pack", "--out", str(full), "--params", params])
    assert "exists and is not empty" in err and (full / "keep.txt").read_text() == "mine"
