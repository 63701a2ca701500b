"""A generated local library (WAV and MP3 with ID3 tags): tags, placement, local playback."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers.music import make_library, make_mp3, make_wav

from emotune.cli import main
from emotune.music import CatalogError, Recommender
from emotune.music import library as library_module
from emotune.music.catalog import track_table
from emotune.music.library import (
    CACHE_DIR_ENV,
    SIDECAR_NAME,
    cache_dir,
    library_cache_path,
    read_tags,
    scan_library,
    set_sidecar_mood,
)


@pytest.fixture(scope="module", autouse=True)
def scan_cache(tmp_path_factory) -> Iterator[Path]:
    """Library scans keep their tag cache here, not in the user's cache folder."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_DIR_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("library")
    make_wav(root / "cash.wav", title="Hurt (Remastered)", artist="Johnny Cash")  # a built-in sad song
    make_mp3(root / "ambient" / "Marconi Union - Weightless.mp3")  # untagged: the file name says who
    make_wav(root / "band" / "riff.wav", title="Riff", artist="Garage Band", genre="Heavy Metal")
    make_mp3(root / "mine.mp3", title="Calm Piece", artist="Me")  # placed by the sidecar
    make_wav(root / "noise.wav", title="Noise", artist="Nobody")  # nothing says its mood
    (root / "broken.mp3").write_bytes(b"not audio at all")
    (root / SIDECAR_NAME).write_text("path,emotion\nmine.mp3,sad\n")
    return root


@pytest.fixture(scope="module")
def library_rec(library) -> Recommender:
    return Recommender.from_files(library_dir=library)


def test_tags_from_wav_id3_and_mp3(library):
    wav = read_tags(library / "cash.wav")
    assert (wav["title"], wav["artist"]) == ("Hurt (Remastered)", "Johnny Cash")
    assert wav["duration"] == pytest.approx(0.5, abs=0.01)
    mp3 = read_tags(library / "mine.mp3")
    assert (mp3["title"], mp3["artist"]) == ("Calm Piece", "Me") and mp3["duration"] > 0.9
    untagged = read_tags(library / "ambient" / "Marconi Union - Weightless.mp3")
    assert (untagged["title"], untagged["artist"]) == ("Weightless", "Marconi Union")
    assert read_tags(library / "band" / "riff.wav")["genre"] == "Heavy Metal"
    with pytest.raises(CatalogError, match=r"broken\.mp3"):
        read_tags(library / "broken.mp3")


def test_scan_skips_damaged_files(library):
    frame = scan_library(library)
    assert len(frame) == 5 and not frame["path"].str.endswith("broken.mp3").any()


def test_placement_rules(library_rec, library):
    placed = library_rec.library
    name = lambda how: sorted(Path(p).name for p in placed[how])  # noqa: E731
    assert name("match") == ["Marconi Union - Weightless.mp3", "cash.wav"]
    assert name("sidecar") == ["mine.mp3"] and name("genre") == ["riff.wav"]
    assert name("unplaced") == ["noise.wav"]
    assert library_rec.summary()["playable_locally"] == 4


def test_local_files_play_in_the_page(library_rec, library):
    sad = library_rec.recommend("sad", k=10)
    local = {t.name: t for t in sad if t.play.kind == "local"}
    assert set(local) == {"Hurt", "Calm Piece"}  # the playlist song became playable; the sidecar track joined
    assert local["Hurt"].source == "playlist"
    assert local["Hurt"].play.path == str((library / "cash.wav").resolve())
    assert local["Hurt"].play.url.startswith("https://open.spotify.com/search/")
    assert Path(local["Calm Piece"].play.path).is_file()
    angry = library_rec.recommend("angry", k=10)
    assert "Riff" in {t.name for t in angry if t.play.kind == "local"}  # metal -> the angry list
    for emotion in ("happy", "neutral", "fear"):
        assert "Noise" not in {t.name for t in library_rec.recommend(emotion, k=20)}


def test_library_in_catalogue_mode(library):
    frame = track_table(
        pd.DataFrame(
            {
                "id": ["1", "2", "3"],
                "name": ["Hurt", "Other", "Third"],
                "artist": ["Johnny Cash", "X", "Y"],
                "valence": [0.2, 0.9, 0.5],
                "energy": [0.3, 0.8, 0.5],
                "source": "catalog",
            }
        )
    )
    from emotune.music.library import place_library, read_sidecar

    targets = {"sad": (0.15, 0.25)}
    pool, extra, placed = place_library(scan_library(library), frame, read_sidecar(library), targets)
    assert pool.loc[0, "path"].endswith("cash.wav") and pool.loc[1, "path"] == ""
    assert sorted(extra["name"]) == ["Calm Piece", "Riff"]
    # no catalogue row, sidecar entry or genre: not recommended rather than guessed
    assert sorted(Path(p).name for p in placed["unplaced"]) == ["Marconi Union - Weightless.mp3", "noise.wav"]
    assert extra.set_index("name").loc["Calm Piece", ["valence", "energy"]].tolist() == [0.15, 0.25]


