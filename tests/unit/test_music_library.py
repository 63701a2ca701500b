"""A generated local library (WAV and MP3 with ID3 tags): tags, placement, local playback."""

from __future__ import annotations

import wave
from pathlib import Path

import pandas as pd
import pytest
from mutagen.easyid3 import EasyID3
from mutagen.id3 import TCON, TIT2, TPE1
from mutagen.wave import WAVE

from emotune.music import CatalogError, Recommender
from emotune.music.catalog import track_table
from emotune.music.library import SIDECAR_NAME, read_tags, scan_library

# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz frame header; zero side info decodes as silence.
MP3_FRAME = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(417 - 4)


def make_wav(path: Path, seconds: float = 0.5, **tags: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * int(8000 * seconds))
    if tags:
        audio = WAVE(path)
        audio.add_tags()
        for frame, key in ((TIT2, "title"), (TPE1, "artist"), (TCON, "genre")):
            if key in tags:
                audio.tags.add(frame(encoding=3, text=tags[key]))
        audio.save()
    return path


def make_mp3(path: Path, frames: int = 40, **tags: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MP3_FRAME * frames)
    if tags:
        audio = EasyID3()
        for key, value in tags.items():
            audio[key] = value
        audio.save(path)
    return path


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
