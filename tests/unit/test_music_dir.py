"""`--music-dir` on `emotune serve`, `emotune ui`, `recommend` and `music validate`, and `make serve MUSIC=`:
what reaches `bentoml serve` (built, never exec'd), the page's settings, and a bad folder failing fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.music import make_library, make_wav

from emotune import config as config_module
from emotune.analyze_commands import serve_command
from emotune.cli import build_parser, main
from emotune.config import REPO_ROOT
from emotune.music import library as library_module
from emotune.music.library import CACHE_DIR_ENV, library_cache_path
from emotune.serving import MUSIC_DIR_ENV, serve_settings
from emotune.ui_commands import ui_settings


@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch) -> Iterator[Path]:
    """Scans keep their cache in the test's folder; no EMOTUNE_* setting leaks in from outside."""
    for name in [n for n in os.environ if n.startswith("EMOTUNE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    yield tmp_path / "cache"


@pytest.fixture
def music(tmp_path) -> Path:
    folder = tmp_path / "My Music"  # a space: no quoting needed anywhere
    make_wav(folder / "sad" / "a.wav", title="A", artist="Artist A")
    make_wav(folder / "b.wav", title="B", artist="Artist B", genre="Jazz")
    make_wav(folder / "c.wav", title="C", artist="Artist C")  # no mood
    return folder


class Exec(Exception):
    """Raised in place of os.execvpe: what `emotune serve` would have started."""


@pytest.fixture
def no_exec(monkeypatch) -> list[tuple[list[str], dict[str, str]]]:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_exec(file: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((list(argv), dict(env)))
        raise Exec

    monkeypatch.setattr(os, "execvpe", fake_exec)
    return calls


def test_serve_command_passes_the_music_folder_to_bentoml(music, monkeypatch):
    monkeypatch.chdir(music.parent)  # a relative path becomes absolute: bentoml runs from the repository root
    args = build_parser().parse_args(["serve", "--music-dir", "My Music", "--port", "4000", "--development"])
    command, env = serve_command(args, {"PATH": "/usr/bin", "EMOTUNE_OVERRIDES": "music.k=5"})
    assert command[1:] == ["-m", "bentoml", "serve", "service:Emotune", "--development"]
    assert env[MUSIC_DIR_ENV] == str(music.resolve()) and env["EMOTUNE_PORT"] == "4000"
    assert env["EMOTUNE_OVERRIDES"] == "music.k=5" and env["PATH"] == "/usr/bin"  # the rest passes through
    assert env["BENTOML_DO_NOT_TRACK"] == "true"

    _, env = serve_command(build_parser().parse_args(["serve"]), {"PATH": "/usr/bin"})
    assert MUSIC_DIR_ENV not in env and "EMOTUNE_PORT" not in env


def test_the_service_reads_the_music_folder_from_its_variable(music, monkeypatch):
    monkeypatch.setenv(MUSIC_DIR_ENV, str(music))
    monkeypatch.setenv("EMOTUNE_OVERRIDES", "music.k=4")
    cfg = serve_settings()  # what service.py, the page and `emotune analyze` compose
    assert cfg.music.library_dir == str(music) and cfg.music.k == 4


def test_serve_checks_and_scans_the_folder_then_starts_bentoml(music, monkeypatch, no_exec, capsys):
    monkeypatch.chdir(music.parent)
    with pytest.raises(Exec):
        main(["serve", "--music-dir", str(music)])
    (command, env), = no_exec  # fmt: skip
    assert env[MUSIC_DIR_ENV] == str(music.resolve()) and command[-1] == "service:Emotune"
    err = capsys.readouterr().err
    assert f"music: {music.resolve()}: 2 files placed (folder 1, genre 1), 1 without a mood" in err
    assert "emotune music validate --music-dir" in err
    # The scan's cache is in place for the server's workers: they read no tags.
    assert library_cache_path(music).is_file()
    reads: list[Path] = []
    monkeypatch.setattr(library_module, "read_tags", lambda path: reads.append(path) or {})
    monkeypatch.setenv(MUSIC_DIR_ENV, env[MUSIC_DIR_ENV])
    from emotune.serving import load_recommender

    recommender, status = load_recommender(serve_settings())
    assert status == "ok" and reads == [] and recommender.library["folder"]


@pytest.mark.parametrize("problem", ["missing", "a file", "unreadable"])
def test_a_bad_music_folder_fails_before_the_server_starts(tmp_path, monkeypatch, no_exec, capsys, problem):
    folder = tmp_path / "music"
    if problem == "a file":
        folder.write_text("not a folder")
    elif problem == "unreadable":  # (root reads anything, so the refusal is simulated)
        folder.mkdir()

        def refuse(path: object) -> None:
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(library_module.os, "scandir", refuse)
    expected = {"missing": "music folder not found", "a file": "not a folder", "unreadable": "cannot be read"}

    def compose(*args: object, **kwargs: object) -> None:  # the slow part, that a typo must not wait for
        raise AssertionError("the configuration was loaded before the music folder was checked")

    monkeypatch.setattr(config_module, "compose", compose)
    for command in (["serve"], ["ui"], ["recommend", "--emotion", "sad"], ["music", "validate"]):
        assert main([*command, "--music-dir", str(folder)]) == 2, command
        err = capsys.readouterr().err
        assert f"error: {folder}: " in err and expected[problem] in err, (command, err)
    assert no_exec == []  # bentoml was never started


def test_ui_settings_take_the_music_folder(music, monkeypatch):
    monkeypatch.chdir(music.parent)
    args = build_parser().parse_args(["ui", "--music-dir", "My Music", "music.k=3"])
    cfg = ui_settings(args)
    assert cfg.music.library_dir == str(music.resolve()) and cfg.music.k == 3
    assert ui_settings(build_parser().parse_args(["ui"])).music.library_dir is None


def test_recommend_plays_files_of_the_music_folder(tmp_path, capsys):
    folder = tmp_path / "music"
    make_library(folder, 3)
    (folder / "emotune_moods.csv").write_text(
        "path,emotion\n" + "".join(f"many/{i:04d}.wav,sad\n" for i in range(3))
    )
    argv = ["recommend", "--emotion", "sad", "--json", "--music-dir", str(folder), "music.local_bonus=0.5"]
    assert main(argv) == 0
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    local = [t for t in tracks if t["play"]["kind"] == "local"]
    assert len(local) == 3 and all(Path(t["play"]["path"]).is_relative_to(folder.resolve()) for t in local)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_serve_passes_music_to_the_flag():
    def dry_run(*extra: str) -> str:
        done = subprocess.run(
            ["make", "--no-print-directory", "-n", "serve", *extra],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip().splitlines()[-1]

    assert dry_run("MUSIC=/srv/my music").endswith('emotune serve --music-dir "/srv/my music"')
    assert dry_run().endswith("emotune serve")


def test_ui_loads_the_music_folder_then_serves(music, monkeypatch, capsys):
    """`emotune ui --music-dir`: the page's engine plays the folder's files (uvicorn not started)."""
    import uvicorn

    import emotune.serving

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(kwargs))
    monkeypatch.setattr(emotune.serving, "freeze_loaded_objects", lambda: None)
    assert main(["ui", "--music-dir", str(music), "--port", "7999"]) == 0
    out = capsys.readouterr().out
    assert served == [{"host": "127.0.0.1", "port": 7999, "log_level": "warning"}]
    assert "music ok" in out and f"music folder {music.resolve()}: 2 files placed (folder 1, genre 1)" in out