def test_sidecar_errors(tmp_path):
    make_wav(tmp_path / "a.wav", title="A", artist="B")
    (tmp_path / SIDECAR_NAME).write_text("path,emotion\na.wav,happy\na.wav,elated\n")
    with pytest.raises(CatalogError, match=r"emotune_moods\.csv: line 3: emotion 'elated'"):
        Recommender.from_files(library_dir=tmp_path)
    (tmp_path / SIDECAR_NAME).write_text("path,valence,energy\na.wav,0.5,7\n")
    with pytest.raises(CatalogError, match=r"'energy'.*\[0, 1\]; line 2"):
        Recommender.from_files(library_dir=tmp_path)
    (tmp_path / SIDECAR_NAME).write_text("file,mood\na.wav,happy\n")
    with pytest.raises(CatalogError, match="needs a 'path' column"):
        Recommender.from_files(library_dir=tmp_path)
    with pytest.raises(CatalogError, match="library folder not found"):
        Recommender.from_files(library_dir=tmp_path / "nope")


# ------------------------------------------------------------------------------------------- folder names


def test_emotion_folders_place_their_files(tmp_path):
    make_wav(tmp_path / "sad" / "Artist A" / "a.wav", title="A", artist="Artist A")  # nearest emotion folder
    make_wav(tmp_path / "Happy" / "calm" / "b.wav", title="B", artist="Artist B")  # calm -> neutral, nearer
    make_wav(tmp_path / "Happy Mondays" / "c.wav", title="C", artist="Artist C")  # a band, not a mood
    make_wav(tmp_path / "sad" / "d.wav", title="D", artist="Artist D")  # the sidecar beats the folder
    (tmp_path / SIDECAR_NAME).write_text("path,emotion\nsad/d.wav,happy\n")
    rec = Recommender.from_files(library_dir=tmp_path)
    name = lambda how: sorted(Path(p).name for p in rec.library[how])  # noqa: E731
    assert name("folder") == ["a.wav", "b.wav"] and name("sidecar") == ["d.wav"]
    assert name("unplaced") == ["c.wav"]
    where = {t.name: t.emotion for t in rec.recommend("sad", k=30) if t.source == "library"}
    assert where == {"A": "sad"}  # playlists mode: a placed file joins the nearest mood's list
    assert "B" in {t.name for t in rec.recommend("neutral", k=30)}


# ------------------------------------------------------------------------------------------- scan cache


def count_tag_reads(monkeypatch) -> list[Path]:
    reads: list[Path] = []
    real = library_module.read_tags

    def counting(path: Path) -> dict[str, object]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(library_module, "read_tags", counting)
    return reads


def test_a_second_scan_reads_no_tags(tmp_path, monkeypatch):
    root = tmp_path / "music"
    files = make_library(root, 12)
    (root / "broken.mp3").write_bytes(b"not audio")  # a damaged file is remembered as damaged
    reads = count_tag_reads(monkeypatch)
    first = scan_library(root)
    assert len(reads) == 13 and len(first) == 12 and library_cache_path(root).is_file()

    reads.clear()
    second = scan_library(root)
    assert reads == [] and second.equals(first)  # all from the cache: no file opened for its tags

    make_wav(files[3], seconds=0.1, title="Changed", artist="Someone Else")  # new size and time
    os.utime(files[5], ns=(1_000_000_000, 1_000_000_000))  # only the time changes
    make_wav(root / "new.wav", title="New", artist="Newcomer")
    files[7].unlink()
    reads.clear()
    third = scan_library(root)
    assert sorted(p.name for p in reads) == ["0003.wav", "0005.wav", "new.wav"]
    assert len(third) == 12 and "Changed" in set(third["title"]) and "Song 7" not in set(third["title"])
    reads.clear()
    scan_library(root)
    assert reads == []
    # the cache lives in the cache folder, keyed by the library's absolute path; the library gets nothing
    assert library_cache_path(root).parent == cache_dir() / "library"
    assert sorted(p.name for p in root.iterdir()) == ["broken.mp3", "many", "new.wav"]
    assert library_cache_path(root) != library_cache_path(tmp_path)


