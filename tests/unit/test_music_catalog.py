"""Catalogue loading and validation: errors name file, column and line; the real 686-track catalogue."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from emotune.labels import EMOTIONS
from emotune.music import CatalogError, Recommender, load_feature_catalog, load_playlists
from emotune.music.catalog import DEFAULT_PLAYLISTS_DIR, load_playlist_file, parse_spotify_track

HEADER = "id,name,artist,popularity,valence,energy\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_mapped_columns_and_normalises(tmp_path):
    path = tmp_path / "tracks.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("track_id,title,who,pop,v,e,tempo\n")
        handle.write("4uLU6hMCjMI75M1A2tKUQC,Song A,Ann,80,0.9,0.8,120\n")
        handle.write("local-2,Song B,Bob;Carl,20,0.1,0.2,90\n")
        handle.write(",Song A (Remastered 2011),ann,10,0.5,0.5,100\n")  # the same song again, less popular
    columns = {"id": "track_id", "name": "title", "artist": "who", "popularity": "pop"}
    columns |= {"valence": "v", "energy": "e"}
    frame = load_feature_catalog(path, columns)
    assert list(frame["name"]) == ["Song A", "Song B"]
    assert list(frame["popularity"]) == [0.8, 0.2]  # Spotify's 0..100 -> 0..1
    assert list(frame["spotify_id"]) == ["4uLU6hMCjMI75M1A2tKUQC", ""]  # only 22-char base62 ids count
    assert list(frame["tempo"]) == [120.0, 90.0]


def test_missing_required_column_names_it_and_the_fix(tmp_path):
    path = write(tmp_path / "c.csv", "name,artist,energy\nA,B,0.5\n")
    with pytest.raises(CatalogError, match=r"c\.csv: required column 'valence'.*catalog_columns\.valence"):
        load_feature_catalog(path)
    with pytest.raises(CatalogError, match=r"catalog_columns\.genre='style' is not a column"):
        load_feature_catalog(write(tmp_path / "d.csv", HEADER + "1,A,B,5,0.5,0.5\n"), {"genre": "style"})
    with pytest.raises(CatalogError, match="unknown keys"):
        load_feature_catalog(path, {"valnce": "valence"})


def test_non_numeric_value_names_the_line(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "1,A,B,5,0.5,0.5\n2,C,D,5,high,0.5\n3,E,F,5,0.2,0.5\n")
    with pytest.raises(CatalogError, match=r"'valence'.*not numbers on line 3 \(e\.g\. 'high'\)"):
        load_feature_catalog(path)


def test_out_of_range_values_name_the_lines(tmp_path):
    path = write(tmp_path / "c.csv", HEADER + "1,A,B,5,0.5,1.5\n2,C,D,5,0.5,0.5\n3,E,F,5,0.5,-0.1\n")
    with pytest.raises(CatalogError, match=r"'energy'.*\[0, 1\]; lines 2, 4"):
        load_feature_catalog(path)
    path = write(tmp_path / "p.csv", HEADER + "1,A,B,150,0.5,0.5\n")
    with pytest.raises(CatalogError, match=r"'popularity'.*\[0, 100\]"):
        load_feature_catalog(path)
    path = write(tmp_path / "blank.csv", HEADER + "1,A,B,5,,0.5\n")
    with pytest.raises(CatalogError, match=r"'valence'.*empty on line 2"):
        load_feature_catalog(path)


def test_empty_or_missing_files(tmp_path):
    with pytest.raises(CatalogError, match="the file is empty"):
        load_feature_catalog(write(tmp_path / "empty.csv", ""))
    with pytest.raises(CatalogError, match="no rows under the header"):
        load_feature_catalog(write(tmp_path / "header.csv", HEADER))
    with pytest.raises(CatalogError, match=r"not found.*catalog_path"):
        load_feature_catalog(tmp_path / "nope.csv")


def test_playlist_folder_errors(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    write(folder / "happy.csv", "Name,Album,Artist\nSong,Album,Band\n")
    write(folder / "joyful.csv", "Name,Album,Artist\nSong 2,Album,Band 2\n")
    with pytest.raises(CatalogError, match=r"joyful\.csv: 'joyful' is not an emotion.*angry, disgust"):
        load_playlists(folder)
    (folder / "joyful.csv").unlink()
    # the seed project's adjectives work as file names too
    write(folder / "surprised.csv", "Name,Album,Artist\nSong 3,Album,Band 3\n")
    assert set(load_playlists(folder)["emotion"]) == {"happy", "surprise"}
    write(folder / "surprise.csv", "Name,Album,Artist\nSong 4,Album,Band 4\n")
    with pytest.raises(CatalogError, match="a second playlist for 'surprise'"):
        load_playlists(folder)
    with pytest.raises(CatalogError, match="no playlist files"):
        load_playlists(tmp_path)


def test_playlist_file_errors(tmp_path):
    cases = {
        "Title,Album,Artist\nA,B,C\n": "required column 'Name' is missing",
        "Name,Album,Artist\nA,B,C\n,B,D\n": "Name or Artist is empty on line 3",
        "Name,Album,Artist,spotify_id\nA,B,C,bad-id\n": "'spotify_id', line 2: 'bad-id' is not a Spotify",
        "Name,Album,Artist,path\nA,B,C,missing.mp3\n": "line 2: audio file 'missing.mp3' not found",
        "Name,Album,Artist\nA,B,C\nA,X,C\n": r"listed twice \(line 3\)",
        "": "the file is empty",
    }
    for text, message in cases.items():
        with pytest.raises(CatalogError, match=message):
            load_playlist_file(write(tmp_path / "sad.csv", text), "sad")


def test_playlist_file_optional_columns(tmp_path):
    write(tmp_path / "song.wav", "not really audio; the path only has to exist")
    text = (
        ",Name,Album,Artist,spotify_url,path\n"
        "0,A,B,C,https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC?si=x,song.wav\n"
        "1,D,E,F,,\n"
    )
    frame = load_playlist_file(write(tmp_path / "sad.csv", text), "sad")
    assert list(frame["spotify_id"]) == ["4uLU6hMCjMI75M1A2tKUQC", ""]
    assert frame["path"][0] == str((tmp_path / "song.wav").resolve()) and frame["path"][1] == ""
    assert frame["id"][0] == "4uLU6hMCjMI75M1A2tKUQC" and frame["id"][1].startswith("t:")
    assert parse_spotify_track("spotify:track:4uLU6hMCjMI75M1A2tKUQC") == "4uLU6hMCjMI75M1A2tKUQC"


def test_recommender_from_config_paths(tmp_path):
    rows = "".join(f"{i},S{i},A{i},50,{i / 20},{i / 20}\n" for i in range(21))
    catalog = write(tmp_path / "c.csv", HEADER + rows)
    music = {"catalog_path": str(catalog), "k": 3, "strategy": "uplift", "recent_exclude": 2}
    rec = Recommender.from_config({"music": music})
    assert rec.mode == "catalog" and len(rec.recommend("sad")) == 3
    session = rec.session()
    session.played("a", "b", "c")
    assert session.recent == ("b", "c")
    rec = Recommender.from_config({"playlists_dir": DEFAULT_PLAYLISTS_DIR, "targets": {"sad": [0.1, 0.1]}})
    assert rec.mode == "playlists" and rec.target("sad") == (0.1, 0.1)
    with pytest.raises(ValueError, match=r"music\.targets\.sad"):
        Recommender.from_config({"targets": {"sad": [0.1, 2.0]}})
    with pytest.raises(CatalogError, match="not found"):
        Recommender.from_config({"catalog_path": str(tmp_path / "missing.csv")})


def test_real_moods_catalogue(shared_data):
    path = shared_data / "music" / "data_moods.csv.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    frame = load_feature_catalog(path)
    assert len(frame) == 686 and frame["spotify_id"].str.len().eq(22).all()
    assert frame["valence"].between(0, 1).all() and frame["popularity"].between(0, 1).all()
    rec = Recommender(frame)
    happy, sad = rec.recommend("happy", k=10), rec.recommend("sad", k=10)
    assert np.mean([t.valence for t in happy]) > np.mean([t.valence for t in sad]) + 0.4
    assert all(t.play.kind == "spotify" and t.play.embed_url.endswith(t.id) for t in happy)
    for emotion in EMOTIONS:
        uplift = rec.recommend(emotion, strategy="uplift", k=10)
        assert len({t.artist for t in uplift}) == 10
        assert [t.valence for t in uplift] == sorted(t.valence for t in uplift)