@pytest.mark.parametrize(
    "damage",
    ["not json {", "[1, 2]", '{"version": 99, "files": {}}', '{"version": 1, "folder": "/x", "files": {}}'],
)
def test_a_corrupt_cache_is_ignored_with_a_log_line(tmp_path, monkeypatch, caplog, damage):
    root = tmp_path / "music"
    make_library(root, 3)
    scan_library(root)
    library_cache_path(root).write_text(damage)
    reads = count_tag_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="emotune.music.library"):
        frame = scan_library(root)
    assert len(frame) == 3 and len(reads) == 3
    assert "library scan cache ignored" in caplog.text and str(library_cache_path(root)) in caplog.text
    reads.clear()
    scan_library(root)  # rewritten whole
    assert reads == []


def test_damaged_cache_entries_are_read_again(tmp_path, monkeypatch):
    root = tmp_path / "music"
    make_library(root, 3)
    scan_library(root)
    cache = library_cache_path(root)
    data = json.loads(cache.read_text())
    data["files"]["many/0000.wav"]["tags"] = "nonsense"
    data["files"]["many/0001.wav"]["tags"].pop("title")
    cache.write_text(json.dumps(data))
    reads = count_tag_reads(monkeypatch)
    assert len(scan_library(root)) == 3 and sorted(p.name for p in reads) == ["0000.wav", "0001.wav"]


def test_cache_folder_defaults_and_unwritable(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "emotune"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "emotune"
    # A cache that cannot be written costs the next start a full read, nothing more.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "file" / "below-a-file"))
    make_library(tmp_path / "music", 2)
    with caplog.at_level(logging.WARNING, logger="emotune.music.library"):
        assert len(scan_library(tmp_path / "music")) == 2
    assert "could not write the library scan cache" in caplog.text


def test_a_big_scan_shows_progress_then_comes_from_the_cache(tmp_path, capsys, caplog):
    root = tmp_path / "music"
    make_library(root, 210)
    with caplog.at_level(logging.INFO, logger="emotune.music.library"):
        scan_library(root)
        assert "reading tags" in capsys.readouterr().err  # tqdm, on stderr
        assert "210 audio files (0 from the scan cache, 210 read, 0 unreadable)" in caplog.text
        caplog.clear()
        scan_library(root)
        assert "reading tags" not in capsys.readouterr().err
        assert "210 audio files (210 from the scan cache, 0 read, 0 unreadable)" in caplog.text


# ------------------------------------------------------------------------------------- unplaced files


def test_validate_counts_unplaced_files_and_says_how_to_place_them(library, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="emotune.music.library"):
        assert main(["music", "validate", "--music-dir", str(library), "music=playlists"]) == 0
    out = capsys.readouterr().out
    assert "'unplaced': 1" in out and "unplaced: 1 file has no mood" in out
    assert f"unplaced: {library.resolve() / 'noise.wav'}" in out
    assert "`noise.wav,sad`" in out and "folder named after an emotion" in out and "genre tag" in out
    assert "1 of 5 files have no mood" in caplog.text and SIDECAR_NAME in caplog.text  # the log says it too

    assert main(["music", "validate", "--json", "--music-dir", str(library)]) == 0  # the default catalogue
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "catalog" and summary["library"]["unplaced"] == len(summary["unplaced"]) == 3
    # Hurt and Weightless are built-in playlist songs but no catalogue rows: nothing places them here
    unplaced = {Path(p).name for p in summary["unplaced"]}
    assert unplaced == {"noise.wav", "cash.wav", "Marconi Union - Weightless.mp3"}
    assert any(SIDECAR_NAME in way for way in summary["how_to_place"])


def test_validate_lists_at_most_twenty_unplaced(tmp_path, capsys):
    make_library(tmp_path / "music", 23)
    assert main(["music", "validate", "--music-dir", str(tmp_path / "music")]) == 0
    out = capsys.readouterr().out
    assert "unplaced: 23 files have no mood" in out and out.count("  unplaced: ") == 20
    assert "... and 3 more (--json lists them all)" in out


# ------------------------------------------------------------------------------- the sidecar, from the page


def names_for(rec: Recommender, mood: str) -> set[str]:
    return {t.name for t in rec.recommend(mood, k=30) if t.source == "library"}


def test_saying_how_a_song_feels_rewrites_its_sidecar_line_and_the_next_list_uses_it(tmp_path):
    make_wav(tmp_path / "a.wav", title="A", artist="Artist A")
    make_wav(tmp_path / "sub" / "b.wav", title="B", artist="Artist B")
    make_wav(tmp_path / "c.wav", title="C", artist="Artist C")  # no mood yet: never recommended
    (tmp_path / SIDECAR_NAME).write_text("path,valence,energy\na.wav,0.9,0.8\nsub/b.wav,0.9,0.8\n")
    before = Recommender.from_files(library_dir=tmp_path)
    assert names_for(before, "happy") == {"A", "B"} and names_for(before, "sad") == set()

    set_sidecar_mood(tmp_path, tmp_path / "sub" / "b.wav", "sad")
    set_sidecar_mood(tmp_path, tmp_path / "c.wav", "sad")
    set_sidecar_mood(tmp_path, tmp_path / "c.wav", "fear")  # a second word replaces the first
    lines = (tmp_path / SIDECAR_NAME).read_text().splitlines()
    assert lines == ["path,valence,energy,emotion", "a.wav,0.9,0.8,", "sub/b.wav,,,sad", "c.wav,,,fear"]
    after = Recommender.from_files(library_dir=tmp_path)
    assert names_for(after, "happy") == {"A"} and names_for(after, "sad") == {"B"}
    assert names_for(after, "fear") == {"C"} and after.library["unplaced"] == []


def test_the_sidecar_takes_only_known_emotions_and_audio_files_of_the_folder(tmp_path):
    music = tmp_path / "music"
    make_wav(music / "a.wav", title="A", artist="Artist A")
    make_wav(tmp_path / "outside.wav", title="O", artist="Artist O")
    (music / "notes.txt").write_text("not audio")
    (music / SIDECAR_NAME).write_text("path,emotion\na.wav,happy\n")
    old = (music / SIDECAR_NAME).read_bytes()
    for emotion in ("elated", "calm", "", "SAD"):  # "calm" is a folder alias, not one of the seven
        with pytest.raises(CatalogError, match="is not one of angry, disgust"):
            set_sidecar_mood(music, music / "a.wav", emotion)
    for path in (
        tmp_path / "outside.wav",
        music / ".." / "outside.wav",
        music / "notes.txt",
        music / SIDECAR_NAME,
        music / "missing.wav",
        music,
    ):
        with pytest.raises(CatalogError, match="not an audio file of the music folder"):
            set_sidecar_mood(music, path, "sad")
    (music / "evil.wav").symlink_to(tmp_path / "outside.wav")  # a link out of the folder is outside too
    with pytest.raises(CatalogError, match="not an audio file of the music folder"):
        set_sidecar_mood(music, music / "evil.wav", "sad")
    assert (music / SIDECAR_NAME).read_bytes() == old


def test_a_failed_sidecar_write_leaves_the_old_file(tmp_path):
    (tmp_path / SIDECAR_NAME).write_text("path,emotion\nkeep.wav,happy\n")
    make_wav(tmp_path / "keep.wav", title="K", artist="Artist K")
    old = (tmp_path / SIDECAR_NAME).read_bytes()
    # Linux names may be any bytes: this one cannot be written as UTF-8, so the write fails on its line,
    # after the header and the old lines went to the new file.
    odd = make_wav(tmp_path / os.fsdecode(b"\xff-odd.wav"), title="O", artist="Artist O")
    with pytest.raises(CatalogError, match="not UTF-8 text"):
        set_sidecar_mood(tmp_path, odd, "sad")
    assert (tmp_path / SIDECAR_NAME).read_bytes() == old
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".wav"] == [SIDECAR_NAME]  # no temp file
    # A broken sidecar is reported, not overwritten.
    (tmp_path / SIDECAR_NAME).write_text("file,mood\nkeep.wav,happy\n")
    with pytest.raises(CatalogError, match="needs a 'path' column"):
        set_sidecar_mood(tmp_path, tmp_path / "keep.wav", "sad")
    assert (tmp_path / SIDECAR_NAME).read_text() == "file,mood\nkeep.wav,happy\n"


def test_listeners_saving_at_once_lose_no_line(tmp_path):
    files = [make_wav(tmp_path / f"{i}.wav", seconds=0.05, title=f"S{i}", artist=f"A{i}") for i in range(12)]
    threads = [threading.Thread(target=set_sidecar_mood, args=(tmp_path, f, "sad")) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / SIDECAR_NAME).read_text().splitlines()
    assert lines[0] == "path,emotion" and sorted(lines[1:]) == sorted(f"{i}.wav,sad" for i in range(12))
